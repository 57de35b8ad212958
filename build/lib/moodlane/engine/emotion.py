"""The one valence/arousal type. Every boundary converts into it; inside, trust it.

Valence (sad -> happy) and arousal (calm -> excited) each lie in [-1, 1], Russell's
circumplex. Quadrants follow EMOPIA: Q1 = +V+A, Q2 = -V+A, Q3 = -V-A, Q4 = +V-A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class EmotionError(ValueError):
    """A valence/arousal value that is not a finite number in its expected range."""


def _check(name: str, value: float, lo: float, hi: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise EmotionError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}") from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise EmotionError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return x


@dataclass(frozen=True)
class Emotion:
    valence: float
    arousal: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "valence", _check("valence", self.valence, -1.0, 1.0))
        object.__setattr__(self, "arousal", _check("arousal", self.arousal, -1.0, 1.0))

    @classmethod
    def from_unit(cls, valence: float, arousal: float) -> Emotion:
        """From DAW-normalised 0..1 values (Reaper's n/ patterns, plugin parameters)."""
        v = _check("valence", valence, 0.0, 1.0)
        a = _check("arousal", arousal, 0.0, 1.0)
        return cls(2.0 * v - 1.0, 2.0 * a - 1.0)

    @classmethod
    def from_cc(cls, valence: int, arousal: int, bits: int = 7) -> Emotion:
        """From MIDI controller values: 0..127 (7-bit) or 0..16383 (14-bit pairs, NRPN)."""
        top = (1 << bits) - 1
        v = _check("valence CC", valence, 0, top)
        a = _check("arousal CC", arousal, 0, top)
        return cls(2.0 * v / top - 1.0, 2.0 * a / top - 1.0)

    @classmethod
    def from_nine_point(cls, valence: float, arousal: float) -> Emotion:
        """From the 1..9 self-assessment scale used in the emotion-recognition papers."""
        v = _check("valence", valence, 1.0, 9.0)
        a = _check("arousal", arousal, 1.0, 9.0)
        return cls((v - 5.0) / 4.0, (a - 5.0) / 4.0)

    @property
    def quadrant(self) -> int:
        """EMOPIA quadrant 1..4 (ties at 0 go to the positive side)."""
        if self.arousal >= 0:
            return 1 if self.valence >= 0 else 2
        return 4 if self.valence >= 0 else 3

    def to_unit(self) -> tuple[float, float]:
        return (self.valence + 1.0) / 2.0, (self.arousal + 1.0) / 2.0


QUADRANT_CENTRES: dict[int, Emotion] = {
    1: Emotion(0.6, 0.6),
    2: Emotion(-0.6, 0.6),
    3: Emotion(-0.6, -0.6),
    4: Emotion(0.6, -0.6),
}
