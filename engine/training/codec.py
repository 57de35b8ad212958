"""`moodlane train codec`: EnCodec-family codec on the rendered audio (manifest of
`moodlane data render-audio`).

Loss: L1 on the waveform + EnCodec's multi-scale mel loss + the quantiser's commitment
penalty; no adversarial loss (not tried: a discriminator would roughly double the cost of a
step on 2 cores). Bandwidth dropout as in EnCodec: each batch uses 2, 4 or all 8 codebooks.
AdamW (betas 0.5, 0.9, as EnCodec). Resumable from OUT/train_state.pt; the same command runs
on a CUDA GPU (`--device cuda`, bf16 autocast).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from moodlane.engine.atomic import save_stem, save_train_state
from moodlane.engine.audio.codec import TINY, CodecConfig, build_model, export_state
from moodlane.engine.audio.losses import multiscale_mel_loss
from moodlane.engine.audio.music_model import resample
from moodlane.engine.training.audio_data import read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodecTrainConfig:
    steps: int = 6000
    batch_size: int = 8
    segment_s: float = 1.0
    lr: float = 1e-3
    mel_weight: float = 1.0
    l1_weight: float = 0.5
    level_db: tuple[float, float] = (-40.0, -12.0)  # each crop is set to a random RMS level in this range
    commit_weight: float = 1.0
    save_every: int = 250
    max_hours: float = 12.0  # training audio held in memory (int16)
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch threads on CPU (0: torch's default)


def load_bank(root: str | Path, split: str, sample_rate: int, max_hours: float, seed: int = 0) -> list[np.ndarray]:
    """Clips of one split as int16 arrays at `sample_rate` (resampled if rendered at another),
    shuffled by seed, up to `max_hours` of audio."""
    import soundfile as sf

    recs = [r for r in read_manifest(root) if r["split"] == split]
    if not recs:
        raise ValueError(f"{root}: no {split} clips in the manifest")
    random.Random(seed).shuffle(recs)
    bank, total = [], 0.0
    for r in recs:
        if total >= max_hours * 3600:
            break
        pcm, sr = sf.read(Path(root) / r["path"], dtype="int16")
        if sr != sample_rate:
            pcm = np.clip(resample(pcm.astype(np.float32), sr, sample_rate), -32768, 32767).astype(np.int16)
        bank.append(pcm)
        total += len(pcm) / sample_rate
    return bank


class Crops:
    """Random fixed-length crops, clips weighted by length, near-silent crops redrawn, each
    set to a random loudness (so the codec works at any level, not only the renders')."""

    def __init__(self, bank: list[np.ndarray], length: int, seed: int, level_db: tuple[float, float] = (-40.0, -12.0)) -> None:
        self.bank = [b for b in bank if len(b) > length]
        if not self.bank:
            raise ValueError("no clip is longer than one training segment")
        w = np.array([len(b) for b in self.bank], np.float64)
        self.p = w / w.sum()
        self.length = length
        self.level_db = level_db
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = np.zeros((n, self.length), np.float32)
        for i in range(n):
            for _ in range(10):
                b = self.bank[self.rng.choice(len(self.bank), p=self.p)]
                s = self.rng.integers(0, len(b) - self.length)
                x = b[s : s + self.length].astype(np.float32) / 32768.0
                rms = np.sqrt(np.mean(x**2))
                if rms > 1e-3:
                    break
            out[i] = x * 10 ** (self.rng.uniform(*self.level_db) / 20) / max(rms, 1e-3)
        return torch.from_numpy(out)[:, None, :]


def init_weights(model: torch.nn.Module) -> None:
    """Unit-gain start: every weight-normed convolution gets g = 1 per output channel and no
    bias. With PyTorch's default init the SEANet stack attenuates the signal about 100x per
    stage, so at step 0 the decoder's output does not depend on its input, and on a CPU budget
    of a few thousand steps the encoder collapses to a constant (measured here: codes of one
    value, the same output at every bandwidth)."""
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "weight_g"):
                mod.weight_g.fill_(1.0)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()


def _save_export(model: torch.nn.Module, cfg: CodecConfig, stem: Path, record: dict) -> None:
    from safetensors.torch import save

    state = {k: v for k, v in export_state(model).items() if not k.endswith(("cluster_size", "embed_avg"))}
    save_stem(stem, save(state), {"config": cfg.to_json(), "training": record})


def train_codec(
    data: str | Path,
    out: str | Path,
    export_stem: str | Path,
    tc: CodecTrainConfig = CodecTrainConfig(),
    cfg: CodecConfig = CodecConfig(),
    resume: bool = False,
    tiny: bool = False,
    command: str = "",
    progress: bool = True,
) -> dict:
    if tiny:
        cfg = TINY
        tc = replace(tc, batch_size=2, segment_s=0.25, max_hours=0.05)
    out, stem = Path(out), Path(export_stem)
    out.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    dev = torch.device(tc.device)
    bank = load_bank(data, "train", cfg.sample_rate, tc.max_hours, tc.seed)
    crops = Crops(bank, int(tc.segment_s * cfg.sample_rate), tc.seed, tc.level_db)
    model = build_model(cfg)
    init_weights(model)
    model = model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(0.5, 0.9))
    state_path = out / "train_state.pt"
    step, history, wall = 0, [], 0.0
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=dev, weights_only=False)
        if st["config"] != cfg.to_json():
            raise ValueError(f"{state_path} was trained with another codec config")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, history, wall = st["step"], st["history"], st["wall_s"]
        crops.rng = np.random.default_rng(tc.seed + step)
    n_qs = [cfg.codebooks_for(b) for b in cfg.bandwidths]
    hours = sum(len(b) for b in bank) / cfg.sample_rate / 3600
    rng = random.Random(tc.seed + step)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    bar = tqdm(total=tc.steps, initial=step, desc="train codec", disable=not progress)
    t_start, acc = time.time(), []

    def record() -> dict:
        return {
            "command": command,
            "data": f"{data}: train split, {len(bank)} clips, {hours:.2f} h in memory",
            "steps": step,
            "batch": f"{tc.batch_size} x {tc.segment_s} s",
            "wall_s": round(wall + time.time() - t_start, 1),
            "device": str(dev),
            "train_config": asdict(tc),
            "final": history[-1] if history else None,
        }

    while step < tc.steps:
        x = crops.batch(tc.batch_size).to(dev)
        n_q = rng.choice(n_qs)
        with amp:
            emb = model.encoder(x)
            q = model.quantizer.vq(emb, n_q=n_q)
            y = model.decoder(q[0])[..., : x.shape[-1]]
        commit = q[2].float().mean()
        mel = multiscale_mel_loss(y[:, 0].float(), x[:, 0], cfg.sample_rate)
        l1 = (y.float() - x).abs().mean()
        loss = tc.mel_weight * mel + tc.l1_weight * l1 + tc.commit_weight * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc.append((mel.item(), l1.item(), commit.item()))
        bar.update(1)
        if step % tc.save_every == 0 or step == tc.steps:
            m = np.mean(acc, axis=0)
            acc = []
            history.append({"step": step, "mel": round(float(m[0]), 4), "l1": round(float(m[1]), 5), "commit": round(float(m[2]), 5)})
            bar.set_postfix(mel=f"{m[0]:.3f}")
            log.info("step %d %s", step, history[-1])
            save_train_state(state_path, model, opt, step, history, wall + time.time() - t_start, config=cfg.to_json())
            _save_export(model, cfg, stem, record())
    bar.close()
    return record()
