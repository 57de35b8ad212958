"""OSC in and out (python-osc), under `/moodlane/`.

Values arrive as DAWs send them: Reaper's `n/` patterns and plugin parameters are
normalised 0..1 (`/moodlane/n/valence`), scripts and Max for Live devices usually send
bipolar [-1, 1] (`/moodlane/valence`). Both map onto one `Emotion` range here, at the
boundary: NaN/inf and wrong types are dropped, out-of-range values are clamped, and each
kind of problem is logged once per address. Nothing a sender does stops the server.

Logging stays bounded whatever arrives: warn-once keys are capped (`OscStats.max_warned`),
unknown addresses share one warning per `warn_interval_s`, and python-osc's own parse
warnings (made on the root logger, one per bad datagram) pass at most once per kind per
interval. What is held back is counted in `OscStats.suppressed_warnings`.

Feedback (`/moodlane/status/...`) goes to the last sender's port + 1 (AbletonOSC's
convention) or to a configured target, on one UDP socket, at most `rate_hz` times a
second (a `/moodlane/status` request included, after a small burst).
"""

from __future__ import annotations

import logging
import math
import re
import socket
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from pythonosc.dispatcher import Dispatcher, Handler
from pythonosc.osc_message_builder import BuildError, OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

from moodlane.daw_bridge.control import LiveControl
from moodlane.engine.emotion import Emotion

log = logging.getLogger(__name__)
PREFIX = "/moodlane"
MODES = ("midi", "audio", "both")
WARN_INTERVAL_S = 30.0  # a rate-limited kind of warning is printed at most once per this
MAX_WARNED = 256  # distinct warn-once keys remembered; past this, new ones are rate-limited


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody listens on now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _clip(x: object, n: int = 120) -> str:
    """Text a sender chose, made safe for one log line: printable and cut short."""
    s = x if isinstance(x, str) and x.isprintable() else repr(x)
    return s if len(s) <= n else f"{s[:n]}... ({len(s)} chars)"


def _key(key: tuple) -> tuple:
    return tuple(k[:80] if isinstance(k, str) else k for k in key)


COUNTERS = (
    "received",  # messages handled (known or unknown address)
    "dropped",  # messages or datagrams refused (bad value, not OSC, oversized, handler error)
    "clamped",  # values clamped into range
    "unknown",  # messages to addresses nothing is mapped to
    "datagrams",  # datagrams read off the socket
    "malformed",  # datagrams that looked like OSC but held no message python-osc could parse
    "oversized",  # datagrams over the server's max_datagram (also counted in dropped)
    "lib_warnings",  # python-osc's own warnings while parsing this server's datagrams
    "suppressed_warnings",  # warnings not printed: repeats, rate limit, full warn-once set
    "feedback_sent",  # status messages sent (one per Feedback.send that succeeded)
    "feedback_limited",  # feedback refused by the hard rate limit (a flood of /status requests)
    "feedback_errors",  # feedback that failed to build, resolve or send
    "port_overflow",  # feedback skipped: the sender's port + 1 is past 65535
)


