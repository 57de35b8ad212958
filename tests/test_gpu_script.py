"""scripts/gpu_train_audio.sh, the GPU run kit of issue 17, on the CPU with a tiny config: a
pack in (tokens of the shipped spectral codec, the text states standing in for the encoder),
a loadable LM with its training record out, the checkout imported without an install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from moodlane.engine.audio.checkpoint import codec_signature, load_lm
from moodlane.engine.audio.codec import load_codec
from moodlane.engine.training.lara import TEXTS
from moodlane.engine.training.pack import pack_tokens

ROOT = Path(__file__).resolve().parents[1]


class HashText:
    dim = 384

    def __call__(self, texts):
        import torch

        out = torch.stack([torch.randn(2, self.dim, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts])
        return out, torch.ones(len(texts), 2, dtype=torch.bool)


def encoded_for(root: Path, sig: dict, clips: int = 4, seconds: float = 3.0) -> None:
    """Token files as `moodlane data encode` writes them for the shipped spectral codec."""
    rng = np.random.default_rng(0)
    recs = []
    for i in range(clips):
        n, times = int(seconds * sig["frame_rate"]), np.arange(0.25, seconds, 0.5)
        labels = {"kind": "quadrant", "quadrant": 2, "valence": -0.6, "arousal": 0.6, "coarse": True} if i % 2 else None
        pseudo = None if labels else {"kind": "curve", "points": [[0.0, 0.5, -0.2], [2.0, 0.1, 0.4]]}
        recs.append(
            {
                "id": f"c{i}",
                "split": "valid" if i == 3 else "train",
                "labels": labels,
                "pseudo_labels": pseudo,
                "text": "solo harp, slow, low register, sparse",
                "instrument": "harp",
            }
        )
        np.savez(
            root / "encoded" / f"c{i}.npz",
            codes=rng.integers(0, sig["bins"], (8, n)).astype(np.uint16),
            frame_rate=np.array(sig["frame_rate"]),
            feature_times=times.astype(np.float32),
            features=rng.normal(size=(len(times), 200)).astype(np.float16),
            codec_sha256=np.array(sig["sha256"]),
            codec_name=np.array(sig["name"]),
        )
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_gpu_script_trains_from_a_pack_on_the_cpu(tmp_path):
    sig = codec_signature(load_codec(None))
    (tmp_path / "src" / "encoded").mkdir(parents=True)
    encoded_for(tmp_path / "src", sig)
    pack = tmp_path / "pack"
    rec = pack_tokens(tmp_path / "src", pack, HashText(), "minilm", n_q=sig["n_q"], progress=False)
    assert (pack / TEXTS).is_file() and rec["train_clips"] == 3
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "TINY": "1",
        "STEPS": "3",
        "BATCH": "2",
        "PACK": str(pack),
        "OUT": str(out),
        "RUN": str(tmp_path / "run"),
        "WEIGHT": "harp=2",
        "PSEUDO": "1",
        "SEED": "4",
        "SPLIT_BYTES": "200000",  # the tiny LM is about 600 kB: it comes back in parts, as a large one would
    }
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train_audio.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr + p.stdout
    parts = sorted(out.glob("lm.safetensors.part-*"))
    assert len(parts) >= 3 and not (out / "lm.safetensors").exists()
    (out / "lm.safetensors").write_bytes(b"".join(f.read_bytes() for f in parts))
    model, meta = load_lm(out / "lm")
    assert meta["training"]["steps"] == 3 and meta["training"]["device"] == "cpu"
    tcfg = meta["training"]["train_config"]
    assert tcfg["instrument_weights"] == [["harp", 2.0]] and tcfg["pseudo_labels"] is True and tcfg["seed"] == 4
    assert "2 pseudo-labelled" in meta["training"]["data"], meta["training"]["data"]  # the pack carried them
    assert meta["codec"]["sha256"] == sig["sha256"] and str(pack) in meta["training"]["data"]
    assert '"steps": 3' in (out / "train.log").read_text()

    empty = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_train_audio.sh")],
        env={**env, "PACK": str(tmp_path / "nothing")},
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2 and "no pack at" in empty.stderr
