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