class TokenBucket:
    """At most `burst` at once, refilled at `rate` a second (not thread-safe: callers lock)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self._tokens, self._t = self.burst, time.monotonic()

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class PerKeyInterval:
    """One pass per key per `interval_s`, counting what is held back in between (callers
    lock; keys are a fixed few: source lines, fixed tuples)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple, float] = {}
        self._held: dict[tuple, int] = {}

    def check(self, key: tuple, now: float) -> tuple[bool, int, float]:
        """(passes, how many were held back since the last pass, seconds since it)."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0, now - last
        self._last[key] = now
        return True, self._held.pop(key, 0), (now - last if last is not None else 0.0)


@dataclass
class OscStats:
    received: int = 0
    dropped: int = 0
    clamped: int = 0
    unknown: int = 0
    datagrams: int = 0
    malformed: int = 0
    oversized: int = 0
    lib_warnings: int = 0
    suppressed_warnings: int = 0
    feedback_sent: int = 0
    feedback_limited: int = 0
    feedback_errors: int = 0
    port_overflow: int = 0
    warned: set = field(default_factory=set)  # at most max_warned keys
    max_warned: int = MAX_WARNED
    warn_interval_s: float = WARN_INTERVAL_S
    warn_burst: int = 10  # new warn-once warnings printed at once; then warn_burst per warn_interval_s

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._every = PerKeyInterval(self.warn_interval_s)  # keys from this module only: a fixed few
        self._new = TokenBucket(self.warn_burst / self.warn_interval_s, self.warn_burst)
        self._held_new = 0

    def counters(self) -> dict[str, int]:
        """The counters by name (see COUNTERS), for a status line."""
        return {name: getattr(self, name) for name in COUNTERS}

    def warn_once(self, key: tuple, msg: str, *args) -> None:
        """Warn once per key. Keys come partly from senders (addresses, preset names), so new
        keys are printed at most `warn_burst` at once and `warn_burst` per `warn_interval_s`
        after that (one held back is not remembered: it may print later), and past
        `max_warned` remembered keys new ones share one rate-limited warning."""
        key = _key(key)
        now = time.monotonic()
        with self._lock:
            if key in self.warned:
                self.suppressed_warnings += 1
                return
            full = len(self.warned) >= self.max_warned
            if not full:
                if not self._new.take(now):
                    self.suppressed_warnings += 1
                    self._held_new += 1
                    return
                self.warned.add(key)
                held, self._held_new = self._held_new, 0
        if full:
            self.warn_every(("warned", "full"), msg + " [over %d distinct OSC problems: rate-limited]", *args, self.max_warned)
            return
        if held:
            msg += " (and %d other OSC problems not shown)"
            args = (*args, held)
        log.warning(msg, *args)

    def warn_every(self, key: tuple, msg: str, *args) -> bool:
        """Warn at most once per `warn_interval_s` for this key (a fixed key, not a sender's
        text); the next warning that passes says how many were held back."""
        with self._lock:
            passed, held, since = self._every.check(key, time.monotonic())
            if not passed:
                self.suppressed_warnings += 1
                return False
        if held:
            msg += " (%d more like this in the last %.0f s not shown)"
            args = (*args, held, since)
        log.warning(msg, *args)
        return True


_tls = threading.local()  # .stats: the OscStats of the server whose datagram this thread is parsing
_install_lock = threading.Lock()


class _PythonOscLogLimiter(logging.Filter):
    """python-osc warns through the root logger (`logging.warning(...)` in osc_message.py
    and osc_bundle.py, "Unhandled parameter type", "Could not identify content type"), one
    line per bad datagram. On the root logger this filter lets one record per kind (its
    source line) through per `interval_s`, with a count of those held back, and cuts the
    text short. A logger's filter sees only records made on that logger itself, so records
    of other loggers that propagate to the root are untouched."""

    moodlane_pythonosc_limiter = True

    def __init__(self, interval_s: float = WARN_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.seen = 0
        self.suppressed = 0
        self._every = PerKeyInterval(interval_s)  # keys: (module, line) in python-osc, bounded
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if "/pythonosc/" not in record.pathname.replace("\\", "/"):
            return True
        with self._lock:
            self.seen += 1
            passed, held, _ = self._every.check((record.module, record.lineno), time.monotonic())
            self.suppressed += not passed
        stats = getattr(_tls, "stats", None)
        if stats is not None and record.levelno >= logging.WARNING:
            stats.lib_warnings += 1
            if not passed:
                stats.suppressed_warnings += 1
        if not passed:
            return False
        text = _clip(record.getMessage(), 160)
        record.msg, record.args = "OSC (python-osc): %s%s", (text, f" ({held} more like this not shown)" if held else "")
        return True


def _limit_pythonosc_logging() -> None:
    """Install the python-osc limiter on the root logger, once per process. Also silence
    the FutureWarnings ("Possible nested set at position 12") that `re` gives for address
    patterns such as `/a[[b]`, which python-osc compiles as they come: one line per new
    position, hundreds in a flood. The filter names that message and python-osc's
    dispatcher only; adding it again moves it to the front (no duplicates)."""
    root = logging.getLogger()
    with _install_lock:
        if not any(getattr(f, "moodlane_pythonosc_limiter", False) for f in root.filters):
            root.addFilter(_PythonOscLogLimiter())
        warnings.filterwarnings("ignore", r"Possible (nested set|set )", FutureWarning, r"pythonosc\.dispatcher")


MAX_ADDRESS = 256  # longer address patterns go to the unknown-address handler
MAX_STARS = 4  # more `*` runs than this: likewise (python-osc's regex backtracks on them)
MAX_BUNDLE_DEPTH = 8  # bundles nested deeper are dropped (python-osc parses them recursively)
_BUNDLE = b"#bundle\x00"


def _bundle_ok(data: bytes, depth: int = 0) -> bool:
    """Whether python-osc can parse this bundle in bounded time. Its parser adds each
    element's size to its position, so a negative size steps back and re-reads the same
    bytes forever (a 20-byte datagram hangs the server and logs a warning per turn)."""
    if depth > MAX_BUNDLE_DEPTH:
        return False
    i = len(_BUNDLE) + 8  # after the time tag
    while i + 4 <= len(data):  # a short tail is python-osc's ParseError: fine
        (size,) = struct.unpack_from(">i", data, i)
        if size < 0:
            return False
        i += 4
        if data.startswith(_BUNDLE, i) and not _bundle_ok(data[i : i + size], depth + 1):
            return False
        i += size
    return True


class _Dispatcher(Dispatcher):
    """python-osc's Dispatcher, minus ways a datagram stalls it:

    - it turns a sender's address pattern into a regex, each `*` into `[^/]*`, and matches
      that against every mapped address, so `/***...*x` (one 100-byte datagram) backtracks
      for hours. Patterns with more than MAX_STARS runs of `*`, or longer than MAX_ADDRESS,
      go to the fallback (unknown-address) handler unmatched. Runs of `*` match what one
      `*` does, so they count as one.
    - a bundle element of negative size loops its bundle parser forever: such bundles, and
      bundles nested deeper than MAX_BUNDLE_DEPTH, are not parsed (the server counts them
      in `malformed`).
    """

    fallback: Handler | None = None

    def call_handlers_for_packet(self, data: bytes, client_address: tuple[str, int]) -> list:
        if data.startswith(_BUNDLE) and not _bundle_ok(data):
            return []
        return super().call_handlers_for_packet(data, client_address)

    def handlers_for_address(self, address_pattern: str) -> Generator[Handler, None, None]:
        if "*" in address_pattern:
            address_pattern = _STARS.sub("*", address_pattern)
        if len(address_pattern) > MAX_ADDRESS or address_pattern.count("*") > MAX_STARS:
            if self.fallback is not None:
                yield self.fallback
            return
        yield from super().handlers_for_address(address_pattern)


_STARS = re.compile(r"\*{2,}")


class _Message:
    """What python-osc's `Handler.invoke` reads of a message: its address and arguments."""

    def __init__(self, address: str, params: tuple) -> None:
        self.address, self.params = address, params

    def __iter__(self):
        return iter(self.params)


