"""`moodlane data pack`: the LM's training data in a form that travels to a GPU machine.

A lent GPU machine takes 64 MiB of files per call and reaches no package registry, so it
has neither the rendered audio nor the text encoder's weights. A pack is a folder that
`moodlane train audio --audio PACK` reads like an encoded folder (`TokenSet`), made small:
- the codes of the first `n_q` codebooks only (the LM's), as uint16;
- the LARA targets (the music model's window features) as uint8, scaled per clip and
  feature between its minimum and maximum (`features_lo` + q x `features_step`); the error
  is at most half a step, and `pack.json` records the worst against the feature's standard
  deviation within its clip;
- the text encoder's states of every text the LM can see in training (each candidate
  clip's description and its instrument alone), in `texts.npz`, so no encoder is needed
  there (`lara.TextTable`); the budget counts it first;
- the manifest lines of the clips kept. Labelled clips come first, then unlabelled ones
  (POP909) in a fixed hashed order until the budget is spent; `valid_clips` held-out clips
  (labelled first) are enough for the validation crops.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from moodlane.engine.atomic import write_atomic
from moodlane.engine.training.audio_data import read_manifest, write_manifest
from moodlane.engine.training.lara import TEXTS, dequantise, training_texts

PACK_FORMAT = "moodlane.audio_pack"


def _packed(d) -> tuple[dict[str, np.ndarray], float]:
    """(the packed arrays, the largest rounding error over its feature's deviation in the clip)."""
    f = np.asarray(dequantise(d), dtype=np.float32)
    lo, hi = f.min(0), f.max(0)
    step = np.maximum(hi - lo, 1e-6) / 255.0
    q = np.clip(np.rint((f - lo) / step), 0, 255).astype(np.uint8)
    err = float((np.abs(lo + q * step - f) / np.maximum(f.std(0), 1e-3)).max())
    keep = {k: d[k] for k in ("feature_times", "frame_rate", "codec_sha256", "codec_name", "music_model") if k in d.files}
    return {**keep, "features_q": q, "features_lo": lo.astype(np.float32), "features_step": step.astype(np.float32)}, err


def _order(r: dict) -> tuple[int, str]:
    return (0 if r.get("labels") else 1, hashlib.sha256(r["id"].encode()).hexdigest())


def pack_tokens(
    src: str | Path,
    dst: str | Path,
    text_encoder,
    encoder_name: str,
    n_q: int = 4,
    max_mb: float = 16.0,
    valid_clips: int = 64,
    progress: bool = True,
) -> dict:
    """Write the pack of `src` (an encoded folder) to `dst`; returns its record."""
    src, dst = Path(src), Path(dst)
    if not 1 <= n_q <= 32 or max_mb <= 0 or valid_clips < 1:
        raise ValueError(f"n_q must be in 1..32, max_mb > 0 and valid_clips >= 1; got {n_q}, {max_mb}, {valid_clips}")
    recs = [r for r in read_manifest(src) if (src / "encoded" / (r["id"] + ".npz")).is_file()]
    if not recs:
        raise ValueError(f"{src}/encoded: no token files (run `moodlane data encode --out {src}` first)")
    if (dst / "encoded").exists():  # a pack's size is what travels: no files of an older one in it
        raise ValueError(f"{dst} already holds a pack: pack into a new folder")
    valid = sorted((r for r in recs if r["split"] == "valid"), key=_order)[:valid_clips]
    train = sorted((r for r in recs if r["split"] == "train"), key=_order)
    # the text table first: every text of every candidate clip, so it fits whatever is kept
    texts = training_texts(valid + train)
    states, mask = text_encoder(texts)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        encoder=np.array(encoder_name),
        texts=np.array(json.dumps(texts)),
        states=states.float().numpy().astype(np.float16),
        lengths=mask.sum(1).numpy().astype(np.int32),
    )
    dst.mkdir(parents=True, exist_ok=True)
    write_atomic(dst / TEXTS, buf.getvalue())
    budget = max_mb * 1e6
    kept, used, worst, frames, codec, rate = [], len(buf.getvalue()), 0.0, {"train": 0, "valid": 0}, set(), 1.0
    for r in tqdm(valid + train, desc="pack", disable=not progress):
        with np.load(src / "encoded" / (r["id"] + ".npz")) as d:
            if d["codes"].shape[0] < n_q:
                raise ValueError(f"{r['id']}: {d['codes'].shape[0]} codebooks, the pack asks for {n_q}")
            arrays, err = _packed(d)
            arrays["codes"] = d["codes"][:n_q].astype(np.uint16)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        if used + len(buf.getvalue()) > budget and r["split"] == "train":
            break
        path = dst / "encoded" / (r["id"] + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
        used += len(buf.getvalue())
        worst = max(worst, err)
        frames[r["split"]] += arrays["codes"].shape[1]
        codec.add(str(arrays.get("codec_sha256", "")))
        rate = float(arrays["frame_rate"])
        kept.append(r)
    if not any(r["split"] == "train" for r in kept):
        raise ValueError(f"a budget of {max_mb} MB holds no training clip")
    write_manifest(dst, kept)
    record = {
        "format": PACK_FORMAT,
        "source": str(src),
        "codebooks": n_q,
        "codec_sha256": sorted(codec),
        "train_clips": sum(r["split"] == "train" for r in kept),
        "train_labelled": sum(r["split"] == "train" and bool(r.get("labels")) for r in kept),
        "train_of": len(train),
        "valid_clips": len(valid),
        "hours": {k: round(v / rate / 3600, 2) for k, v in frames.items()},
        "texts": len(texts),
        "mb": round(used / 1e6, 2),
        "feature_error_max_over_std": round(worst, 4),
    }
    write_atomic(dst / "pack.json", json.dumps(record, indent=1).encode())
    return record
