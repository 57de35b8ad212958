"""The external music-understanding model: LARA's alignment target and the Emotion
Predictor's frozen backbone.

Default: musicnn (MSD_musicnn, Pons & Serra 2019, ISC licence), converted once to ONNX by
`export/musicnn_to_onnx.py` and run here on onnxruntime alone (no TensorFlow, no torch).
It sees 3 s windows of 16 kHz log-mel and gives a 200-dimensional penultimate embedding and
50 Million-Song-Dataset tag probabilities (happy, sad, mellow, chill, piano, ...).

A stronger model (MERT in the LARA-Gen paper) plugs in from a local folder holding
`model.onnx` and `music_model.json` (see `OnnxFolderModel`); its weights cannot be fetched
here, which is why musicnn, which ships its weights in its pip package, is the default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from moodlane.engine.atomic import PACKAGE_WEIGHTS
from moodlane.engine.audio import melspec

MUSICNN_FILE = PACKAGE_WEIGHTS / "musicnn_msd.onnx"


class MusicModelError(ValueError):
    """A music model file that is missing, unreadable or not as described."""


@dataclass(frozen=True)
class Features:
    """Per window: `times` (window centres, s), `embedding` (N, D), `tags` (N, T) or None."""

    times: np.ndarray
    embedding: np.ndarray
    tags: np.ndarray | None
    window_s: float
    hop_s: float

    def __len__(self) -> int:
        return len(self.times)


class MusicModel(Protocol):
    name: str
    sample_rate: int
    window_s: float
    dim: int
    tag_names: tuple[str, ...]

    def features(self, pcm: np.ndarray, hop_s: float = 1.5, batch: int = 32) -> Features: ...


def resample(pcm: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    if sr_from == sr_to:
        return np.asarray(pcm, np.float32)
    from scipy.signal import resample_poly

    g = np.gcd(int(sr_from), int(sr_to))
    return resample_poly(np.asarray(pcm, np.float32), sr_to // g, sr_from // g).astype(np.float32)


def _session(path: Path, threads: int = 0):
    try:
        import onnxruntime as ort
    except ImportError:
        raise MusicModelError("onnxruntime is missing: pip install 'moodlane[onnx]' (CPU) or 'moodlane[gpu]' (CUDA), not both") from None

    if not path.is_file():
        raise MusicModelError(f"music model {path} does not exist")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise MusicModelError(f"{path}: not a loadable ONNX model ({type(e).__name__})") from None


class Musicnn:
    """musicnn on onnxruntime. `features(pcm)` takes mono 16 kHz float audio."""

    name = "musicnn-msd"
    sample_rate = melspec.SR
    window_s = melspec.PATCH * melspec.HOP / melspec.SR  # 2.99 s
    dim = 200

    def __init__(self, path: str | os.PathLike = MUSICNN_FILE, threads: int = 0) -> None:
        self.path = Path(path)
        self.sess = _session(self.path, threads)
        meta = self.sess.get_modelmeta().custom_metadata_map
        self.tag_names = tuple(json.loads(meta.get("labels", "[]")))

    def features(self, pcm: np.ndarray, hop_s: float = 1.5, batch: int = 32) -> Features:
        mel = melspec.log_mel(pcm)
        hop = max(1, int(round(hop_s * self.sample_rate / melspec.HOP)))
        x, starts = melspec.patches(mel, hop)
        emb, tags = np.zeros((len(x), self.dim), np.float32), np.zeros((len(x), len(self.tag_names)), np.float32)
        for i in range(0, len(x), batch):
            t, e = self.sess.run(["tags", "penultimate"], {"logmel": x[i : i + batch]})
            tags[i : i + batch], emb[i : i + batch] = t, e
        times = (starts + melspec.PATCH / 2) * melspec.HOP / self.sample_rate
        return Features(times.astype(np.float64), emb, tags, self.window_s, hop * melspec.HOP / self.sample_rate)


class OnnxFolderModel:
    """A stronger model from a local folder: `model.onnx` taking raw mono audio windows
    (N, samples) at `sample_rate`, and `music_model.json`:

        {"name": "mert-v1-95m", "sample_rate": 24000, "window_s": 5.0, "input": "audio",
         "embedding": "embedding", "tags": null, "tag_names": []}

    (MERT exported with torch.onnx from transformers, mean-pooled over its frames, fits this.)
    """

    def __init__(self, folder: str | os.PathLike, threads: int = 0) -> None:
        folder = Path(folder)
        spec_path = folder / "music_model.json"
        if not spec_path.is_file():
            raise MusicModelError(f"{folder}: no music_model.json describing the model")
        try:
            spec = json.loads(spec_path.read_text())
            self.name = str(spec["name"])
            self.sample_rate = int(spec["sample_rate"])
            self.window_s = float(spec["window_s"])
            self.input = str(spec.get("input", "audio"))
            self.out_embedding = str(spec["embedding"])
            self.out_tags = spec.get("tags")
            self.tag_names = tuple(spec.get("tag_names", []))
        except (ValueError, KeyError, TypeError) as e:
            raise MusicModelError(f"{spec_path}: {type(e).__name__}: {e}") from None
        self.sess = _session(folder / "model.onnx", threads)
        out = {o.name: o for o in self.sess.get_outputs()}
        if self.out_embedding not in out:
            raise MusicModelError(f"{folder / 'model.onnx'} has no output {self.out_embedding!r} (has {sorted(out)})")
        self.dim = int(out[self.out_embedding].shape[-1])

    def features(self, pcm: np.ndarray, hop_s: float = 1.5, batch: int = 8) -> Features:
        n, hop = int(self.window_s * self.sample_rate), max(1, int(hop_s * self.sample_rate))
        starts = np.arange(0, len(pcm) - n + 1, hop) if len(pcm) >= n else np.zeros(0, np.int64)
        outs = [self.out_embedding] + ([self.out_tags] if self.out_tags else [])
        emb, tags = [], []
        for i in range(0, len(starts), batch):
            w = np.stack([pcm[s : s + n] for s in starts[i : i + batch]]).astype(np.float32)
            r = self.sess.run(outs, {self.input: w})
            emb.append(r[0])
            if self.out_tags:
                tags.append(r[1])
        embedding = np.concatenate(emb) if emb else np.zeros((0, self.dim), np.float32)
        tag_arr = (np.concatenate(tags) if tags else np.zeros((0, len(self.tag_names)), np.float32)) if self.out_tags else None
        return Features((starts + n / 2) / self.sample_rate, embedding, tag_arr, self.window_s, hop / self.sample_rate)


def load_music_model(spec: str | os.PathLike | None = None, threads: int = 0) -> MusicModel:
    """None or "musicnn": the shipped musicnn; a folder: `OnnxFolderModel`; an .onnx file:
    a musicnn-compatible conversion."""
    if spec is None or str(spec) == "musicnn":
        return Musicnn(threads=threads)
    p = Path(spec)
    if p.is_dir():
        return OnnxFolderModel(p, threads)
    return Musicnn(p, threads)


def features_of(model: MusicModel, pcm: np.ndarray, sample_rate: int, hop_s: float = 1.5) -> Features:
    """Mono audio at any rate -> the model's window features (resampled to its rate)."""
    return model.features(resample(pcm, sample_rate, model.sample_rate), hop_s=hop_s)


def to_frame_rate(f: Features, frame_rate: float, n_frames: int) -> np.ndarray:
    """Window embeddings resampled to `n_frames` frames at `frame_rate` (the codec's), by
    linear interpolation between window centres, held at the ends: the LARA targets."""
    t = (np.arange(n_frames) + 0.5) / frame_rate
    if len(f) == 0:
        return np.zeros((n_frames, f.embedding.shape[1]), np.float32)
    if len(f) == 1:
        return np.repeat(f.embedding[:1], n_frames, axis=0)
    cols = [np.interp(t, f.times, f.embedding[:, j]) for j in range(f.embedding.shape[1])]
    return np.stack(cols, axis=1).astype(np.float32)