def _source(sender: tuple[str, int] | None, addr: str) -> str:
    return f"osc {addr}" if sender is not None else f"web {addr}"


class OscRouter:
    """Address -> handler table (python-osc's Dispatcher), separate from the transport."""

    def __init__(
        self,
        control: LiveControl,
        on_preset: Callable[[str], bool] | None = None,
        on_status: Callable[[tuple[str, int]], None] | None = None,
        on_learn: Callable[[str], None] | None = None,
        modes: tuple[str, ...] = MODES,  # what /moodlane/mode may ask (an audio engine has no MIDI mode)
    ) -> None:
        self.control = control
        self.modes = modes
        self.stats = OscStats()
        self.on_preset = on_preset
        self.on_status = on_status
        self.on_learn = on_learn
        self.last_sender: tuple[str, int] | None = None
        _limit_pythonosc_logging()
        d = _Dispatcher(strict_timing=False)  # a far-future bundle must not stall the server
        for lane in ("valence", "arousal"):
            d.map(f"{PREFIX}/{lane}", self._lane, lane, False, needs_reply_address=True)
            d.map(f"{PREFIX}/n/{lane}", self._lane, lane, True, needs_reply_address=True)
        # REAPER's FX_PARAM_VALUE pattern (presets/daw/reaper): param 1 valence, 2 arousal, 0..1
        d.map(f"{PREFIX}/fxparam/1/value", self._lane, "valence", True, needs_reply_address=True)
        d.map(f"{PREFIX}/fxparam/2/value", self._lane, "arousal", True, needs_reply_address=True)
        d.map(f"{PREFIX}/va", self._va, False, needs_reply_address=True)
        d.map(f"{PREFIX}/n/va", self._va, True, needs_reply_address=True)
        d.map(f"{PREFIX}/tempo", self._tempo, needs_reply_address=True)
        d.map(f"{PREFIX}/play", self._play, needs_reply_address=True)
        d.map(f"{PREFIX}/stop", self._stop, needs_reply_address=True)
        d.map(f"{PREFIX}/mode", self._mode, needs_reply_address=True)
        d.map(f"{PREFIX}/preset", self._preset, needs_reply_address=True)
        d.map(f"{PREFIX}/prompt", self._prompt, needs_reply_address=True)
        d.map(f"{PREFIX}/status", self._status, needs_reply_address=True)
        d.map(f"{PREFIX}/learn", self._learn, needs_reply_address=True)
        d.set_default_handler(self._unknown, needs_reply_address=True)
        d.fallback = Handler(self._unknown, [], True)  # for address patterns too costly to match
        self.dispatcher = d

    # -- value checks at the boundary -------------------------------------------------
    def _number(self, addr: str, args: tuple, lo: float, hi: float, index: int = 0) -> float | None:
        if len(args) <= index or isinstance(args[index], (str, bytes, bool)) or not isinstance(args[index], (int, float)):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "type"), "OSC %s: expected a number argument, got %s (dropped)", _clip(addr), _clip(args))
            return None
        x = float(args[index])
        if not math.isfinite(x):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "nan"), "OSC %s: %r is not finite (dropped)", _clip(addr), x)
            return None
        if not lo <= x <= hi:
            self.stats.clamped += 1
            self.stats.warn_once((addr, "range"), "OSC %s: %r outside [%g, %g] (clamped)", _clip(addr), x, lo, hi)
            x = min(hi, max(lo, x))
        return x

    def _seen(self, sender: tuple[str, int] | None) -> None:
        self.stats.received += 1
        if sender is not None:  # None: another transport (the web page); feedback keeps its destination
            self.last_sender = sender

    def dispatch(self, address: str, args: list | tuple) -> None:
        """A message from another transport (the web page's WebSocket): the same handlers,
        value checks, clamping and counters as an OSC datagram to this address. It has no
        sender address, so it never moves where feedback goes."""
        message = _Message(address, tuple(args))
        handlers = list(self.dispatcher.handlers_for_address(address)) or [self.dispatcher.fallback]
        for h in handlers:
            h.invoke(None, message)

    # -- handlers ---------------------------------------------------------------------
    def _lane(self, sender, addr, params, *args) -> None:
        self._seen(sender)
        lane, unit = params
        x = self._number(addr, args, 0.0 if unit else -1.0, 1.0)
        if x is None:
            return
        v = 2.0 * x - 1.0 if unit else x
        (self.control.set_valence if lane == "valence" else self.control.set_arousal)(v, source=_source(sender, addr))

    def _va(self, sender, addr, params, *args) -> None:
        self._seen(sender)
        (unit,) = params
        lo = 0.0 if unit else -1.0
        v, a = self._number(addr, args, lo, 1.0, 0), self._number(addr, args, lo, 1.0, 1)
        if v is None or a is None:
            return
        e = Emotion.from_unit(v, a) if unit else Emotion(v, a)
        self.control.set_emotion(e, source=_source(sender, addr))

    def _tempo(self, sender, addr, *args) -> None:
        self._seen(sender)
        bpm = self._number(addr, args, 20.0, 400.0)
        if bpm is not None:
            self.control.set_tempo(bpm, source=_source(sender, addr))

    def _play(self, sender, addr, *args) -> None:
        self._seen(sender)
        on = True
        if args:
            x = self._number(addr, args, 0.0, 1.0)
            if x is None:
                return
            on = x >= 0.5
        self.control.set_playing(on, source=_source(sender, addr))

    def _stop(self, sender, addr, *args) -> None:
        self._seen(sender)
        if args and self._number(addr, args, 0.0, 1.0) == 0.0:
            return  # a button's release (0) is not a second stop
        self.control.set_playing(False, source=_source(sender, addr))

    def _text(self, addr: str, args: tuple) -> str | None:
        if len(args) != 1 or not isinstance(args[0], str):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "type"), "OSC %s: expected one string argument, got %s (dropped)", _clip(addr), _clip(args))
            return None
        return args[0]

    def _mode(self, sender, addr, *args) -> None:
        self._seen(sender)
        m = self._text(addr, args)
        if m is None:
            return
        if m not in self.modes:
            self.stats.dropped += 1
            self.stats.warn_once((addr, "value"), "OSC %s: mode must be one of %s, got %s (dropped)", _clip(addr), self.modes, _clip(m))
            return
        self.control.set_mode(m, source=_source(sender, addr))

    def _preset(self, sender, addr, *args) -> None:
        self._seen(sender)
        name = self._text(addr, args)
        if name is not None and self.on_preset is not None and not self.on_preset(name):
            self.stats.dropped += 1
            self.stats.warn_once((addr, name), "OSC %s: unknown preset %s (dropped)", _clip(addr), _clip(name))

    def _prompt(self, sender, addr, *args) -> None:
        self._seen(sender)
        text = self._text(addr, args)
        if text is not None:
            self.control.set_prompt(text, source=_source(sender, addr))

    def _status(self, sender, addr, *args) -> None:
        self._seen(sender)
        if self.on_status is not None:
            self.on_status(sender)

    def _learn(self, sender, addr, *args) -> None:
        self._seen(sender)
        lane = self._text(addr, args)
        if lane is None:
            return  # dropped and counted by _text
        if lane not in ("valence", "arousal"):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "value"), "OSC %s: learn expects 'valence' or 'arousal', got %s", _clip(addr), _clip(lane))
            return
        if self.on_learn is not None:
            self.on_learn(lane)

    def _unknown(self, sender, addr, *args) -> None:
        self.stats.received += 1
        self.stats.unknown += 1
        # one key for all unknown addresses: senders choose them, a flood must not print a flood
        self.stats.warn_every(("unknown",), "OSC: unknown address %s (ignored; %d so far)", _clip(addr), self.stats.unknown)


