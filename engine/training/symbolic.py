"""`moodlane train symbolic`: the attribute-conditioned decoder, trained without labels.

Attributes are measured on the music itself (per bar, over a centred window of bars), so
EMOPIA and VGMIDI contribute only their notes here, like POP909. CPU works; with
`torchrun --nproc_per_node N` it runs data-parallel (DDP, NCCL on GPUs, gloo on CPU).
Resumable: `--resume` continues from `OUT/train_state.pt`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from moodlane.engine.atomic import save_torch
from moodlane.engine.symbolic.attributes import INDEX, bar_windows, features, quantile_edges, to_bins
from moodlane.engine.symbolic.checkpoint import save_symbolic
from moodlane.engine.symbolic.mode_rule import mode_twin
from moodlane.engine.symbolic.model import SymbolicConfig, SymbolicLM
from moodlane.engine.symbolic.notes import MidiError, align_to_grid
from moodlane.engine.symbolic.tokens import BAR, bar_index, decode, encode
from moodlane.engine.training.data import Item, all_midi, is_valid_split

log = logging.getLogger(__name__)
# `--song-key`: a key is a property of a song, and on 3-bar windows key profiles are noisy.
# Measured in issue 18 (README): Q3 followed a minor ask better without the mode rule, but the
# map asks sad music only slightly minor, and valence on the VA grid fell (0.54 to 0.37)
SONG_KEY = ("key_major_corr", "key_minor_corr", "mode_major_minus_minor")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000
    batch_size: int = 8
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup: int = 200
    weight_decay: float = 0.1
    attr_dropout: float = 0.15  # per attribute per sequence: teaches "unspecified"
    mode_twins: bool = False  # key-aware data: each training song in its parallel mode too
    # with `mode_twins`: the share of crops that switch to the twin (or back) at a bar line, so
    # the context says one mode and the attributes, then the notes, the other
    twin_splice: float = 0.0
    song_key: bool = False  # the key attributes (`SONG_KEY`) measured over the whole song, not per window
    eval_every: int = 250
    eval_batches: int = 20
    seed: int = 1337


def _piece(
    item: Item, attributes: tuple[str, ...], parts: bool = False, twin: bool = False, song_key: bool = False
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Tokens and per-bar raw attribute values of one file (on the 4/4 token grid); `parts`:
    with LEAD tokens; `twin`: the piece in its parallel mode (`mode_rule.mode_twin`);
    `song_key`: every bar's key attributes are the whole song's."""
    try:
        notes = align_to_grid(item.load())
    except MidiError as e:
        log.warning("skipping %s", e)
        return None
    if twin:
        notes = mode_twin(notes)
    tokens = encode(notes, parts=parts)
    if (tokens == BAR).sum() < 2:
        return None
    grid = decode(tokens, notes.qpm)  # attributes of what the tokens say, bars as tokens count them
    feats = bar_windows(grid)[:, [INDEX[a] for a in attributes]]
    if song_key:
        whole = features(grid)
        for j, a in enumerate(attributes):
            if a in SONG_KEY:
                feats[:, j] = whole[INDEX[a]]
    return tokens, feats, item.group


