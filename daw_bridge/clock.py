"""Clock sources: where the play head is, in beats, and when a beat will sound.

One shape for all: an anchor (monotonic time, beat) plus a tempo. The internal clock
re-anchors on tempo changes; the MIDI clock re-anchors on every 24-ppqn tick, estimates
tempo from tick spacing, and follows start/stop/continue and song position pointer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Clock:
    def __init__(self, tempo: float = 120.0, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.tempo = float(tempo)
        self.running = False
        self._t0 = now()
        self._b0 = 0.0
        self._lock = threading.Lock()

    def beat(self, t: float | None = None) -> float:
        t = self.now() if t is None else t
        with self._lock:
            if not self.running:
                return self._b0
            return self._b0 + (t - self._t0) * self.tempo / 60.0

    def time_of(self, beat: float) -> float:
        with self._lock:
            return self._t0 + (beat - self._b0) * 60.0 / self.tempo

    def _anchor(self, t: float, b: float) -> None:
        self._t0, self._b0 = t, b

    def start(self, beat: float = 0.0, preroll_s: float = 0.0) -> None:
        """Run from `beat`, reached `preroll_s` from now (time for the first bar to be made)."""
        with self._lock:
            self._anchor(self.now() + preroll_s, beat)
            self.running = True

    def stop(self) -> None:
        b = self.beat()
        with self._lock:
            self.running = False
            self._b0 = b

    def resume(self) -> None:
        with self._lock:
            self._anchor(self.now(), self._b0)
            self.running = True

    def set_tempo(self, bpm: float) -> None:
        t = self.now()
        b = self.beat(t)
        with self._lock:
            self._anchor(t, b)
            self.tempo = float(bpm)


class MidiClock(Clock):
    """Follows a MIDI clock master: 0xF8 ticks (24 per quarter), 0xFA start, 0xFB
    continue, 0xFC stop, 0xF2 song position pointer (in 16ths)."""

    PPQN = 24

    def __init__(self, tempo: float = 120.0, now: Callable[[], float] = time.monotonic) -> None:
        super().__init__(tempo, now)
        self.ticks = 0
        self._tick_times: deque[float] = deque(maxlen=self.PPQN + 1)
        self.source = "midi clock"

    def on_message(self, msg_type: str, pos: int = 0, t: float | None = None) -> None:
        t = self.now() if t is None else t
        if msg_type == "clock":
            self._tick_times.append(t)
            if self.running:
                self.ticks += 1
                with self._lock:
                    self._anchor(t, self.ticks / self.PPQN)
            if len(self._tick_times) >= 3:
                span = self._tick_times[-1] - self._tick_times[0]
                if span > 0:
                    bpm = 60.0 / (span / (len(self._tick_times) - 1) * self.PPQN)
                    if 20 <= bpm <= 400:
                        self.tempo = bpm
        elif msg_type == "start":
            self.ticks = 0
            with self._lock:
                self._anchor(t, 0.0)
                self.running = True
        elif msg_type == "continue":
            with self._lock:
                self._anchor(t, self.ticks / self.PPQN)
                self.running = True
        elif msg_type == "stop":
            with self._lock:
                self._b0 = self.ticks / self.PPQN
                self.running = False
        elif msg_type == "songpos":
            self.ticks = int(pos) * (self.PPQN // 4)  # SPP counts 16ths
            with self._lock:
                self._anchor(t, self.ticks / self.PPQN)


class ClockUnavailable(RuntimeError):
    """A clock source whose library is not installed."""


class LinkClock(Clock):
    """Ableton Link (through the `aalink` package, optional: `pip install aalink`): tempo
    and beat phase shared with Live, Bitwig and other Link peers on the network. The Link
    session runs on its own asyncio thread; the clock re-anchors to it every 10 ms."""

    def __init__(self, tempo: float = 120.0, quantum: float = 4.0, now: Callable[[], float] = time.monotonic) -> None:
        try:
            import aalink
        except ImportError:
            raise ClockUnavailable("Ableton Link needs the optional package aalink (pip install aalink)") from None
        import asyncio

        super().__init__(tempo, now)
        self.source = "ableton link"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closed = False

        async def main() -> None:
            self.link = aalink.Link(tempo, self._loop)
            self.link.quantum = quantum
            self.link.enabled = True
            self._ready.set()
            while not self._closed:
                self._follow()
                await asyncio.sleep(0.01)

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), name="link", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise ClockUnavailable("Ableton Link did not start")

    def _follow(self) -> None:
        t, b, bpm = self.now(), float(self.link.beat), float(self.link.tempo)
        with self._lock:
            self.tempo = bpm
            if self.running:
                self._anchor(t, b)
            else:
                self._b0 = b

    @property
    def peers(self) -> int:
        return int(self.link.num_peers)

    def start(self, beat: float = 0.0, preroll_s: float = 0.0) -> None:
        """Join the shared timeline: the beat is Link's, whatever `beat` asks."""
        with self._lock:
            self.running = True
        self._follow()

    def set_tempo(self, bpm: float) -> None:
        self._loop.call_soon_threadsafe(setattr, self.link, "tempo", float(bpm))

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
