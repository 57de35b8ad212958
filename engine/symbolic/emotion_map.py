"""Emotion -> attributes (EmoGen section 3.2, extended to continuous valence/arousal).

Two maps share one scale: attribute *ranks*, positions in [0, 1] on the distribution the
generator was trained on (`attributes.to_ranks`), so a rank turns into a conditioning bin
directly.

* `emogen`: EmoGen's supervised clustering. For each EMOPIA quadrant, the clip closest to
  the quadrant's centre in attribute space is its prototype; each attribute is binarised
  at the median over all clips (high / low), and high/low stand for the mean rank of the
  clips above / below that median.
* `smooth`: any (valence, arousal) in [-1, 1]^2. A ridge regression on the quadratic basis
  [1, v, a, va, v^2, a^2], fitted on VGMIDI's per-bar listener means and EMOPIA's clips at
  their quadrant centres. Emotion explains a small share of any one attribute's variance,
  so a regression shrinks towards the median; `gain` re-expands deviations so that the
  quadrant centres are as distinct as EmoGen's prototypes (fitted, not hand-set). The
  target is then projected onto music that exists: the mean of the `k` bar profiles of the
  generator's training data nearest to it, with attributes weighted by how much emotion
  explains them. EMOPIA's transcriptions (sustain-pedal polyphony, long notes) ask for
  combinations pop piano never has, and a decoder given an incoherent profile plays
  sparsely and vaguely; a real neighbour's profile it can follow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.emotion import Emotion
from engine.symbolic.attributes import ranks_to_bins

MAP_VERSION = 1
MODES = ("smooth", "emogen")


def basis(v: np.ndarray | float, a: np.ndarray | float) -> np.ndarray:
    v, a = np.asarray(v, dtype=np.float64), np.asarray(a, dtype=np.float64)
    return np.stack([np.ones_like(v), v, a, v * a, v * v, a * a], axis=-1)


@dataclass(frozen=True)
class EmotionMap:
    attributes: tuple[str, ...]
    coef: np.ndarray  # (k, 6): ranks = basis(v, a) @ coef.T
    gain: float
    quadrant_high: np.ndarray  # (4, k) bool, EmoGen's binarised prototypes, Q1..Q4
    high_rank: np.ndarray  # (k,) rank that "high" stands for
    low_rank: np.ndarray  # (k,)
    tempo_coef: np.ndarray  # (6,): log2(qpm) = basis(v, a) @ tempo_coef
    tempo_range: tuple[float, float]
    meta: dict
    bank: np.ndarray | None = None  # (N, k) rank profiles of real bars (training split)
    weights: np.ndarray | None = None  # (k,) attribute weights for the projection
    neighbours: int = 16

    def ranks(self, e: Emotion, mode: str = "smooth") -> np.ndarray:
        if mode == "emogen":
            hi = self.quadrant_high[e.quadrant - 1]
            return np.where(hi, self.high_rank, self.low_rank)
        if mode != "smooth":
            raise ValueError(f"mapping mode must be one of {MODES}, got {mode!r}")
        r = np.clip(0.5 + self.gain * (basis(e.valence, e.arousal) @ self.coef.T - 0.5), 0.02, 0.98)
        if self.bank is None or not len(self.bank):
            return r
        w = self.weights if self.weights is not None else np.ones(r.shape[0])
        d = ((self.bank - r) ** 2 * w).sum(1)
        nn = np.argpartition(d, min(self.neighbours, len(d) - 1))[: self.neighbours]
        return self.bank[nn].mean(0)

    def bins(self, e: Emotion, n_bins: int, mode: str = "smooth") -> np.ndarray:
        return ranks_to_bins(self.ranks(e, mode), n_bins)

    def tempo(self, e: Emotion) -> float:
        lo, hi = self.tempo_range
        return float(np.clip(2.0 ** (basis(e.valence, e.arousal) @ self.tempo_coef), lo, hi))

    def to_json(self) -> dict:
        return {
            "format": "moodlane.emotion_map",
            "version": MAP_VERSION,
            "attributes": list(self.attributes),
            "coef": self.coef.tolist(),
            "gain": self.gain,
            "quadrant_high": self.quadrant_high.astype(int).tolist(),
            "high_rank": self.high_rank.tolist(),
            "low_rank": self.low_rank.tolist(),
            "tempo_coef": self.tempo_coef.tolist(),
            "tempo_range": list(self.tempo_range),
            "neighbours": self.neighbours,
            "weights": None if self.weights is None else np.round(self.weights, 4).tolist(),
            "bank": None if self.bank is None else np.round(self.bank, 3).tolist(),
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict) -> EmotionMap:
        if d.get("format") != "moodlane.emotion_map" or d.get("version") != MAP_VERSION:
            raise ValueError(f"expected a moodlane.emotion_map version {MAP_VERSION}")
        return cls(
            tuple(d["attributes"]),
            np.asarray(d["coef"], dtype=np.float64),
            float(d["gain"]),
            np.asarray(d["quadrant_high"], dtype=bool),
            np.asarray(d["high_rank"], dtype=np.float64),
            np.asarray(d["low_rank"], dtype=np.float64),
            np.asarray(d["tempo_coef"], dtype=np.float64),
            tuple(d["tempo_range"]),
            d.get("meta", {}),
            None if d.get("bank") is None else np.asarray(d["bank"], dtype=np.float64),
            None if d.get("weights") is None else np.asarray(d["weights"], dtype=np.float64),
            int(d.get("neighbours", 16)),
        )

    @classmethod
    def load(cls, path: Path) -> EmotionMap:
        return cls.from_json(json.loads(Path(path).read_text()))
