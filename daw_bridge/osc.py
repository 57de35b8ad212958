"""OSC in and out (python-osc), under `/moodlane/`.

Values arrive as DAWs send them: Reaper's `n/` patterns and plugin parameters are
normalised 0..1 (`/moodlane/n/valence`), scripts and Max for Live devices usually send
bipolar [-1, 1] (`/moodlane/valence`). Both map onto one `Emotion` range here, at the
boundary: NaN/inf and wrong types are dropped, out-of-range values are clamped, and each
kind of problem is logged once per address. Nothing a sender does stops the server.

Feedback (`/moodlane/status/...`) goes to the last sender's port + 1 (AbletonOSC's
convention) or to a configured target, at most `rate_hz` times a second.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from daw_bridge.control import LiveControl
from engine.emotion import Emotion

log = logging.getLogger(__name__)
PREFIX = "/moodlane"
MODES = ("midi", "audio", "both")


@dataclass
class OscStats:
    received: int = 0
    dropped: int = 0
    clamped: int = 0
    unknown: int = 0
    warned: set = field(default_factory=set)

    def warn_once(self, key: tuple, msg: str, *args) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning(msg, *args)


class OscRouter:
    """Address -> handler table (python-osc's Dispatcher), separate from the transport."""

    def __init__(
        self,
        control: LiveControl,
        on_preset: Callable[[str], bool] | None = None,
        on_status: Callable[[tuple[str, int]], None] | None = None,
        on_learn: Callable[[str], None] | None = None,
    ) -> None:
        self.control = control
        self.stats = OscStats()
        self.on_preset = on_preset
        self.on_status = on_status
        self.on_learn = on_learn
        self.last_sender: tuple[str, int] | None = None
        d = Dispatcher(strict_timing=False)  # a far-future bundle must not stall the server
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
        self.dispatcher = d

    # -- value checks at the boundary -------------------------------------------------
    def _number(self, addr: str, args: tuple, lo: float, hi: float, index: int = 0) -> float | None:
        if len(args) <= index or isinstance(args[index], (str, bytes, bool)) or not isinstance(args[index], (int, float)):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "type"), "OSC %s: expected a number argument, got %r (dropped)", addr, args)
            return None
        x = float(args[index])
        if not math.isfinite(x):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "nan"), "OSC %s: %r is not finite (dropped)", addr, x)
            return None
        if not lo <= x <= hi:
            self.stats.clamped += 1
            self.stats.warn_once((addr, "range"), "OSC %s: %r outside [%g, %g] (clamped)", addr, x, lo, hi)
            x = min(hi, max(lo, x))
        return x

    def _seen(self, sender: tuple[str, int]) -> None:
        self.stats.received += 1
        self.last_sender = sender

    # -- handlers ---------------------------------------------------------------------
    def _lane(self, sender, addr, params, *args) -> None:
        self._seen(sender)
        lane, unit = params
        x = self._number(addr, args, 0.0 if unit else -1.0, 1.0)
        if x is None:
            return
        v = 2.0 * x - 1.0 if unit else x
        (self.control.set_valence if lane == "valence" else self.control.set_arousal)(v, source=f"osc {addr}")

    def _va(self, sender, addr, params, *args) -> None:
        self._seen(sender)
        (unit,) = params
        lo = 0.0 if unit else -1.0
        v, a = self._number(addr, args, lo, 1.0, 0), self._number(addr, args, lo, 1.0, 1)
        if v is None or a is None:
            return
        e = Emotion.from_unit(v, a) if unit else Emotion(v, a)
        self.control.set_emotion(e, source=f"osc {addr}")

    def _tempo(self, sender, addr, *args) -> None:
        self._seen(sender)
        bpm = self._number(addr, args, 20.0, 400.0)
        if bpm is not None:
            self.control.set_tempo(bpm, source=f"osc {addr}")

    def _play(self, sender, addr, *args) -> None:
        self._seen(sender)
        on = True
        if args:
            x = self._number(addr, args, 0.0, 1.0)
            if x is None:
                return
            on = x >= 0.5
        self.control.set_playing(on, source=f"osc {addr}")

    def _stop(self, sender, addr, *args) -> None:
        self._seen(sender)
        if args and self._number(addr, args, 0.0, 1.0) == 0.0:
            return  # a button's release (0) is not a second stop
        self.control.set_playing(False, source=f"osc {addr}")

    def _text(self, addr: str, args: tuple) -> str | None:
        if len(args) != 1 or not isinstance(args[0], str):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "type"), "OSC %s: expected one string argument, got %r (dropped)", addr, args)
            return None
        return args[0]

    def _mode(self, sender, addr, *args) -> None:
        self._seen(sender)
        m = self._text(addr, args)
        if m is None:
            return
        if m not in MODES:
            self.stats.dropped += 1
            self.stats.warn_once((addr, "value"), "OSC %s: mode must be one of %s, got %r (dropped)", addr, MODES, m)
            return
        self.control.mode = m
        self.control._changed("mode", f"osc {addr}")

    def _preset(self, sender, addr, *args) -> None:
        self._seen(sender)
        name = self._text(addr, args)
        if name is not None and self.on_preset is not None and not self.on_preset(name):
            self.stats.dropped += 1
            self.stats.warn_once((addr, name), "OSC %s: unknown preset %r (dropped)", addr, name)

    def _prompt(self, sender, addr, *args) -> None:
        self._seen(sender)
        text = self._text(addr, args)
        if text is not None:
            self.control.prompt = text[:500]
            self.control._changed("prompt", f"osc {addr}")

    def _status(self, sender, addr, *args) -> None:
        self._seen(sender)
        if self.on_status is not None:
            self.on_status(sender)

    def _learn(self, sender, addr, *args) -> None:
        self._seen(sender)
        lane = self._text(addr, args)
        if lane not in ("valence", "arousal"):
            self.stats.dropped += 1
            self.stats.warn_once((addr, "value"), "OSC %s: learn expects 'valence' or 'arousal', got %r", addr, lane)
            return
        if self.on_learn is not None:
            self.on_learn(lane)

    def _unknown(self, sender, addr, *args) -> None:
        self.stats.received += 1
        self.stats.unknown += 1
        self.stats.warn_once((addr, "unknown"), "OSC: unknown address %s (ignored)", addr)


