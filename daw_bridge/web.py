"""`moodlane serve --web`: an XY pad and status page, served by the running bridge.

Built on aiohttp: one well-kept async library for both the HTTP pages and the WebSocket,
with frame size limits and heartbeats built in, and no ASGI server to add. It runs its
own event loop on one thread beside the bridge's threads.

One control path: the page sends OSC-shaped messages (`{"address": "/moodlane/va",
"args": [v, a]}`) over the WebSocket, and each goes through `OscRouter.dispatch`, the same
handlers, value checks, clamping and smoothing as an OSC datagram. What the page shows is
`Server.status()`, the dict `/moodlane/status` sends, plus what is being played.

Bad input never crashes the server nor grows its memory:
- a frame over `max_message` bytes closes that socket (1009, message too big);
- text that is not one JSON message, or a binary frame, gets an error reply (at most one a
  second per client) and is counted;
- each client has a token bucket like OSC's rate limits: what exceeds it is dropped and
  counted;
- past `max_clients`, a new WebSocket is refused with 503 and a plain sentence;
- a status frame a slow client has not taken yet is skipped, never queued.

Cross-site requests are refused: a WebSocket whose Origin is not this page's own (same
scheme, host and port) gets 403, and so does a request whose Host header is not this
server's (DNS rebinding) when it listens on loopback. Bound to another address, it
requires a token (`?token=`), printed at start.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from moodlane.daw_bridge.osc import PREFIX, OscRouter, TokenBucket

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parent / "static"
MAX_ARGS = 8
MAX_TEXT = 500  # engine.chunk.MAX_PROMPT
BANDS = 48  # spectrogram strip: log-spaced bands from 40 Hz to Nyquist


class WebError(RuntimeError):
    """The web surface cannot start (one line for the user)."""


@dataclass(frozen=True)
class WebOptions:
    host: str = "127.0.0.1"
    port: int = 9080
    token: str | None = None  # None: none on loopback, a fresh one on any other address
    max_clients: int = 8
    max_message: int = 4096  # bytes per WebSocket frame
    rate_hz: float = 200.0  # messages a second per client (a pad sends one per animation frame)
    burst: float = 100.0
    status_hz: float = 20.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """The host part of a Host header: `127.0.0.1:9080`, `[::1]:9080`, `localhost`."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header


class Source(Protocol):
    """What the page reads of the bridge (`serve.Server` provides it)."""

    def status(self) -> dict: ...

    def web_info(self) -> dict: ...

    def shown(self) -> dict: ...

    def notes_since(self, since: dict[str, int]) -> list[list]: ...


@dataclass
class WebStats:
    connections: int = 0  # WebSockets accepted, ever
    clients: int = 0  # open now
    messages: int = 0  # messages handed to the router
    malformed: int = 0  # not one JSON message of the expected shape (binary frames too)
    oversized: int = 0  # frames over max_message (the socket is closed)
    rate_limited: int = 0  # dropped by a client's token bucket
    refused_clients: int = 0  # over max_clients
    refused_origin: int = 0  # cross-origin WebSockets, foreign Host headers
    refused_token: int = 0  # a missing or wrong token
    status_sent: int = 0
    status_skipped: int = 0  # a slow client had not taken the last one

    @property
    def dropped(self) -> int:
        return self.malformed + self.oversized + self.rate_limited

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def parse_message(text: str) -> tuple[str, list]:
    """One page message -> (OSC address, arguments). Raises ValueError naming the problem."""
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"not JSON ({type(e).__name__})") from None
    if not isinstance(d, dict) or not isinstance(d.get("address"), str):
        raise ValueError('expected {"address": "/moodlane/...", "args": [...]}')
    address, args = d["address"], d.get("args", [])
    if not address.startswith(PREFIX + "/") or len(address) > 256 or not address.isprintable():
        raise ValueError(f"address must start with {PREFIX}/ (at most 256 characters)")
    if not isinstance(args, list) or len(args) > MAX_ARGS:
        raise ValueError(f"args must be a list of at most {MAX_ARGS} numbers or strings")
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, float, str)) or (isinstance(a, str) and len(a) > MAX_TEXT):
            raise ValueError(f"args must be numbers or strings of at most {MAX_TEXT} characters")
        if isinstance(a, int) and not -(2**31) <= a < 2**31:
            raise ValueError("integer args must fit in 32 bits (as in OSC)")
    return address, args