class _Server(BlockingOSCUDPServer):
    router: OscRouter
    max_datagram: int = 8192

    def handle_error(self, request, client_address) -> None:  # never fatal, never a traceback flood
        stats = self.router.stats
        stats.dropped += 1
        err = _clip(sys.exc_info()[1])
        stats.warn_every(("packet", "error"), "OSC: a packet from %s could not be handled: %s (dropped)", client_address, err)

    def verify_request(self, request, client_address) -> bool:  # socketserver does not guard this call: never raise
        try:
            stats = self.router.stats
            stats.datagrams += 1
            if len(request[0]) > self.max_datagram:  # read with max_datagram + 1 bytes: longer ones show here
                stats.oversized += 1
                stats.dropped += 1
                n = self.max_datagram
                stats.warn_every(("packet", "oversized"), "OSC: a datagram from %s is over %d bytes (dropped)", client_address, n)
                return False
            ok = super().verify_request(request, client_address)
            if not ok:
                stats.dropped += 1
            return ok
        except Exception:
            return False

    def finish_request(self, request, client_address) -> None:
        stats = self.router.stats
        before = stats.received
        _tls.stats = stats  # python-osc's warnings while parsing are counted against this server
        try:
            super().finish_request(request, client_address)
        finally:
            _tls.stats = None
        if stats.received == before:  # python-osc swallowed a parse error, or an empty bundle
            stats.malformed += 1


