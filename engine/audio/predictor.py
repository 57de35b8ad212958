"""The Emotion Predictor: LARA-Gen's benchmark tool and MoodLane's audio judge.

Frozen external-model features per window (musicnn's 200-d embedding; optionally with the
simple descriptors of `descriptors.py` beside it, `features="musicnn-msd+descriptors"`) ->
sliding-window pooling (mean and standard deviation over `context` windows each side) ->
a small regression head (one hidden layer, tanh out) -> (valence, arousal) in [-1, 1] per
window, and the clip average. The head runs in numpy; training is in
`engine/training/predictor.py`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from moodlane.engine.atomic import save_stem, stem_files
from moodlane.engine.audio.music_model import PACKAGE_WEIGHTS, Features, MusicModel, load_music_model, resample


class PredictorError(ValueError):
    """A predictor checkpoint that is missing or unreadable, or audio it cannot judge."""


@dataclass(frozen=True)
class PredictorConfig:
    features: str = "musicnn-msd"  # "+"-joined: the backbone's name and/or "descriptors" (the baseline)
    dim: int = 200  # per-window feature size before pooling
    hop_s: float = 1.5
    context: int = 2  # windows pooled on each side
    hidden: int = 64

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> PredictorConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def pool(x: np.ndarray, context: int) -> np.ndarray:
    """(N, D) -> (N, 2D): mean and standard deviation over windows i-context..i+context."""
    n = len(x)
    if n == 0:
        return np.zeros((0, 2 * x.shape[1]), np.float32)
    c = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, 0)])
    c2 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x.astype(np.float64) ** 2, 0)])
    lo = np.clip(np.arange(n) - context, 0, n)
    hi = np.clip(np.arange(n) + context + 1, 0, n)
    cnt = (hi - lo)[:, None]
    mean = (c[hi] - c[lo]) / cnt
    var = np.maximum((c2[hi] - c2[lo]) / cnt - mean**2, 0)
    return np.concatenate([mean, np.sqrt(var)], 1).astype(np.float32)


@dataclass
class Head:
    """Standardise -> Linear -> GELU -> Linear -> tanh."""

    mu: np.ndarray
    sigma: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = ((x - self.mu) / self.sigma) @ self.w1 + self.b1
        h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))  # GELU (tanh form)
        return np.tanh(h @ self.w2 + self.b2)

    def state(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(getattr(self, k), dtype=np.float32) for k in ("mu", "sigma", "w1", "b1", "w2", "b2")}


@dataclass(frozen=True)
class Prediction:
    times: np.ndarray  # window centres, s
    valence: np.ndarray
    arousal: np.ndarray

    @property
    def mean(self) -> tuple[float, float]:
        return float(self.valence.mean()), float(self.arousal.mean())

    def to_json(self, file: str) -> dict:
        v, a = self.mean
        windows = [[round(float(t), 3), round(float(x), 4), round(float(y), 4)] for t, x, y in zip(self.times, self.valence, self.arousal)]
        return {"file": file, "valence": round(v, 4), "arousal": round(a, 4), "windows": windows}


@dataclass
class EmotionPredictor:
    cfg: PredictorConfig
    head: Head
    model: MusicModel | None = None  # loaded on first use
    meta: dict = field(default_factory=dict)

    def backbone(self) -> MusicModel:
        """The external model: it also sets the windows when only descriptors are used."""
        if self.model is None:
            self.model = load_music_model()
            wanted = [p for p in self.cfg.features.split("+") if p != "descriptors"]
            if wanted and wanted != [self.model.name]:
                raise PredictorError(f"this predictor was trained on {self.cfg.features} features, not {self.model.name}")
        return self.model

    def predict_features(self, f: Features, x: np.ndarray | None = None) -> Prediction:
        """From window features (or any per-window matrix `x` aligned with them)."""
        x = f.embedding if x is None else x
        y = self.head(pool(x, self.cfg.context))
        return Prediction(f.times, y[:, 0], y[:, 1])

    def window_features(self, pcm: np.ndarray, sample_rate: int) -> tuple[Features, np.ndarray]:
        """The backbone's windows and the per-window matrix this predictor reads."""
        from moodlane.engine.audio.descriptors import descriptors

        model = self.backbone()
        pcm = resample(pcm, sample_rate, model.sample_rate)  # once, for the model and the descriptors
        f = model.features(pcm, hop_s=self.cfg.hop_s)
        if len(f) == 0:
            raise PredictorError(f"clip is {len(pcm) / model.sample_rate:.2f} s, shorter than one {model.window_s:.2f} s window")
        parts = [f.embedding] if model.name in self.cfg.features.split("+") else []
        if "descriptors" in self.cfg.features.split("+"):
            parts.append(descriptors(pcm, model.sample_rate, f))
        return f, np.concatenate(parts, axis=1)

    def predict(self, pcm: np.ndarray, sample_rate: int) -> Prediction:
        return self.predict_features(*self.window_features(pcm, sample_rate))


def save_predictor(stem: Path, cfg: PredictorConfig, head: Head, record: dict) -> None:
    from safetensors.numpy import save

    save_stem(stem, save(head.state()), {"config": cfg.to_json(), "training": record})


def load_predictor(path: str | os.PathLike | None = None) -> EmotionPredictor:
    st, js = stem_files(path or PACKAGE_WEIGHTS / "predictor", "predictor", PredictorError)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        meta = json.loads(js.read_text())
        cfg = PredictorConfig.from_json(meta["config"])
        w = load_file(str(st))
        head = Head(**{k: w[k] for k in ("mu", "sigma", "w1", "b1", "w2", "b2")})
    except (ValueError, KeyError, TypeError, SafetensorError, OSError) as e:
        raise PredictorError(f"{st}: not a readable predictor checkpoint ({type(e).__name__}: {e})") from None
    if head.w1.shape[0] != 2 * cfg.dim or head.w2.shape[1] != 2:
        raise PredictorError(f"{st}: weights of shape {head.w1.shape} do not match the config (dim {cfg.dim})")
    return EmotionPredictor(cfg, head, meta=meta)