def levels(x: np.ndarray, sample_rate: int, bands: int = BANDS) -> dict:
    """A level meter and one spectrogram column from the last samples played."""
    if x.size == 0:
        return {"rms_db": -120.0, "peak_db": -120.0, "bands": [-120.0] * bands}
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    peak = float(np.abs(x).max())
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) / max(x.size / 4, 1)
    freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
    edges = np.geomspace(40.0, sample_rate / 2, bands + 1)
    idx = np.clip(np.searchsorted(edges, freqs) - 1, -1, bands)
    power = np.bincount(idx[(idx >= 0) & (idx < bands)], weights=spec[(idx >= 0) & (idx < bands)] ** 2, minlength=bands)
    counts = np.maximum(np.bincount(idx[(idx >= 0) & (idx < bands)], minlength=bands), 1)

    def db(v: float) -> float:
        return round(max(-120.0, 20.0 * math.log10(max(v, 1e-6))), 1)

    return {
        "rms_db": db(rms),
        "peak_db": db(peak),
        "bands": [round(max(-120.0, 10.0 * math.log10(max(p, 1e-12))), 1) for p in power / counts],
    }


@dataclass(eq=False)  # hashed by identity: clients live in a set
class _Client:
    ws: object
    bucket: TokenBucket
    since: dict[str, int] = field(default_factory=dict)
    sending: asyncio.Task | None = None
    last_error: float = -math.inf


