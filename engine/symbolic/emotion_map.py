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

Time-based attributes (`TIMED`: notes per beat, durations and inter-onset intervals in
beats) are asked for at the emotion's own tempo (`tempo(e)`, which rises with arousal), and
listeners hear arousal in notes per second, not per beat (VGMIDI: Pearson r of arousal with
notes per second 0.59, with notes per beat 0.34). So when the session runs at another tempo
(a DAW sets it), they are converted to keep their seconds: at half the tempo, half the notes
per beat. Arousal then moves density, articulation and register at any tempo (map version 2
lists the attributes and their bin edges).

Version 3 can calibrate them (mapping mode `calibrated`): the bank's bars are pop piano at a
tempo that rises with arousal, so `smooth` asks a happy, excited bar for 14 notes a second and
a sad, calm one for 2, where held-out EMOPIA clips of those quadrants play 7.4 and 3.9
(medians). A time-based attribute with a `per_second` fit is asked for in seconds' terms
directly: log(value in seconds' terms) = [1, v, a, va] @ per_second, solved on the medians of
EMOPIA's four quadrants (training clips), linear in arousal beyond them, then turned into
per-beat terms at the session's tempo. The other attributes are `smooth`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.attributes import rank_to_value, ranks_to_bins, to_ranks

MAP_VERSION = 3
MODES = ("smooth", "emogen", "calibrated")
# attribute -> its unit: "per_beat" (x tempo/60 = per second) or "beats" (x 60/tempo = seconds)
TIMED = {
    "note_density": "per_beat",
    "onset_density": "per_beat",
    "note_density_variability": "per_beat",
    "ioi_mean": "beats",
    "ioi_std": "beats",
    "duration_mean": "beats",
    "duration_std": "beats",
}
# texture: what the quality report's per-quadrant statistics measure (density, durations,
# polyphony, the top voice's share). The valence mirror of an emotion asks for a different
# density through the map's v*a term, and guidance pushing away from it drove sparse music
# sparser and dense music denser (Q3 0.55 notes/s, Q1 16.6, against EMOPIA's 2.1-5.3 and
# 5.9-10.0); with `SamplingConfig.guide_texture` off the contrast keeps these as asked.
TEXTURE = (*TIMED, "polyphony_mean", "top_line_relative_density")


def per_second(unit: str, tempo: float) -> float:
    """A `TIMED` attribute's value at `tempo` BPM times this is its value in seconds' terms
    (per beat -> per second; beats -> seconds)."""
    return tempo / 60.0 if unit == "per_beat" else 60.0 / tempo


def linear_basis(v: np.ndarray | float, a: np.ndarray | float) -> np.ndarray:
    """[1, v, a, va]: what a `per_second` fit is linear in (exactly determined by 4 quadrants)."""
    return basis(v, a)[..., :4]


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
    # version 2: attribute -> {"unit": "per_beat" | "beats", "edges": its inner quantile edges};
    # version 3 adds "per_second": 4 coefficients of log(value in seconds' terms) on `linear_basis`
    timed: dict | None = None
    # version 2: the quadratic fit saw arousal within about +-0.6 (EMOPIA's quadrant centres,
    # VGMIDI's per-bar means) and bends back beyond it (at +1 it asked for softer, sparser
    # music than at +0.5); past the limit arousal acts through tempo and the time-based attributes
    arousal_limit: float | None = None
    # the same for valence, optional: beyond +-0.6 the v^2 term asks a happy, excited bar for
    # softer playing (velocity rank 0.21 at (0.8, 0.8), 0.61 at (0.4, 0.8)), but holding valence
    # there also flattens what the grid's outer columns ask, and the judge hears less valence
    # (VA grid, 16 pieces a point: 0.53 held, 0.57 not). Fitted maps leave it unset (README,
    # issue 18); a map that sets it holds valence past it
    valence_limit: float | None = None

    def ranks(self, e: Emotion, mode: str = "smooth", tempo: float | None = None) -> np.ndarray:
        """Attribute ranks for `e` at `tempo` BPM (None: the emotion's own tempo)."""
        r = self._ranks(e, mode)
        if mode == "calibrated" and not self.calibrated:
            raise ValueError("this emotion map has no calibration of its time-based attributes (moodlane train map --calibrate adds it)")
        if not self.timed:
            return r
        # the fitted tempo before the default tempo's clip to `tempo_range`: past it, arousal
        # still asks for more (or fewer) notes per second
        own = self.fitted_tempo(e)
        at = self.tempo(e) if tempo is None else tempo
        b = linear_basis(e.valence, e.arousal)
        r = r.copy()
        for name, t in self.timed.items():
            j = self.attributes.index(name)
            if mode == "calibrated":
                value = float(np.exp(b @ np.asarray(t["per_second"]))) / per_second(t["unit"], at)
            elif tempo is not None and abs(tempo - own) > 1e-6:
                value = rank_to_value(r[j], t["edges"]) * per_second(t["unit"], own) / per_second(t["unit"], tempo)
            else:
                continue
            r[j] = float(np.clip(to_ranks(np.array([[value]]), np.array([t["edges"]]))[0, 0], 0.0, 0.999))
        return r

    @property
    def calibrated(self) -> bool:
        """Whether mapping mode `calibrated` can run: every time-based attribute has its fit."""
        return bool(self.timed) and all(t.get("per_second") is not None for t in self.timed.values())

    def asks_per_second(self, e: Emotion, attribute: str = "note_density", mode: str = "smooth") -> float:
        """What the map asks of a time-based attribute at the emotion's own tempo, in seconds'
        terms (notes per second; a duration in seconds): what a listener hears."""
        t = (self.timed or {})[attribute]
        tempo = self.tempo(e)
        value = rank_to_value(self.ranks(e, mode, tempo)[self.attributes.index(attribute)], t["edges"])
        return value * per_second(t["unit"], tempo)

    def _ranks(self, e: Emotion, mode: str) -> np.ndarray:
        if mode == "emogen":
            hi = self.quadrant_high[e.quadrant - 1]
            return np.where(hi, self.high_rank, self.low_rank)
        if mode not in ("smooth", "calibrated"):
            raise ValueError(f"mapping mode must be one of {MODES}, got {mode!r}")
        a = e.arousal if self.arousal_limit is None else float(np.clip(e.arousal, -self.arousal_limit, self.arousal_limit))
        v = e.valence if self.valence_limit is None else float(np.clip(e.valence, -self.valence_limit, self.valence_limit))
        r = np.clip(0.5 + self.gain * (basis(v, a) @ self.coef.T - 0.5), 0.02, 0.98)
        if self.bank is None or not len(self.bank):
            return r
        w = self.weights if self.weights is not None else np.ones(r.shape[0])
        d = ((self.bank - r) ** 2 * w).sum(1)
        nn = np.argpartition(d, min(self.neighbours, len(d) - 1))[: self.neighbours]
        return self.bank[nn].mean(0)

    def bins(self, e: Emotion, n_bins: int, mode: str = "smooth", tempo: float | None = None) -> np.ndarray:
        return ranks_to_bins(self.ranks(e, mode, tempo), n_bins)

    def fitted_tempo(self, e: Emotion) -> float:
        return float(2.0 ** (basis(e.valence, e.arousal) @ self.tempo_coef))

    def tempo(self, e: Emotion) -> float:
        """The emotion's default tempo, within `tempo_range`."""
        return float(np.clip(self.fitted_tempo(e), *self.tempo_range))

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
            "timed": self.timed,
            "arousal_limit": self.arousal_limit,
            "valence_limit": self.valence_limit,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict) -> EmotionMap:
        if d.get("format") != "moodlane.emotion_map" or d.get("version") not in range(1, MAP_VERSION + 1):
            raise ValueError(f"expected a moodlane.emotion_map version 1 to {MAP_VERSION}")
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
            d.get("timed"),
            d.get("arousal_limit"),
            d.get("valence_limit"),
        )

    @classmethod
    def load(cls, path: Path) -> EmotionMap:
        return cls.from_json(json.loads(Path(path).read_text()))