def build_dataset(
    data_dir: Path,
    attributes: tuple[str, ...],
    cache: Path,
    workers: int = 2,
    parts: bool = False,
    mode_twins: bool = False,
    song_key: bool = False,
) -> dict:
    """Tokenise every MIDI file once and cache tokens + per-bar attribute values; with
    `mode_twins`, each training song's parallel-mode twin too (validation songs have none,
    so validation loss stays comparable); with `song_key`, the key attributes of the song."""
    flags = {"parts": parts, "mode_twins": mode_twins, "song_key": song_key}  # what a cache must match
    if cache.is_file():
        d = dict(np.load(cache, allow_pickle=False))
        if "origin" in d and tuple(d["attributes"].tolist()) == attributes and all(bool(d.get(k, False)) == v for k, v in flags.items()):
            return d  # (a cache written before `origin` is rebuilt)
    items = all_midi(data_dir)
    twins, origin = [False] * len(items), list(range(len(items)))
    if mode_twins:
        train_idx = [i for i, it in enumerate(items) if not is_valid_split(it.group)]
        items, twins, origin = items + [items[i] for i in train_idx], twins + [True] * len(train_idx), origin + train_idx
    from tqdm import tqdm

    n = len(items)
    with ProcessPoolExecutor(workers) as ex:
        results = list(
            tqdm(ex.map(_piece, items, [attributes] * n, [parts] * n, twins, [song_key] * n, chunksize=8), total=n, desc="tokenising")
        )
    twins = [t for r, t in zip(results, twins) if r is not None]
    origin = [o for r, o in zip(results, origin) if r is not None]
    results = [r for r in results if r is not None]
    tokens = np.concatenate([r[0] for r in results])
    lengths = np.array([len(r[0]) for r in results])
    bars = np.concatenate([r[1] for r in results])
    n_bars = np.array([len(r[1]) for r in results])
    valid = np.array([is_valid_split(r[2]) for r in results])
    d = {
        "tokens": tokens.astype(np.int16),
        "lengths": lengths,
        "bar_values": bars.astype(np.float32),
        "n_bars": n_bars,
        "valid": valid,
        "groups": np.array([r[2] for r in results]),
        "attributes": np.array(attributes),
        **{k: np.array(v) for k, v in flags.items()},
        "twin": np.array(twins),
        "origin": np.array(origin),  # the file each piece came from (a twin shares its song's)
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **d)
    return d


class Batcher:
    """Random crops of `block_size + 1` tokens that start on a bar line, with each token's
    attribute bins taken from its bar. With `splice` > 0, that share of the crops of a song
    that has a parallel-mode twin switch from one to the other at a bar line a few bars in
    (`mode_twins` data): the attributes change mode there, the context does not, so the
    decoder learns to take the mode from the attributes, as a valence lane that moves asks."""

    def __init__(self, d: dict, edges: np.ndarray, block_size: int, split_valid: bool, seed: int, splice: float = 0.0) -> None:
        self.block, self.splice = block_size, splice
        self.rng = np.random.default_rng(seed)
        tok_off = np.concatenate([[0], np.cumsum(d["lengths"])])
        bar_off = np.concatenate([[0], np.cumsum(d["n_bars"])])
        bins = to_bins(d["bar_values"], edges)
        self.pieces = []
        chosen = np.flatnonzero(d["valid"] == split_valid)
        for i in chosen:
            tok = d["tokens"][tok_off[i] : tok_off[i + 1]].astype(np.int64)
            b = bins[bar_off[i] : bar_off[i + 1]]
            bi = np.minimum(bar_index(tok), len(b) - 1)
            starts = np.flatnonzero(tok == BAR)
            self.pieces.append((tok, b[bi], starts))
        self.weights = np.array([len(p[0]) for p in self.pieces], dtype=np.float64)
        self.weights /= self.weights.sum()
        self.partner = np.full(len(self.pieces), -1)  # the piece's twin (or song), bar for bar
        if splice > 0:
            if not d["twin"].any():
                raise ValueError("twin splicing needs mode-twin data (--mode-twins)")
            at = {(int(d["origin"][i]), bool(d["twin"][i])): j for j, i in enumerate(chosen)}
            for (o, tw), j in at.items():
                k = at.get((o, not tw))
                if k is not None and len(self.pieces[k][2]) == len(self.pieces[j][2]):
                    self.partner[j] = k

    def _crop(self, pi: int) -> tuple[np.ndarray, np.ndarray]:
        """`block + 1` tokens (or fewer at a piece's end) and their attribute bins."""
        tok, attr, starts = self.pieces[pi]
        n = self.block + 1
        head = self.rng.random() < 0.1  # from the piece's first token
        s = 0 if head else int(self.rng.choice(len(starts)))
        a0 = 0 if head else int(starts[s])
        k = self.partner[pi]
        if k < 0 or self.rng.random() >= self.splice or s + 1 >= len(starts):
            return tok[a0 : a0 + n], attr[a0 : a0 + n]
        cut = min(len(starts) - 1, s + int(self.rng.integers(1, 5)))  # switch 1-4 bars in
        tok2, attr2, starts2 = self.pieces[k]
        b0, b1 = int(starts[cut]), int(starts2[cut])
        return np.concatenate([tok[a0:b0], tok2[b1 : b1 + n]])[:n], np.concatenate([attr[a0:b0], attr2[b1 : b1 + n]])[:n]

    def batch(self, n: int, n_bins: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        T = self.block
        x = np.zeros((n, T), dtype=np.int64)
        y = np.zeros((n, T), dtype=np.int64)
        a = np.full((n, T, self.pieces[0][1].shape[1]), n_bins, dtype=np.int64)
        for r, pi in enumerate(self.rng.choice(len(self.pieces), n, p=self.weights)):
            seg, attr = self._crop(int(pi))
            L = len(seg) - 1
            x[r, :L], y[r, :L] = seg[:-1], seg[1:]
            a[r, :L] = attr[:L]
            drop = self.rng.random(a.shape[2]) < dropout
            a[r, :, drop] = n_bins
        return torch.from_numpy(x), torch.from_numpy(a), torch.from_numpy(y)


def _lr(step: int, tc: TrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    p = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * p))