class WebSurface:
    """The page and its WebSocket on a thread of their own. `start()` binds (raises WebError
    when it cannot), `stop()` closes every client and the socket."""

    def __init__(self, router: OscRouter, source: Source, opts: WebOptions = WebOptions()) -> None:
        self.router, self.source, self.opts = router, source, opts
        self.loopback = is_loopback(opts.host)
        self.token = opts.token if opts.token is not None else (None if self.loopback else secrets.token_urlsafe(16))
        self.stats = WebStats()
        self.clients: set[_Client] = set()
        self.address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._listeners: list[Callable[[str], None]] = []

    # -- URLs -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.address or (self.opts.host, self.opts.port)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{port}/" + (f"?token={self.token}" if self.token else "")

    # -- checks ---------------------------------------------------------------------------
    def _host_ok(self, request) -> bool:
        """On loopback, the Host header must name loopback (a DNS-rebinding page names its own)."""
        return not self.loopback or is_loopback(_hostname(request.host))

    def _origin_ok(self, request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser (a script, the bench): CSRF is a browser's problem
            return True
        return origin == f"{request.scheme}://{request.host}"

    def _token_ok(self, request) -> bool:
        if self.token is None:
            return True
        given = request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    # -- handlers -------------------------------------------------------------------------
    async def _page(self, request):
        from aiohttp import web

        if not self._host_ok(request):
            self.stats.refused_origin += 1
            return web.Response(status=403, text="MoodLane: this page answers on loopback only (Host header refused)")
        if not self._token_ok(request):
            self.stats.refused_token += 1
            return web.Response(status=403, text="MoodLane: a token is required: open the URL `moodlane serve --web` printed")
        name = request.match_info.get("name", "index.html")
        path = ASSETS / name
        if name not in _ASSET_TYPES or not path.is_file():
            return web.Response(status=404, text="not found")
        headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy": _CSP}
        return web.Response(body=path.read_bytes(), content_type=_ASSET_TYPES[name], headers=headers)

    async def _socket(self, request):
        from aiohttp import WSMsgType, web

        if not (self._host_ok(request) and self._origin_ok(request)):
            self.stats.refused_origin += 1
            return web.Response(status=403, text="MoodLane: cross-origin WebSocket refused (same origin only)")
        if not self._token_ok(request):
            self.stats.refused_token += 1
            return web.Response(status=403, text="MoodLane: wrong or missing token")
        if len(self.clients) >= self.opts.max_clients:
            self.stats.refused_clients += 1
            return web.Response(status=503, text=f"MoodLane: too many clients (at most {self.opts.max_clients}); close another page")
        ws = web.WebSocketResponse(max_msg_size=self.opts.max_message, heartbeat=10.0, compress=False)
        await ws.prepare(request)
        client = _Client(ws, TokenBucket(self.opts.rate_hz, self.opts.burst))
        self.clients.add(client)
        self.stats.connections += 1
        self.stats.clients = len(self.clients)
        try:
            await ws.send_str(json.dumps({"type": "hello", **self.source.web_info(), "limits": self._limits()}))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._handle(client, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.stats.malformed += 1
                    await self._error_reply(client, "binary frames are not understood: send JSON text")
                elif msg.type == WSMsgType.ERROR:  # aiohttp closes the socket after it
                    if getattr(ws.exception(), "code", None) == 1009:  # over max_msg_size
                        self.stats.oversized += 1
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(client)
            self.stats.clients = len(self.clients)
            if client.sending is not None:
                client.sending.cancel()
        return ws

    def _limits(self) -> dict:
        o = self.opts
        return {"max_message": o.max_message, "rate_hz": o.rate_hz, "burst": o.burst, "max_clients": o.max_clients}

    async def _handle(self, client: _Client, text: str) -> None:
        if not client.bucket.take(time.monotonic()):
            self.stats.rate_limited += 1
            await self._error_reply(client, f"over {self.opts.rate_hz:g} messages a second: dropped")
            return
        try:
            address, args = parse_message(text)
        except ValueError as e:
            self.stats.malformed += 1
            await self._error_reply(client, str(e))
            return
        self.stats.messages += 1
        self.router.dispatch(address, args)

    async def _error_reply(self, client: _Client, text: str) -> None:
        now = time.monotonic()
        if now - client.last_error < 1.0:  # one a second: a flood gets no flood back
            return
        client.last_error = now
        try:
            await client.ws.send_str(json.dumps({"type": "error", "error": text}))
        except ConnectionError:
            pass

    # -- status out -----------------------------------------------------------------------
    async def _broadcast(self) -> None:
        """Status frames at `status_hz`: the status and what every page shows, computed once a
        tick; per client only the notes it has not seen."""
        period = 1.0 / self.opts.status_hz
        while True:
            await asyncio.sleep(period)
            clients = [c for c in self.clients if c.sending is None or c.sending.done()]
            self.stats.status_skipped += len(self.clients) - len(clients)
            if not clients:
                continue
            try:
                shared = {"type": "status", "t": time.monotonic(), "status": self.source.status(), **self.source.shown()}
                for client in clients:
                    text = json.dumps({**shared, "notes": self.source.notes_since(client.since)})
                    client.sending = asyncio.ensure_future(self._send(client, text))
            except Exception as e:  # a status that fails once must not end the page's updates
                log.warning("web status frame failed: %s: %s", type(e).__name__, e)

    async def _send(self, client: _Client, text: str) -> None:
        try:
            await client.ws.send_str(text)
            self.stats.status_sent += 1
        except (ConnectionError, RuntimeError):
            pass

    # -- lifecycle ------------------------------------------------------------------------
    def _run(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=self.opts.max_message)
        app.router.add_get("/", self._page)
        app.router.add_get("/ws", self._socket)
        app.router.add_get("/{name}", self._page)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.opts.host, self.opts.port, reuse_address=True)
            loop.run_until_complete(site.start())
            sock = site._server.sockets[0]  # the port the OS gave (port 0 in tests)
            self.address = sock.getsockname()[:2]
        except BaseException as e:
            self._error = e
            self._ready.set()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        self._runner = runner
        broadcaster = loop.create_task(self._broadcast())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            broadcaster.cancel()
            for client in list(self.clients):
                loop.run_until_complete(client.ws.close())
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def start(self) -> WebSurface:
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            e = self._error
            why = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            raise WebError(f"cannot serve the web page on {self.opts.host}:{self.opts.port} ({why})")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)

    def startup_lines(self) -> list[str]:
        lines = [f"web control surface on {self.url} (XY pad, presets, lane recorder, status)"]
        if not self.loopback:
            port = self.address[1] if self.address else self.opts.port
            lines.append(f"from another device: http://<this machine's address>:{port}/?token={self.token}")
            lines.append(
                f"warning: the web page listens on {self.opts.host}, beyond this machine: anyone who can reach it and has the "
                "token can steer the music; keep the token to yourself"
            )
        return lines


_ASSET_TYPES = {"index.html": "text/html", "app.js": "application/javascript", "style.css": "text/css"}
_CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


class WebClient:
    """A WebSocket client on a thread of its own, as the page would talk: `send` from any
    thread (`bench live` times pad-to-note with it). Status frames are read and dropped."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="web-client", daemon=True)
        self._thread.start()
        self._ws = asyncio.run_coroutine_threadsafe(self._connect(url.split("?")[0] + "ws"), self._loop).result(10)

    async def _connect(self, url: str):
        import aiohttp

        self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(url)
        self._reader = asyncio.ensure_future(self._drain(ws))
        return ws

    @staticmethod
    async def _drain(ws) -> None:
        async for _ in ws:
            pass

    def send(self, address: str, args: list | tuple = ()) -> None:
        """Returns once the frame is written to the socket."""
        asyncio.run_coroutine_threadsafe(self._ws.send_json({"address": address, "args": list(args)}), self._loop).result(5)

    async def _close(self) -> None:
        await self._ws.close()
        await self._session.close()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