class _Server(BlockingOSCUDPServer):
    router: OscRouter

    def handle_error(self, request, client_address) -> None:  # never fatal, never a traceback flood
        self.router.stats.dropped += 1
        self.router.stats.warn_once(("packet", "error"), "OSC: a packet from %s could not be handled (dropped)", client_address)

    def verify_request(self, request, client_address) -> bool:
        ok = super().verify_request(request, client_address)
        if not ok:
            self.router.stats.dropped += 1
        return ok


class OscServer:
    """UDP server on one thread. Binds 127.0.0.1 unless told otherwise."""

    def __init__(self, router: OscRouter, host: str = "127.0.0.1", port: int = 9000) -> None:
        self.router = router
        self.server = _Server((host, port), router.dispatcher)
        self.server.router = router
        self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.address = self.server.server_address
        self._thread: threading.Thread | None = None

    def start(self) -> OscServer:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="osc-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)


class Feedback:
    """Status messages to a fixed target, or to the last sender's port + 1. Rate-limited."""

    def __init__(self, router: OscRouter, target: tuple[str, int] | None = None, rate_hz: float = 10.0) -> None:
        self.router = router
        self.target = target
        self.min_interval = 1.0 / rate_hz
        self._last = 0.0
        self._clients: dict[tuple[str, int], SimpleUDPClient] = {}
        self.sent = 0

    def destination(self) -> tuple[str, int] | None:
        if self.target is not None:
            return self.target
        if self.router.last_sender is not None:
            host, port = self.router.last_sender
            return host, port + 1
        return None

    def send(self, status: dict, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return False
        dest = self.destination()
        if dest is None:
            return False
        client = self._clients.get(dest) or self._clients.setdefault(dest, SimpleUDPClient(*dest))
        try:
            for key, value in status.items():
                client.send_message(f"{PREFIX}/status/{key}", value)
        except OSError as e:
            log.debug("OSC feedback to %s failed: %s", dest, e)
            return False
        self._last = now
        self.sent += 1
        return True