def train(
    data_dir: Path,
    out_dir: Path,
    model_cfg: SymbolicConfig,
    tc: TrainConfig,
    export_stem: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init: SymbolicLM | None = None,
    command: str = "",
) -> dict:
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if ddp:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        rank = dist.get_rank()
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    if ddp and rank != 0:
        import torch.distributed as dist

        dist.barrier()  # rank 0 tokenises and writes the cache first
    d = build_dataset(
        data_dir, model_cfg.attributes, out_dir / "dataset.npz", parts=model_cfg.parts, mode_twins=tc.mode_twins, song_key=tc.song_key
    )
    if ddp and rank == 0:
        import torch.distributed as dist

        dist.barrier()
    train_vals = d["bar_values"][np.repeat(~d["valid"], d["n_bars"])]
    edges = quantile_edges(train_vals, model_cfg.n_bins)
    model_cfg = replace(model_cfg, bin_edges=tuple(tuple(float(x) for x in r) for r in edges))
    torch.manual_seed(tc.seed + rank)
    model = SymbolicLM(model_cfg).to(device)
    if init is not None:
        warm_start(model, init)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(0.9, 0.95), weight_decay=tc.weight_decay)
    step, history, wall = 0, [], 0.0
    state_path = out_dir / "train_state.pt"
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, history, wall = st["step"], st["history"], st.get("wall", 0.0)
        log.info("resumed at step %d", step)
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    train_b = Batcher(d, edges, model_cfg.block_size, False, tc.seed + 1000 * rank + step, splice=tc.twin_splice)
    valid_b = Batcher(d, edges, model_cfg.block_size, True, 0)
    n_train_tokens = int(sum(len(p[0]) for p in train_b.pieces))

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        rng_state = valid_b.rng
        valid_b.rng = np.random.default_rng(0)
        losses = []
        for _ in range(tc.eval_batches):
            x, a, y = valid_b.batch(tc.batch_size, model_cfg.n_bins, 0.0)
            losses.append(model(x.to(device), a.to(device), y.to(device))[1].item())
        valid_b.rng = rng_state
        model.train()
        return float(np.mean(losses))

    def save() -> None:
        if rank:
            return
        save_torch(state_path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "history": history, "wall": wall})
        if export_stem is not None:
            save_symbolic(model, export_stem, extra={"training": _record(data_dir, tc, step, wall, history, n_train_tokens, d, command)})

    from tqdm import tqdm

    bar = tqdm(total=tc.steps, initial=step, desc="train symbolic", disable=not progress or rank != 0)
    model.train()
    t0 = time.time() - wall
    while step < tc.steps:
        for g in opt.param_groups:
            g["lr"] = _lr(step, tc)
        x, a, y = train_b.batch(tc.batch_size, model_cfg.n_bins, tc.attr_dropout)
        _, loss = net(x.to(device), a.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % tc.eval_every == 0 or step == tc.steps:
            wall = time.time() - t0
            history.append({"step": step, "train_loss": float(loss.item()), "valid_loss": evaluate(), "wall_s": round(wall, 1)})
            log.info("step %d %s", step, history[-1])
            save()
    bar.close()
    if ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {"history": history, "config": model_cfg.to_json()}


def warm_start(model: SymbolicLM, init: SymbolicLM) -> None:
    """Start `model` from `init`'s weights. A larger vocabulary (LEAD added for parts) keeps
    the old tokens' rows of the embedding and output layer; the new rows stay as initialised.
    An attribute `init` lacks (after its own, `--add-attribute`) gets a table of zeros, so the
    model starts out playing exactly as `init` does and learns what the new attribute says."""
    if model.cfg.attributes[: init.cfg.n_attr] != init.cfg.attributes:
        raise ValueError(f"--init: its attributes {init.cfg.attributes} must lead {model.cfg.attributes}")
    src, dst = init.state_dict(), model.state_dict()
    for k, v in dst.items():
        w = src.get(k)
        if w is None and k.startswith("attr."):  # an added attribute (init's lead, checked above)
            v.zero_()
            continue
        if w is None or w.shape[1:] != v.shape[1:] or w.shape[0] > v.shape[0]:
            raise ValueError(f"--init: {k} is {tuple(w.shape) if w is not None else 'missing'} there, {tuple(v.shape)} here")
        v[: w.shape[0]] = w
    model.load_state_dict(dst)


def _record(data_dir: Path, tc: TrainConfig, step: int, wall: float, history: list, n_tokens: int, d: dict, command: str = "") -> dict:
    return {
        "command": command or f"moodlane train symbolic --data DATA --steps {tc.steps} --batch-size {tc.batch_size}",
        "parts": bool(d.get("parts", False)),
        "data": (
            f"{data_dir.name}/: pop909 + emopia + vgmidi MIDI, no labels; "
            f"{int((~d['valid']).sum())} train / {int(d['valid'].sum())} valid files (song split)"
            + (f", {int(d['twin'].sum())} of the train pieces parallel-mode twins" if d.get("twin") is not None and d["twin"].any() else "")
        ),
        "train_tokens": n_tokens,
        "steps": step,
        "train_config": json.loads(json.dumps(tc.__dict__)),
        "wall_time_s": round(wall, 1),
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
        "final": history[-1] if history else None,
        "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in history],
    }


def emopia_features(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-clip attributes of EMOPIA, with quadrant labels and song groups."""
    from moodlane.engine.symbolic.attributes import features
    from moodlane.engine.training.data import emopia

    items = emopia(data_dir)
    X = np.array([features(i.load()) for i in items])
    return X, np.array([i.quadrant for i in items]), np.array([i.group for i in items])


def choose_attributes(data_dir: Path, k: int) -> tuple[str, ...]:
    """EmoGen's step: forest importance on EMOPIA quadrants picks the conditioning."""
    from moodlane.engine.symbolic.selection import select_attributes

    X, y, g = emopia_features(data_dir)
    if len(set(y.tolist())) < 4:
        raise ValueError(f"{data_dir}/emopia holds clips of fewer than 4 quadrants: cannot select attributes")
    train = ~np.array([is_valid_split(x) for x in g])
    names, _ = select_attributes(X[train], y[train], k)
    return tuple(names)
