"""Readers for a data folder laid out like `../shared/data` (see its README):

    emopia/midis/Q<q>_<song>_<clip>.mid      EMOPIA, 4 quadrants, split by song
    vgmidi/midi/*.mid + vgmidi/annotations/vgmidi_raw_*.json   per-bar valence/arousal
    pop909/NNN.mid                           unlabelled pop piano

Every labelled item carries a `group` (song) so splits never put clips of one song on
both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodlane.engine.symbolic.notes import MidiError, NoteArray, parse_midi

ENV_VAR = "MOODLANE_DATA"


class DataError(ValueError):
    """A data folder that is missing or not laid out as expected."""


def resolve_data_dir(path: str | os.PathLike | None) -> Path:
    p = path or os.environ.get(ENV_VAR)
    if not p:
        raise DataError(f"no data folder: pass --data DIR or set {ENV_VAR}")
    p = Path(p)
    if not p.is_dir():
        raise DataError(f"data folder {p} does not exist")
    if not any((p / d).is_dir() for d in ("emopia", "vgmidi", "pop909")):
        raise DataError(f"{p} holds none of emopia/, vgmidi/, pop909/ (expected the layout of shared/data)")
    return p


def is_valid_split(group: str, valid_fraction: float = 0.15) -> bool:
    """Deterministic song-level split: the same song lands on the same side everywhere."""
    h = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < valid_fraction


@dataclass
class Item:
    path: Path
    group: str
    quadrant: int | None = None  # EMOPIA
    valence: np.ndarray | None = None  # VGMIDI: per-bar mean over listeners
    arousal: np.ndarray | None = None
    valence_spread: np.ndarray | None = None

    def load(self) -> NoteArray:
        try:
            return parse_midi(self.path.read_bytes())
        except MidiError as e:
            raise MidiError(f"{self.path}: {e}") from None


_EMOPIA = re.compile(r"Q([1-4])_(.+)_(\d+)\.mid$", re.IGNORECASE)


def emopia(root: Path) -> list[Item]:
    out = []
    for p in sorted((root / "emopia" / "midis").glob("*.mid")):
        m = _EMOPIA.match(p.name)
        if m:
            out.append(Item(p, "emopia:" + m.group(2), quadrant=int(m.group(1))))
    return out


def vgmidi(root: Path) -> list[Item]:
    """VGMIDI pieces with per-bar valence/arousal averaged over listeners."""
    ann_dir = root / "vgmidi" / "annotations"
    curves: dict[str, dict[str, list]] = {}
    for f in sorted(ann_dir.glob("vgmidi_raw_*.json")):
        d = json.loads(f.read_text())
        for key, a in d.get("annotations", {}).items():
            piece = d["pieces"].get(key.rsplit("_", 1)[0])
            if not piece:
                continue
            c = curves.setdefault(piece["midi"], {"v": [], "a": []})
            c["v"].append(a["valence"])
            c["a"].append(a["arousal"])
    out = []
    for p in sorted((root / "vgmidi" / "midi").glob("*.mid")):
        c = curves.get(p.name)
        if not c:
            continue
        n = min(len(x) for x in c["v"] + c["a"])
        v = np.array([x[:n] for x in c["v"]], dtype=np.float64)
        a = np.array([x[:n] for x in c["a"]], dtype=np.float64)
        out.append(Item(p, "vgmidi:" + p.stem, valence=v.mean(0), arousal=a.mean(0), valence_spread=v.std(0)))
    return out


def pop909(root: Path) -> list[Item]:
    return [Item(p, "pop909:" + p.stem) for p in sorted((root / "pop909").glob("*.mid"))]


def all_midi(root: Path) -> list[Item]:
    return pop909(root) + emopia(root) + vgmidi(root)
