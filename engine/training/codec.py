"""`moodlane train codec`: a codec on the rendered audio (manifest of `moodlane data
render-audio`), of either family (`--kind spectral`, the default, or `seanet`).

* spectral (`engine.audio.spectral`): L1 on the log STFT magnitude (2048-sample window,
  linear frequency axis: every partial is a target) + the quantiser's commitment penalty.
  Training starts from a PCA of log-magnitude frames (`SpectralCodecModel.init_from_pca`):
  see docs/audio/codec.md. A quarter of the clips of each batch skip quantisation (Mimi's
  trick: the decoder keeps learning fine structure from the unquantised latent). AdamW,
  warm-up then cosine; the PCA-initialised linear maps at 1/100 of the learning rate.
* seanet: L1 on the waveform + EnCodec's multi-scale mel loss + commitment (the first
  shipped codec; it lost the notes).

Bandwidth dropout as in EnCodec: each batch uses 2, 4 or all 8 codebooks. Resumable from
OUT/train_state.pt; the same command runs on a CUDA GPU (`--device cuda`, bf16 autocast).
"""

from __future__ import annotations

import json
import logging
import math
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
from moodlane.engine.audio.spectral import TINY_SPECTRAL, SpectralCodecConfig
from moodlane.engine.training.audio_data import read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodecTrainConfig:
    steps: int = 6000
    batch_size: int = 16
    segment_s: float = 1.0
    lr: float = 1e-3
    warmup: int = 200  # spectral: steps of linear learning-rate warm-up, then a cosine down to 0.1x
    bypass: float = 0.25  # spectral: share of clips whose latent skips quantisation
    linear_lr_scale: float = 0.01  # spectral: learning rate of the PCA-initialised analysis/synthesis maps, relative
    pca_seconds: float = 1800.0  # spectral: audio whose log-magnitude frames set the PCA and codebook init
    mel_weight: float = 1.0
    l1_weight: float = 0.5
    level_db: tuple[float, float] = (-40.0, -12.0)  # each crop is set to a random RMS level in this range
    commit_weight: float = 1.0
    spectral_commit_weight: float = 0.1  # the spectral latent starts as scaled PCA: keep its encoder near it
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


@torch.no_grad()
def pca_frames(crops: Crops, model, seconds: float) -> torch.Tensor:
    """(N, freq_bins) log-magnitude frames of random crops, about `seconds` of audio."""
    n = max(1, int(seconds * model.cfg.sample_rate / crops.length / 16))
    return torch.cat([model.features(crops.batch(16)[:, 0]).transpose(1, 2).reshape(-1, model.cfg.freq_bins) for _ in range(n)])


def seanet_losses(model, x: torch.Tensor, n_q: int, sample_rate: int, amp) -> tuple[torch.Tensor, ...]:
    """(mel, waveform L1, commitment) of one batch (B, 1, T)."""
    with amp:
        emb = model.encoder(x)
        q = model.quantizer.vq(emb, n_q=n_q)
        y = model.decoder(q[0])[..., : x.shape[-1]]
    mel = multiscale_mel_loss(y[:, 0].float(), x[:, 0], sample_rate)
    return mel, (y.float() - x).abs().mean(), q[2].float().mean()


def spectral_losses(model, x: torch.Tensor, n_q: int, bypass: float, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-magnitude L1, commitment) of one batch (B, T): the decoder's log |STFT| against
    the input's, on the linear frequency axis. A `bypass` share of the clips skip quantisation."""
    with torch.no_grad():
        target = model.features(x)
    with amp:
        emb = model.embed(target)
        q, _, commit = model.quantizer.vq(emb, n_q=n_q)
        keep = (torch.rand(emb.shape[0], 1, 1, device=emb.device) >= bypass).to(emb.dtype)
        y = model.synthesize(keep * q + (1 - keep) * emb)
    return (y.float() - target).abs().mean(), commit.float().mean()


