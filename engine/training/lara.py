"""`moodlane train audio`: LARA-Gen's LM on the encoded audio (`moodlane data encode`).

Each example is a random crop of one clip's codec frames, in the delay pattern, with:
* its text: the render's description ("solo warm pad, fast, middle register, dense"), or
  half the time only its instrument ("solo warm pad"), so tempo and density are left to
  the emotion; in the text-prompting baseline, the emotion's words are appended instead
  of the AV tokens (`emotion="text"`);
* its valence/arousal at every step: VGMIDI's per-bar curves where the clip has them,
  the EMOPIA quadrant's centre otherwise; unlabelled clips (POP909) train with the AV
  tokens dropped;
* the external model's features of the real audio at each step (the LARA target),
  standardised by the training set's mean and standard deviation per feature: raw musicnn
  features of two random windows already have cosine 0.55, standardised ones 0.01, so the
  cosine measures what is particular to the music at that time.
Text and AV are dropped independently (classifier-free guidance can then use either).

Loss: cross-entropy over the K codebooks + lambda x the LARA loss (REPA's negative cosine
through the proxy MLP on block `lara_layer`). AdamW, warm-up then cosine decay.
Resumable from OUT/train_state.pt; CPU, one CUDA GPU (bf16), or several through torchrun
(DistributedDataParallel: each rank its own crops, gradients averaged, rank 0 writes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from moodlane.engine.atomic import save_train_state
from moodlane.engine.audio.checkpoint import save_lm
from moodlane.engine.audio.generator import emotion_words
from moodlane.engine.audio.lm import TINY_LM, LaraLM, LMConfig, ce_loss, ce_per_crop, delay, lara_loss
from moodlane.engine.emotion import Emotion
from moodlane.engine.training.audio_data import label_at, read_manifest
from moodlane.engine.training.data import DataError

log = logging.getLogger(__name__)
EMOTIONS = ("av", "text")
TEXTS = "texts.npz"  # a pack's text table (`TextTable`)


@dataclass(frozen=True)
class LaraTrainConfig:
    steps: int = 3000
    batch_size: int = 16
    lr: float = 6e-4
    warmup: int = 100
    weight_decay: float = 0.05
    lara_weight: float = 0.5  # lambda (0: cross-entropy only)
    emotion: str = "av"  # "av": the AV encoder; "text": the emotion as words (the paper's baseline)
    p_text_drop: float = 0.3
    p_av_drop: float = 0.3
    p_short_text: float = 0.5  # the instrument only, without tempo/register/density words
    label_jitter: float = 0.3  # quadrant-centre labels (EMOPIA) spread over their quadrant's middle (0: as labelled)
    save_every: int = 250
    # a wall-clock budget (0: none): training ends after `steps` or this many minutes, whichever
    # comes first, and the learning rate decays over whichever it is nearer (a lent GPU's call
    # has a fixed time, and its speed is not known beforehand)
    minutes: float = 0.0
    # crops drawn per hour of an instrument's clips, relative to 1 (("acoustic piano", 3.0),):
    # the renders spread 8 instruments evenly, so the default prompt's piano is an eighth of
    # the data unless weighted; the valid split is never weighted
    instrument_weights: tuple[tuple[str, float], ...] = ()
    # unlabelled clips (POP909) train with the symbolic judge's per-bar reading of their MIDI
    # (`moodlane data pseudo-label`) instead of with the emotion dropped; valid stays as labelled
    pseudo_labels: bool = False
    # with pseudo_labels: spread them this many times about their mean (clipped to [-1, 1]). The
    # judge's readings are a regression's, shrunk toward the mean (valence std 0.21 over POP909's
    # bars, where EMOPIA's labels sit at +-0.6), so a sad pop song otherwise reads as neutral
    pseudo_stretch: float = 1.0
    # with pseudo_labels: a mode twin's label moves this many times as far from its original's
    # as the judge read (clipped to [-1, 1]). The judged change is modest (about -0.18 for a
    # major Q1 song played in minor), though mode is the attribute valence depends on most
    twin_stretch: float = 1.0
    # valence contrast (0: off): on each crop with a heard valence (listeners' labels or a
    # mode twin, `Crop.heard`), the cross-entropy with the valence negated must exceed the
    # cross-entropy with the true emotion by contrast_margin x |valence| nats a token; the
    # shortfall (a hinge) is added with this weight. Cross-entropy alone leaves the label
    # little to do: a crop's own first frames predict most of its tokens, so lara10's two
    # cross-entropies differed by under 0.0001 nats a token on held-out heard crops
    # (`valid_valence_gap`). The hinge asks the likelihood itself to tell sad from happy, and
    # stops asking at the margin
    valence_contrast: float = 0.0
    contrast_margin: float = 0.05
    valid_crops: int = 48
    seed: int = 0
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.emotion not in EMOTIONS:
            raise ValueError(f"emotion must be one of {EMOTIONS}, got {self.emotion!r}")
        if not self.lara_weight >= 0:
            raise ValueError("lara_weight must be >= 0")
        if not self.minutes >= 0:
            raise ValueError("minutes must be >= 0")
        if not self.pseudo_stretch > 0:
            raise ValueError(f"pseudo_stretch must be > 0, got {self.pseudo_stretch}")
        if not self.twin_stretch > 0:
            raise ValueError(f"twin_stretch must be > 0, got {self.twin_stretch}")
        if not (self.valence_contrast >= 0 and self.contrast_margin > 0):
            raise ValueError(f"valence_contrast must be >= 0 and contrast_margin > 0, got {self.valence_contrast}, {self.contrast_margin}")
        if (self.pseudo_stretch != 1.0 or self.twin_stretch != 1.0) and not self.pseudo_labels:
            raise ValueError("pseudo_stretch and twin_stretch act on pseudo-labels: set pseudo_labels too")
        if any(not w > 0 for _, w in self.instrument_weights):
            raise ValueError(f"instrument weights must be > 0, got {dict(self.instrument_weights)}")


class Crop(NamedTuple):
    codes: np.ndarray  # (K, frames)
    va: np.ndarray  # (steps, 2), NaN if unlabelled
    features: np.ndarray  # (steps, D)
    text: str
    heard: bool  # labelled by listeners (EMOPIA, VGMIDI) or a mode twin of such a clip, not by the judge alone


@dataclass
class Clip:
    rec: dict
    codes: np.ndarray  # (K, F) uint16
    feature_times: np.ndarray
    features: np.ndarray  # (N, D) float16, or float32 from a pack
    frame_rate: float


class TokenSet:
    """The encoded clips of one split, in memory (codes are small: 29 h at 4 x 75 x 2 bytes/s
    is 63 MB), and random crops of them."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        n_q: int,
        min_frames: int,
        weights: tuple[tuple[str, float], ...] = (),
        pseudo: bool = False,
        stretch: float = 1.0,
        twin_stretch: float = 1.0,
    ) -> None:
        root = Path(root)
        self.pseudo = pseudo  # read `pseudo_labels` where a clip has no labels
        self.clips: list[Clip] = []
        self.codecs: dict[tuple[str | None, str | None], Path] = {}  # (SHA-256, name) -> a file of it
        for r in read_manifest(root):
            f = root / "encoded" / (r["id"] + ".npz")
            if r["split"] != split or not f.is_file():
                continue
            d = np.load(f)
            if d["codes"].shape[1] < min_frames or d["codes"].shape[0] < n_q:
                continue
            codec = (str(d["codec_sha256"]) or None, str(d["codec_name"])) if "codec_sha256" in d.files else (None, None)
            self.codecs.setdefault(codec, f)
            self.clips.append(Clip(r, d["codes"][:n_q], d["feature_times"], dequantise(d), float(d["frame_rate"])))
        if not self.clips:
            raise ValueError(f"{root}/encoded: no {split} clips of {min_frames}+ frames (run `moodlane data encode --out {root}` first)")
        if len(self.codecs) > 1:
            seen = ", ".join(f"{n or '?'} ({(s or 'unrecorded')[:12]}, e.g. {f.name})" for (s, n), f in self.codecs.items())
            raise ValueError(f"{root}/encoded mixes the tokens of several codecs: {seen}; encode again with one codec")
        feats = np.concatenate([c.features for c in self.clips]).astype(np.float32)
        self.feature_mean, self.feature_std = feats.mean(0), feats.std(0) + 1e-3
        w = np.array([c.codes.shape[1] for c in self.clips], np.float64)
        self.hours = float(w.sum() / self.clips[0].frame_rate / 3600)
        by, have = dict(weights), {c.rec.get("instrument") for c in self.clips}
        if unknown := sorted(set(by) - have):
            raise DataError(f"{root}: no {split} clips of instrument {unknown}; the clips have {sorted(map(str, have))}")
        w *= np.array([by.get(c.rec.get("instrument"), 1.0) for c in self.clips])
        self.p = w / w.sum()
        self.labelled = sum(1 for c in self.clips if c.rec.get("labels"))
        self.pseudo_labelled = sum(1 for c in self.clips if pseudo and not c.rec.get("labels") and c.rec.get("pseudo_labels"))
        if pseudo and not self.pseudo_labelled:
            raise DataError(f"{root}: no {split} clip has pseudo_labels: run `moodlane data pseudo-label --out {root}` first")
        if pseudo and twin_stretch != 1.0:  # first: a twin's change is read against its original's label
            self._stretch_twins(twin_stretch)
        if pseudo and stretch != 1.0:
            self._stretch_pseudo(stretch)

    def _stretch_twins(self, k: float) -> None:
        """Move each mode twin's label `k` times as far from its original's label (at the twin's
        bars) as the judge read, clipped to [-1, 1]; a twin whose original is not in this split,
        or has no label, keeps its own. The manifest's records are left as they are."""
        by_id = {c.rec["id"]: c.rec for c in self.clips}
        for c in self.clips:
            base = by_id.get(c.rec.get("twin_of"))
            if base is None or c.rec.get("labels") or not c.rec.get("pseudo_labels"):
                continue
            pts = np.asarray(c.rec["pseudo_labels"]["points"], np.float64).reshape(-1, 3)
            orig = label_at(base, pts[:, 0], pseudo=True)
            has = ~np.isnan(orig).any(1)
            pts[has, 1:3] = np.clip(orig[has] + k * (pts[has, 1:3] - orig[has]), -1.0, 1.0)
            c.rec = {**c.rec, "pseudo_labels": {**c.rec["pseudo_labels"], "points": pts.tolist()}}

    def _stretch_pseudo(self, k: float) -> None:
        """Spread the pseudo-labels `k` times about their mean over this split's bars (per axis,
        clipped to [-1, 1]); the manifest's records are left as they are."""
        held = [c for c in self.clips if not c.rec.get("labels") and c.rec.get("pseudo_labels")]
        mean = np.concatenate([np.asarray(c.rec["pseudo_labels"]["points"], np.float64)[:, 1:3] for c in held]).mean(0)
        for c in held:
            pts = np.asarray(c.rec["pseudo_labels"]["points"], np.float64)
            pts[:, 1:3] = np.clip(mean + k * (pts[:, 1:3] - mean), -1.0, 1.0)
            c.rec = {**c.rec, "pseudo_labels": {**c.rec["pseudo_labels"], "points": pts.tolist()}}

    def crop(self, rng: np.random.Generator, frames: int, steps: int, jitter: float = 0.0) -> Crop:
        """codes (K, frames), VA per step (steps, 2; NaN if unlabelled), features per step
        (steps, D; the frame's, held after the last frame), text, heard. `jitter`: a clip labelled
        only by its quadrant's centre gets one uniform offset of up to this per coordinate,
        kept inside the quadrant (a coarse label is a region, not a point); per-bar curves
        (VGMIDI) are kept as they are."""
        c = self.clips[rng.choice(len(self.clips), p=self.p)]
        start = int(rng.integers(0, c.codes.shape[1] - frames + 1))
        t = (start + np.minimum(np.arange(steps), frames - 1) + 0.5) / c.frame_rate
        va = label_at(c.rec, t, self.pseudo).astype(np.float32)
        if jitter > 0 and (c.rec.get("labels") or {}).get("kind") == "quadrant":
            centre = va[0]
            moved = centre + rng.uniform(-jitter, jitter, 2)
            va[:] = np.where(centre >= 0, np.clip(moved, 0.05, 1.0), np.clip(moved, -1.0, -0.05))
        feats = interp_rows(c.feature_times, c.features, t)
        heard = bool(c.rec.get("labels")) or "twin_of" in c.rec
        return Crop(c.codes[:, start : start + frames].astype(np.int64), va, feats, c.rec["text"], heard)