class OscServer:
    """UDP server on one thread. Binds 127.0.0.1 unless told otherwise. Datagrams over
    `max_datagram` bytes are dropped (counted in `stats.oversized`), not parsed truncated."""

    def __init__(self, router: OscRouter, host: str = "127.0.0.1", port: int = 9000, max_datagram: int = 8192) -> None:
        _limit_pythonosc_logging()
        self.router = router
        self.server = _Server((host, port), router.dispatcher)
        self.server.router = router
        self.server.max_datagram = max_datagram
        self.server.max_packet_size = max_datagram + 1
        self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.address = self.server.server_address
        self._thread: threading.Thread | None = None

    def start(self) -> OscServer:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="osc-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever: only when it runs
            self.server.shutdown()
            self._thread.join(timeout=2)
            self._thread = None
        self.server.server_close()


def _message(address: str, value) -> bytes:
    """One OSC message; a list or tuple value is its arguments (as SimpleUDPClient does)."""
    b = OscMessageBuilder(address)
    for v in [] if value is None else value if isinstance(value, (list, tuple)) else [value]:
        b.add_arg(v)
    return b.build().dgram


class Feedback:
    """Status messages to a fixed target, or to the last sender's port + 1, on one UDP socket
    (one per address family, made at the first send; `close()` closes it).

    Rate-limited for everything: a regular send waits `1 / rate_hz` after the last one, and
    every send, `force=True` (a `/moodlane/status` request) included, takes a token from a
    bucket of `burst` refilled at `rate_hz` a second. In any t seconds at most
    `burst + rate_hz * t` sends go out, whatever asks. `send` never raises for a bad
    destination or a failed send: a sender on port 65535 has no port + 1 (counted in
    `stats.port_overflow`), send and build errors are counted in `stats.feedback_errors`.
    Thread-safe: the OSC thread (status requests) and the main loop both call `send`.
    """

    def __init__(self, router: OscRouter, target: tuple[str, int] | None = None, rate_hz: float = 10.0, burst: float = 2.0) -> None:
        if not rate_hz > 0:
            raise ValueError(f"feedback rate must be above 0 Hz, got {rate_hz}")
        self.router = router
        self.target = target
        self.rate_hz = float(rate_hz)
        self.min_interval = 1.0 / rate_hz
        self.burst = max(1.0, float(burst))
        self._bucket = TokenBucket(self.rate_hz, self.burst)
        self._last = -math.inf
        self._lock = threading.Lock()
        self._socks: dict[int, socket.socket] = {}  # address family -> the one socket
        self._resolved: tuple[tuple, int, tuple] | None = None  # (target, family, sockaddr)
        self._closed = False
        self.sent = 0

    def destination(self) -> tuple[str, int] | None:
        if self.target is not None:
            return self.target
        sender = self.router.last_sender
        if sender is not None and sender[1] + 1 <= 65535:  # a sender on 65535 has no port + 1
            return sender[0], sender[1] + 1
        return None

    def _address(self, dest: tuple[str, int]) -> tuple[int, tuple]:
        host, port = dest
        if not 0 < port <= 65535:
            raise ValueError(f"port {port} out of range")
        if dest != self.target:  # a sender's address: numeric already
            return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)
        if self._resolved is None or self._resolved[0] != dest:  # a target may be a name: resolve it once
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self._resolved = (dest, family, sockaddr)
        return self._resolved[1], self._resolved[2]

    def _socket(self, family: int) -> socket.socket:
        sock = self._socks.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)  # a full send buffer drops a status, never stalls the OSC thread
            self._socks[family] = sock
        return sock

    def send(self, status: dict, force: bool = False) -> bool:
        stats = self.router.stats
        with self._lock:
            now = time.monotonic()
            if self._closed or (not force and now - self._last < self.min_interval):
                return False
            dest = self.destination()
            if dest is None:
                sender = self.router.last_sender
                if self.target is None and sender is not None:
                    stats.port_overflow += 1
                    stats.warn_every(("feedback", "port"), "OSC feedback: sender %s has no port + 1 (not sent)", _clip(sender))
                return False
            if not self._bucket.take(now):
                stats.feedback_limited += 1
                return False
            self._last = now
            try:
                family, addr = self._address(dest)
                sock = self._socket(family)
                for key, value in status.items():
                    sock.sendto(_message(f"{PREFIX}/status/{key}", value), addr)
            except (OSError, OverflowError, ValueError, TypeError, struct.error, BuildError) as e:
                stats.feedback_errors += 1
                stats.warn_every(("feedback", "error"), "OSC feedback to %s failed: %s", _clip(dest), _clip(e))
                return False
            self.sent += 1
            stats.feedback_sent += 1
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for sock in self._socks.values():
                sock.close()
            self._socks.clear()

    def __enter__(self) -> Feedback:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
