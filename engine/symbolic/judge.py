"""The objective judge: a symbolic emotion model over jSymbolic-style attributes.

Two heads on standardised attributes: a multinomial logistic regression for the EMOPIA
quadrant (EmoGen's objective metric uses such a classifier) and a ridge regression for
continuous valence and arousal (fitted on VGMIDI's per-bar listener means with EMOPIA's
quadrant centres). Linear on purpose: the whole model is a few kB of JSON, and it reads
the same attribute scale for a 3-bar window or a whole piece.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodlane.engine.atomic import PACKAGE_WEIGHTS
from moodlane.engine.symbolic.attributes import FEATURE_NAMES, bar_windows, features
from moodlane.engine.symbolic.notes import NoteArray
from moodlane.engine.symbolic.tokens import on_grid

JUDGE_VERSION = 1


@dataclass(frozen=True)
class Judgement:
    quadrant: int
    probabilities: tuple[float, float, float, float]  # Q1..Q4
    valence: float
    arousal: float


@dataclass(frozen=True)
class SymbolicJudge:
    feature_names: tuple[str, ...]
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    quad_coef: np.ndarray  # (4, F)
    quad_intercept: np.ndarray  # (4,)
    va_coef: np.ndarray  # (2, F)
    va_intercept: np.ndarray  # (2,)
    meta: dict

    def _z(self, x: np.ndarray) -> np.ndarray:
        idx = [FEATURE_NAMES.index(n) for n in self.feature_names]
        return (np.atleast_2d(x)[:, idx] - self.mean) / self.scale

    def predict_features(self, x: np.ndarray) -> list[Judgement]:
        """x: (N, N_FEATURES) attribute rows -> one judgement per row."""
        z = self._z(x)
        logits = z @ self.quad_coef.T + self.quad_intercept
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        va = np.clip(z @ self.va_coef.T + self.va_intercept, -1, 1)
        return [Judgement(int(np.argmax(pi)) + 1, tuple(float(v) for v in pi), float(v), float(a)) for pi, (v, a) in zip(p, va)]

    def judge(self, notes: NoteArray) -> Judgement:
        return self.predict_features(features(on_grid(notes)))[0]

    def judge_bars(self, notes: NoteArray) -> list[Judgement]:
        """One judgement per bar, over the same centred windows the labels use."""
        return self.predict_features(bar_windows(on_grid(notes)))

    def to_json(self) -> dict:
        return {
            "format": "moodlane.symbolic_judge",
            "version": JUDGE_VERSION,
            "feature_names": list(self.feature_names),
            **{k: getattr(self, k).tolist() for k in ("mean", "scale", "quad_coef", "quad_intercept", "va_coef", "va_intercept")},
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict) -> SymbolicJudge:
        if d.get("format") != "moodlane.symbolic_judge" or d.get("version") != JUDGE_VERSION:
            raise ValueError(f"expected a moodlane.symbolic_judge version {JUDGE_VERSION}")
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "quad_coef", "quad_intercept", "va_coef", "va_intercept")}
        return cls(tuple(d["feature_names"]), meta=d.get("meta", {}), **arr)

    @classmethod
    def load(cls, path: Path) -> SymbolicJudge:
        return cls.from_json(json.loads(Path(path).read_text()))

    @classmethod
    def shipped(cls) -> SymbolicJudge:
        """The judge the package ships (engine/weights/judge.json)."""
        return cls.load(PACKAGE_WEIGHTS / "judge.json")
