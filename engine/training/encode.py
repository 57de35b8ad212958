"""`moodlane data encode`: codec tokens and music-model window features for every rendered
clip, the language model's training data. One small `.npz` per clip under OUT/encoded/
(codes as uint16 (K, frames); the external model's window embeddings as float16; the codec's
name and weights' SHA-256, so tokens are never decoded or trained on as another codec's),
so the whole set moves to a GPU machine in minutes. Resumable: clips already encoded by
this codec are skipped; those of another codec are encoded again, keeping their window
features (the music model's, not the codec's: the slow part)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from moodlane.engine.atomic import write_atomic
from moodlane.engine.audio.codec import Codec
from moodlane.engine.audio.music_model import features_of, load_music_model, resample
from moodlane.engine.training.audio_data import read_manifest

CHUNK_S = 30.0  # a SEANet codec encodes long clips in pieces (bounded memory): it is convolutional + LSTM


def encode_clip(
    codec: Codec, music_model, pcm: np.ndarray, sr: int, n_q: int, hop_s: float = 0.5, features: dict | None = None
) -> dict[str, np.ndarray]:
    """`features`: the music model's window features from an earlier encode (they depend on
    the audio, not the codec), reused instead of computed again."""
    x = resample(pcm, sr, codec.sample_rate)
    if codec.cfg.kind == "spectral":  # frames centred on multiples of the hop: pieces would repeat a frame at each join
        codes = [codec.encode(x, n_q=n_q)[0]]  # and the whole clip's |STFT| is small (4 MB a minute)
    else:
        step = int(CHUNK_S * codec.sample_rate)
        codes = [codec.encode(x[i : i + step], n_q=n_q)[0] for i in range(0, len(x), step) if len(x[i : i + step]) >= codec.cfg.hop]
    if features is None:
        f = features_of(music_model, pcm, sr, hop_s)
        features = {"feature_times": f.times.astype(np.float32), "features": f.embedding.astype(np.float16)}
    return {
        "codes": torch.cat(codes, dim=1).numpy().astype(np.uint16) if codes else np.zeros((n_q, 0), np.uint16),
        "frame_rate": np.array(codec.frame_rate),
        "codec_sha256": np.array(codec.sha256 or ""),
        "codec_name": np.array(codec.cfg.name),
        **features,
    }


def _old_features(path: Path, music_model: str) -> dict | None:
    """The window features of a token file written for another codec, when the same music
    model made them."""
    try:
        with np.load(path) as d:
            made_by = str(d["music_model"]) if "music_model" in d.files else None
            if made_by != music_model:
                return None
            return {"feature_times": d["feature_times"], "features": d["features"]}
    except (OSError, ValueError, KeyError):
        return None


def token_codec(path: Path) -> tuple[str | None, str | None]:
    """(SHA-256, name) of the codec that wrote a token file; (None, None) for files written
    before codecs were recorded, or unreadable ones."""
    try:
        with np.load(path) as d:
            return (str(d["codec_sha256"]) or None, str(d["codec_name"])) if "codec_sha256" in d.files else (None, None)
    except (OSError, ValueError, KeyError):
        return None, None


def encode_all(codec: Codec, root: str | Path, kbps: float | None = None, progress: bool = True) -> dict:
    import soundfile as sf

    root = Path(root)
    if not codec.sha256:
        raise ValueError(f"codec {codec.cfg.name} has no weights file to record (SHA-256): encode with a MoodLane codec stem or .th file")
    recs = sorted(read_manifest(root), key=lambda r: r.get("labels") is None)  # labelled first
    n_q = codec.cfg.codebooks_for(kbps) if kbps else codec.cfg.n_q
    model = load_music_model()
    t0, done, frames = time.time(), 0, 0
    for r in tqdm(recs, desc="encode", disable=not progress):
        dst = root / "encoded" / (r["id"] + ".npz")
        if dst.is_file() and token_codec(dst)[0] == codec.sha256:
            continue
        pcm, sr = sf.read(root / r["path"], dtype="float32")
        d = encode_clip(codec, model, pcm, sr, n_q, features=_old_features(dst, model.name) if dst.is_file() else None)
        d["music_model"] = np.array(model.name)
        buf = io.BytesIO()
        np.savez_compressed(buf, **d)
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dst, buf.getvalue())
        done += 1
        frames += d["codes"].shape[1]
    summary = {
        "clips": len(recs),
        "encoded_now": done,
        "codebooks": n_q,
        "frame_rate": codec.frame_rate,
        "codec": codec.cfg.name,
        "codec_sha256": codec.sha256,
        "music_model": model.name,
        "hours_encoded_now": round(frames / codec.frame_rate / 3600, 2),
        "wall_s": round(time.time() - t0, 1),
    }
    write_atomic(root / "encoded" / "summary.json", json.dumps(summary, indent=1).encode())
    return summary
