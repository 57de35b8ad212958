"""Attributes of the labelled sets, measured on the token grid (as generated music is):
EMOPIA per clip with its quadrant, VGMIDI per bar (centred window) with the listeners'
mean valence and arousal for that bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from moodlane.engine.symbolic.attributes import N_FEATURES, bar_windows, features
from moodlane.engine.symbolic.tokens import on_grid
from moodlane.engine.training.data import emopia, is_valid_split, vgmidi


def labelled_features(data_dir: Path, cache: Path | None = None, progress: bool = True) -> dict:
    if cache is not None and cache.is_file():
        d = dict(np.load(cache, allow_pickle=False))
        if d["emopia_x"].shape[-1] == N_FEATURES:  # else made before a feature was added
            return d
    ems = emopia(data_dir)
    e_x, e_w = [], []
    for it in tqdm(ems, desc="EMOPIA attributes", disable=not progress):
        g = on_grid(it.load())
        e_x.append(features(g))
        e_w.append(bar_windows(g).mean(0))  # on the generator's 3-bar window scale
    e_x, e_w = np.array(e_x), np.array(e_w)
    vx, vv, va, vg, vs = [], [], [], [], []
    for it in tqdm(vgmidi(data_dir), desc="VGMIDI attributes", disable=not progress):
        w = bar_windows(on_grid(it.load()))
        n = min(len(w), len(it.valence))
        vx.append(w[:n])
        vv.append(it.valence[:n])
        va.append(it.arousal[:n])
        vs.append(it.valence_spread[:n])
        vg += [it.group] * n
    d = {
        "emopia_x": e_x.reshape(-1, e_x.shape[-1]) if len(ems) else np.zeros((0, 1)),
        "emopia_xw": e_w.reshape(-1, e_x.shape[-1]) if len(ems) else np.zeros((0, 1)),
        "emopia_q": np.array([i.quadrant for i in ems], dtype=np.int64),
        "emopia_group": np.array([i.group for i in ems]),
        "vgmidi_x": np.concatenate(vx) if vx else np.zeros((0, 1)),
        "vgmidi_v": np.concatenate(vv) if vv else np.zeros(0),
        "vgmidi_a": np.concatenate(va) if va else np.zeros(0),
        "vgmidi_v_spread": np.concatenate(vs) if vs else np.zeros(0),
        "vgmidi_group": np.array(vg),
    }
    d["emopia_valid"] = np.array([is_valid_split(g) for g in d["emopia_group"]], dtype=bool)
    d["vgmidi_valid"] = np.array([is_valid_split(g) for g in d["vgmidi_group"]], dtype=bool)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **d)
    return d
