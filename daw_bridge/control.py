"""Live control state: what the DAW asked for, smoothed for the generator.

OSC and MIDI threads write targets (already validated and clamped at their boundary);
the scheduler reads `at(beat)` when it generates the next bar, and the output stage reads
`current()` for expression. Reads smooth towards the target with a one-pole filter
(time constant `tau_s`) so a jump in a lane never arrives as a zipper step.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from moodlane.engine.emotion import Emotion


@dataclass
class ControlEvent:
    """When a target changed (monotonic seconds) and its running number."""

    version: int
    t: float
    source: str


@dataclass
class LiveControl:
    tau_s: float = 0.3
    clock: Callable[[], float] = time.monotonic
    _target: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _value: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _t_read: float = 0.0
    tempo: float = 120.0
    playing: bool = False
    mode: str = "midi"
    prompt: str = ""
    preset: str = ""
    version: int = 0
    last_event: ControlEvent | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._t_read = self.clock()
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, fn: Callable[[str], None]) -> None:
        self._listeners.append(fn)

    def _changed(self, what: str, source: str) -> None:
        self.version += 1
        self.last_event = ControlEvent(self.version, self.clock(), source)
        for fn in self._listeners:
            fn(what)

    def set_emotion(self, e: Emotion, source: str = "api", immediate: bool = False) -> None:
        with self._lock:
            self._advance()
            self._target = [e.valence, e.arousal]
            if immediate:
                self._value = list(self._target)
            self._changed("emotion", source)

    def set_valence(self, v: float, source: str = "api") -> None:
        with self._lock:
            self._advance()
            self._target[0] = float(v)
            self._changed("emotion", source)

    def set_arousal(self, a: float, source: str = "api") -> None:
        with self._lock:
            self._advance()
            self._target[1] = float(a)
            self._changed("emotion", source)

    def set_tempo(self, bpm: float, source: str = "api") -> None:
        with self._lock:
            self.tempo = float(bpm)
            self._changed("tempo", source)

    def set_playing(self, playing: bool, source: str = "api") -> None:
        with self._lock:
            self.playing = bool(playing)
            self._changed("transport", source)

    def set_mode(self, mode: str, source: str = "api") -> None:
        with self._lock:
            self.mode = mode
            self._changed("mode", source)

    def set_prompt(self, text: str, source: str = "api") -> None:
        with self._lock:
            self.prompt = text[:500]  # engine.chunk.MAX_PROMPT
            self._changed("prompt", source)

    def _advance(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self._t_read)
        self._t_read = now
        k = 1.0 - math.exp(-dt / self.tau_s) if self.tau_s > 0 else 1.0
        for i in (0, 1):
            self._value[i] += (self._target[i] - self._value[i]) * k

    def current(self) -> Emotion:
        with self._lock:
            self._advance()
            return Emotion(max(-1.0, min(1.0, self._value[0])), max(-1.0, min(1.0, self._value[1])))

    def target(self) -> Emotion:
        with self._lock:
            return Emotion(*self._target)

    def predict(self, t: float) -> Emotion:
        """The smoothed value at monotonic time `t` (>= now) if the target holds till then:
        what a chunk that starts at `t` should be made for."""
        with self._lock:
            self._advance()
            dt = max(0.0, t - self._t_read)
            k = 1.0 - math.exp(-dt / self.tau_s) if self.tau_s > 0 else 1.0
            v = [x + (g - x) * k for x, g in zip(self._value, self._target)]
        return Emotion(max(-1.0, min(1.0, v[0])), max(-1.0, min(1.0, v[1])))

    def at(self, beat: float) -> Emotion:  # EmotionSource without a clock: the value now
        return self.current()