def _save_export(model: torch.nn.Module, cfg: CodecConfig, stem: Path, record: dict) -> None:
    import hashlib

    from safetensors.torch import save

    state = {k: v for k, v in export_state(model).items() if not k.endswith(("cluster_size", "embed_avg"))}
    weights = save(state)
    save_stem(stem, weights, {"config": cfg.to_json(), "weights_sha256": hashlib.sha256(weights).hexdigest(), "training": record})


def train_codec(
    data: str | Path,
    out: str | Path,
    export_stem: str | Path,
    tc: CodecTrainConfig = CodecTrainConfig(),
    cfg: CodecConfig | SpectralCodecConfig = SpectralCodecConfig(),
    resume: bool = False,
    tiny: bool = False,
    command: str = "",
    progress: bool = True,
) -> dict:
    spectral = cfg.kind == "spectral"
    if tiny:
        cfg = TINY_SPECTRAL if spectral else TINY
        tc = replace(tc, batch_size=2, segment_s=0.25, max_hours=0.05, warmup=1)
    out, stem = Path(out), Path(export_stem)
    out.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    dev = torch.device(tc.device)
    bank = load_bank(data, "train", cfg.sample_rate, tc.max_hours, tc.seed)
    crops = Crops(bank, int(tc.segment_s * cfg.sample_rate), tc.seed, tc.level_db)
    model = build_model(cfg)
    init_record = None
    if spectral and not (resume and (out / "train_state.pt").is_file()):
        init_record = model.init_from_pca(pca_frames(crops, model, tc.pca_seconds))
        log.info("PCA init: %s", init_record)
    elif spectral and stem.with_suffix(".json").is_file():  # resumed: the init is in the record already written
        init_record = json.loads(stem.with_suffix(".json").read_text()).get("training", {}).get("init")
    elif not spectral:
        init_weights(model)
    model = model.to(dev).train()
    if spectral:  # the PCA-initialised linear maps move slowly: Adam's steps of ~lr would erase the basis in a few dozen steps
        linear = [p for n, p in model.named_parameters() if n.startswith(("analysis.", "synthesis."))]
        rest = [p for n, p in model.named_parameters() if not n.startswith(("analysis.", "synthesis."))]
        groups = [{"params": rest, "scale": 1.0}, {"params": linear, "scale": tc.linear_lr_scale}]
        opt = torch.optim.AdamW(groups, lr=tc.lr, betas=(0.8, 0.99), weight_decay=0.0)
    else:
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
            **({"init": init_record} if init_record else {}),
        }

    names = ("logmag_l1", "commit") if spectral else ("mel", "l1", "commit")
    while step < tc.steps:
        x = crops.batch(tc.batch_size).to(dev)
        n_q = rng.choice(n_qs)
        if spectral:
            for g in opt.param_groups:
                g["lr"] = g["scale"] * tc.lr * min((step + 1) / max(tc.warmup, 1), 0.1 + 0.45 * (1 + math.cos(math.pi * step / tc.steps)))
            losses = spectral_losses(model, x[:, 0], n_q, tc.bypass, amp)
            loss = losses[0] + tc.spectral_commit_weight * losses[1]
        else:
            losses = seanet_losses(model, x, n_q, cfg.sample_rate, amp)
            loss = tc.mel_weight * losses[0] + tc.l1_weight * losses[1] + tc.commit_weight * losses[2]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc.append([v.item() for v in losses])
        bar.update(1)
        if step % tc.save_every == 0 or step == tc.steps:
            m = np.mean(acc, axis=0)
            acc = []
            history.append({"step": step, **{k: round(float(v), 5) for k, v in zip(names, m)}})
            bar.set_postfix({names[0]: f"{m[0]:.3f}"})
            log.info("step %d %s", step, history[-1])
            save_train_state(state_path, model, opt, step, history, wall + time.time() - t_start, config=cfg.to_json())
            _save_export(model, cfg, stem, record())
    bar.close()
    return record()