def interp_rows(times: np.ndarray, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rows (N, D) at `times`, linearly interpolated at `t` and held at the ends."""
    if len(times) == 1:
        return np.repeat(rows[:1].astype(np.float32), len(t), axis=0)
    j = np.clip(np.searchsorted(times, t) - 1, 0, len(times) - 2)
    w = np.clip((t - times[j]) / np.maximum(times[j + 1] - times[j], 1e-9), 0.0, 1.0)[:, None]
    return ((1 - w) * rows[j] + w * rows[j + 1]).astype(np.float32)


def dequantise(d) -> np.ndarray:
    """A token file's window features (N, D): as stored (float16), or from a pack's uint8
    (`moodlane data pack`) as float32."""
    if "features" in d.files:
        return d["features"]
    return d["features_lo"][None, :] + d["features_q"].astype(np.float32) * d["features_step"][None, :]


def pad_states(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-text states (L_i, D) as a batch (B, max L, D) and its mask (B, max L)."""
    out = torch.zeros(len(rows), max(len(r) for r in rows), rows[0].shape[1])
    mask = torch.zeros(out.shape[:2], dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)], mask[i, : len(r)] = r, True
    return out, mask


class TextBank:
    """Frozen text-encoder states per distinct text, computed once."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.cache: dict[str, torch.Tensor] = {}

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        new = sorted({t for t in texts if t not in self.cache})
        if new:
            states, mask = self.encoder(new)
            for i, t in enumerate(new):
                self.cache[t] = states[i, mask[i]].float()
        return pad_states([self.cache[t] for t in texts])


class TextTable:
    """A text encoder's states looked up from a pack's `texts.npz` (`moodlane data pack`),
    where no encoder can load: the encoder's call, (texts) -> (states, mask), for the texts
    it holds."""

    def __init__(self, path: str | Path) -> None:
        with np.load(path) as d:
            self.encoder = str(d["encoder"])
            names = json.loads(str(d["texts"]))
            states, lengths = d["states"], d["lengths"]
        self.rows = {t: torch.from_numpy(states[i, : lengths[i]].astype(np.float32)) for i, t in enumerate(names)}

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [t for t in texts if t not in self.rows]
        if missing:
            raise KeyError(f"the pack's text table has no states for {missing[:3]} (pack the data again with this text)")
        return pad_states([self.rows[t] for t in texts])


def training_text(text: str, va: np.ndarray, emotion: str, short: bool) -> str:
    base = text.split(",")[0] if short else text
    if emotion == "text" and not np.isnan(va).any():
        v, a = np.clip(va, -1, 1)
        base = f"{base}, {emotion_words(Emotion(float(v), float(a)))}"
    return base


def training_texts(recs: list[dict]) -> list[str]:
    """Every text the LM sees in training with the AV encoder: each clip's description, and
    its instrument alone."""
    nan = np.full(2, np.nan)
    return sorted({training_text(r["text"], nan, "av", short) for r in recs for short in (False, True)})


@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    va: torch.Tensor
    av_on: torch.Tensor
    features: torch.Tensor
    valid: torch.Tensor
    heard: torch.Tensor  # (B,) bool: `Crop.heard`, the crops the valence contrast may use

    def to(self, dev: torch.device) -> Batch:
        return Batch(**{k: v.to(dev) for k, v in self.__dict__.items()})


def make_batch(
    data: TokenSet,
    texts: TextBank,
    cfg: LMConfig,
    tc: LaraTrainConfig,
    rng: np.random.Generator,
    n: int,
    dropout: bool = True,
    norm: tuple[np.ndarray, np.ndarray] | None = None,
) -> Batch:
    """`n` crops, conditions (with dropout) and LARA targets standardised by `norm`, the
    training set's (mean, std) (default: `data`'s own)."""
    steps = cfg.context
    frames = steps - cfg.n_q + 1
    codes, vas, feats, txt, heard = [], [], [], [], []
    for _ in range(n):
        c, va, f, text, h = data.crop(rng, frames, steps, tc.label_jitter if dropout else 0.0)
        heard.append(h)
        short = bool(rng.random() < tc.p_short_text) if dropout else False
        codes.append(c)
        vas.append(va)
        feats.append(f)
        txt.append(training_text(text, va[steps // 2], tc.emotion, short))
    inputs, targets = delay(torch.from_numpy(np.stack(codes)), cfg.card)
    text, mask = texts.batch(txt)
    va = torch.from_numpy(np.stack(vas))
    labelled = ~torch.isnan(va).any(dim=2).any(dim=1)
    av_on = labelled & torch.tensor(tc.emotion == "av")
    if dropout:
        mask = mask & torch.from_numpy(rng.random(n) >= tc.p_text_drop)[:, None]
        av_on = av_on & torch.from_numpy(rng.random(n) >= tc.p_av_drop)
    valid = (torch.arange(steps) < frames)[None].expand(n, -1).float()
    mean, std = norm if norm is not None else (data.feature_mean, data.feature_std)
    feats = torch.from_numpy((np.stack(feats) - mean) / std).float()
    return Batch(inputs, targets, text, mask, torch.nan_to_num(va).clamp(-1, 1), av_on, feats, valid, torch.tensor(heard))


FLIP_VALENCE = (-1.0, 1.0)


@dataclass
class Losses:
    ce: torch.Tensor
    lara: torch.Tensor  # minus the cosine
    contrast: torch.Tensor  # the valence hinge (0 when not asked for, or no crop has a heard valence)
    gap: torch.Tensor  # mean over the contrasted crops: cross-entropy with valence negated minus true, nats a token (nan: none)


def losses(model: LaraLM, b: Batch, layer: int, margin: float | None = None) -> Losses:
    """Cross-entropy and LARA; with `margin`, also the cross-entropy of each crop with a heard
    valence (`Crop.heard`, AV on) with that valence negated (a second pass over those crops)
    and the hinge mean(relu(margin x |valence| - gap)). POP909's pseudo-labels are left to
    cross-entropy: their pop texture is what the predictor took for valence in lara8 (stop 28),
    and contrasting them would teach that texture as valence again."""
    mem = model.memory(b.text, b.text_mask, b.va, b.av_on)
    logits, hidden = model(b.inputs, mem, hidden_layer=layer)
    logits = logits.float()
    ce, la = ce_loss(logits, b.targets), lara_loss(model.proxy, hidden.float(), b.features, b.valid)
    zero, nan = ce.new_zeros(()), ce.new_full((), float("nan"))
    size = b.va[..., 0].abs().mean(1)  # (B,) the crop's mean |valence|
    sel = b.av_on & b.heard & (size > 0.05)
    if margin is None or not bool(sel.any()):
        return Losses(ce, la, zero, nan)
    flipped = b.va[sel] * b.va.new_tensor(FLIP_VALENCE)
    other, _ = model(b.inputs[sel], model.memory(b.text[sel], b.text_mask[sel], flipped, b.av_on[sel]))
    gap = ce_per_crop(other.float(), b.targets[sel]) - ce_per_crop(logits[sel], b.targets[sel])
    return Losses(ce, la, torch.relu(margin * size[sel] - gap).mean(), gap.mean())


class LossStep(torch.nn.Module):
    """The training step's forward (memory, LM, proxy) as one module, so
    DistributedDataParallel sees every parameter the losses use."""

    def __init__(self, model: LaraLM, layer: int, margin: float | None = None) -> None:
        super().__init__()
        self.model, self.layer, self.margin = model, layer, margin

    def forward(self, b: Batch) -> Losses:
        return losses(self.model, b, self.layer, self.margin)


def _done(step: int, seconds: float, tc: LaraTrainConfig) -> float:
    """How far training is, 0 to 1: by steps, or by time where `tc.minutes` is nearer."""
    frac = step / tc.steps
    return max(frac, seconds / (60.0 * tc.minutes)) if tc.minutes else frac


def _lr(step: int, tc: LaraTrainConfig, done: float | None = None) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    frac = (step - tc.warmup) / max(1, tc.steps - tc.warmup) if done is None else done
    return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun, initialising the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world


class _SigCodec:
    """A codec signature (`checkpoint.codec_signature`) where `check_codec` wants a codec."""

    def __init__(self, sig: dict) -> None:
        self.sha256 = sig.get("sha256")
        self.label = f"{sig.get('name')} ({(self.sha256 or 'unrecorded')[:12]})"


def train_lara(
    audio: str | Path,
    out: str | Path,
    export_stem: str | Path,
    codec_sig: dict,
    tc: LaraTrainConfig = LaraTrainConfig(),
    cfg: LMConfig = LMConfig(),
    text_encoder=None,
    init: LaraLM | None = None,
    init_record: dict | None = None,
    resume: bool = False,
    command: str = "",
    progress: bool = True,
) -> dict:
    """Train (or resume) and export `export_stem`; returns the training record."""
    rank, world = _dist()
    if tc.minutes and world > 1:
        raise ValueError("a time budget (minutes) trains on one process: ranks would stop at different steps")
    out, stem = Path(out), Path(export_stem)
    out.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if tc.device == "cuda" and world > 1 else tc.device)
    torch.manual_seed(tc.seed)
    if text_encoder is None:
        from moodlane.engine.audio.checkpoint import load_text_encoder

        text_encoder = load_text_encoder(cfg.text_encoder)
    frames = cfg.context - cfg.n_q + 1
    train = TokenSet(audio, "train", cfg.n_q, frames, tc.instrument_weights, tc.pseudo_labels, tc.pseudo_stretch, tc.twin_stretch)
    valid = TokenSet(audio, "valid", cfg.n_q, frames)
    from moodlane.engine.audio.codec import check_codec

    for ts in (train, valid):
        (sha, name), example = next(iter(ts.codecs.items()))
        if sha != codec_sig.get("sha256"):  # the tokens must be the codec's the LM is trained for
            check_codec(sha, name, _SigCodec(codec_sig), f"tokens in {example.parent} (e.g. {example.name})")
    texts = TextBank(text_encoder)
    vrng = np.random.default_rng(12345)
    norm = (train.feature_mean, train.feature_std)
    vbatches = [make_batch(valid, texts, cfg, tc, vrng, 8, dropout=False, norm=norm) for _ in range(max(1, tc.valid_crops // 8))]
    model = (init if init is not None else LaraLM(cfg)).to(dev).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": other, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.95)
    )
    state_path = out / "train_state.pt"
    step, history, wall = 0, [], 0.0
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=dev, weights_only=False)
        if st["config"] != cfg.to_json() or st["train_config"]["emotion"] != tc.emotion:
            raise ValueError(f"{state_path} was trained with another model config or emotion mode: use another --out")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, history, wall = st["step"], st["history"], st["wall_s"]
    step_fn: torch.nn.Module = LossStep(model, cfg.lara_layer, tc.contrast_margin if tc.valence_contrast > 0 else None)
    if world > 1:  # data parallel: DDP averages the ranks' gradients (dropped AV or text leave some unused)
        from torch.nn.parallel import DistributedDataParallel

        step_fn = DistributedDataParallel(step_fn, find_unused_parameters=True)
    rng = np.random.default_rng([tc.seed, step, rank])
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    bar = tqdm(total=tc.steps, initial=step, desc="train audio LM", disable=not progress or rank != 0)
    t_start, acc = time.time(), []

    @torch.no_grad()
    def evaluate() -> dict:
        model.eval()
        ce, la, gap = [], [], []
        for b in vbatches:
            with amp:
                r = losses(model, b.to(dev), cfg.lara_layer, tc.contrast_margin)
            ce.append(r.ce.item())
            la.append(-r.lara.item())
            gap.append(r.gap.item())
        model.train()
        gap = [g for g in gap if not np.isnan(g)]  # batches without a heard crop have none
        return {
            "valid_ce": round(float(np.mean(ce)), 4),
            "valid_lara_cos": round(float(np.mean(la)), 4),
            "valid_valence_gap": round(float(np.mean(gap)), 5) if gap else None,
        }

    def record(final: dict | None = None) -> dict:
        return {
            "command": command,
            "data": f"{audio}/encoded: train {len(train.clips)} clips ({train.labelled} labelled"
            + (f", {train.pseudo_labelled} pseudo-labelled" if train.pseudo else "")
            + f"), {train.hours:.2f} h; "
            f"valid {len(valid.clips)} clips",
            "steps": step,
            "batch": f"{tc.batch_size * world} x {cfg.context} steps ({frames / cfg.frame_rate:.1f} s)",
            "wall_s": round(wall + time.time() - t_start, 1),
            "device": f"{dev} x {world}" if world > 1 else str(dev),
            "train_config": asdict(tc),
            "final": final or (history[-1] if history else None),
        }

    def save() -> None:
        if rank != 0:
            return
        save_train_state(state_path, model, opt, step, history, wall + time.time() - t_start, config=cfg.to_json(), train_config=asdict(tc))
        meta = {"codec": codec_sig, "emotion": tc.emotion, "training": record(), "history": history}
        if init_record:  # a warm start: how the weights it started from were trained
            meta["init"] = {k: init_record.get(k) for k in ("training", "history", "init")}
        save_lm(stem, model, meta)

    done = _done(step, wall, tc)
    while done < 1.0:
        for g in opt.param_groups:
            g["lr"] = _lr(step, tc, done if tc.minutes else None)
        b = make_batch(train, texts, cfg, tc, rng, tc.batch_size, norm=norm).to(dev)
        with amp:
            r = step_fn(b)
        ce, la = r.ce, r.lara
        loss = ce + tc.lara_weight * la if tc.lara_weight > 0 else ce
        if tc.valence_contrast > 0:
            loss = loss + tc.valence_contrast * r.contrast
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc.append((ce.item(), -la.item(), r.contrast.item()))
        bar.update(1)
        done = _done(step, wall + time.time() - t_start, tc)
        if step % tc.save_every == 0 or done >= 1.0:
            m = np.mean(acc, axis=0)
            acc = []
            hist = {"step": step, "train_ce": round(float(m[0]), 4), "train_lara_cos": round(float(m[1]), 4)}
            if tc.valence_contrast > 0:
                hist["train_contrast"] = round(float(m[2]), 5)
            history.append({**hist, **evaluate()})
            bar.set_postfix(ce=f"{m[0]:.3f}", valid=f"{history[-1]['valid_ce']:.3f}")
            log.info("step %d %s", step, history[-1])
            save()
    bar.close()
    return record()


def tiny_setup(tc: LaraTrainConfig, cfg: LMConfig, codec_sig: dict) -> tuple[LaraTrainConfig, LMConfig]:
    """The smoke-test sizes: a tiny LM for the given codec, a few crops."""
    cfg = replace(
        TINY_LM,
        n_q=codec_sig["n_q"],
        card=codec_sig["bins"],
        frame_rate=codec_sig["frame_rate"],
        feature_dim=cfg.feature_dim,
        text_dim=cfg.text_dim,
        context=24,
    )
    return replace(tc, batch_size=2, valid_crops=8, save_every=max(1, min(tc.save_every, tc.steps))), cfg
