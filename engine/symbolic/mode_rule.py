"""Valence through mode: a rule on top of the attribute-conditioned decoder.

Rule systems for emotional expression (Livingstone et al., "Changing musical emotion: a
computational rule system for modifying score and performance", Computer Music Journal
2010) move valence mostly through mode. The decoder learned major/minor only weakly from
mostly-major pop piano, so for a clearly negative valence the bar is moved to the parallel
minor of the key the music is in (3rd, 6th and 7th degrees a semitone down), and for a
clearly positive valence minor music is moved to the parallel major. The key is tracked
from the decoder's own output (a decaying pitch-class histogram, Krumhansl-Kessler
profiles), so the rule follows modulations and never feeds back into the model context.

The same move of a whole song (`mode_twin`) makes key-aware training data: `train symbolic
--mode-twins` adds each training song's parallel-mode twin, so the decoder sees minor music
in the same styles as the major pop piano it mostly learns from.
"""

from __future__ import annotations

import numpy as np

from moodlane.engine.symbolic.attributes import _MAJOR, _MINOR
from moodlane.engine.symbolic.notes import NoteArray

TO_MINOR = {4: 3, 9: 8, 11: 10}
TO_MAJOR = {v: k for k, v in TO_MINOR.items()}


def estimate_key(hist: np.ndarray) -> tuple[int, bool]:
    """(tonic pitch class, is_major) with the best profile correlation."""
    if hist.sum() <= 0 or hist.std() == 0:
        return 0, True
    best = max(
        (
            (float(np.corrcoef(hist, np.roll(prof, k))[0, 1]), k, major)
            for k in range(12)
            for prof, major in ((_MAJOR, True), (_MINOR, False))
        ),
        key=lambda x: x[0],
    )
    return best[1], best[2]


def update_histogram(hist: np.ndarray, notes: NoteArray, decay: float = 0.75) -> np.ndarray:
    h = hist * decay
    np.add.at(h, notes.pitch % 12, notes.duration)
    return h


def apply(notes: NoteArray, hist: np.ndarray, valence: float, threshold: float = 0.2) -> NoteArray:
    """The bar in the mode its valence asks for, given the key histogram so far."""
    if abs(valence) < threshold or len(notes) == 0:
        return notes
    tonic, major = estimate_key(hist)
    if (valence < 0) != major:
        return notes  # already in the asked-for mode
    return to_parallel(notes, tonic, to_minor=valence < 0)


def to_parallel(notes: NoteArray, tonic: int, to_minor: bool) -> NoteArray:
    """`notes` moved to the parallel minor (or major) of `tonic`: 3rd, 6th and 7th degrees a
    semitone down (or up)."""
    table = TO_MINOR if to_minor else TO_MAJOR
    rel = (notes.pitch - tonic) % 12
    shift = np.array([table.get(int(r), int(r)) - int(r) for r in rel], dtype=np.int64)
    pitch = notes.pitch + shift
    keep = np.ones(len(pitch), dtype=bool)  # two notes that meet on one key: keep the first
    seen = set()
    for i, (s, p) in enumerate(zip(np.round(notes.start, 4), pitch)):
        keep[i] = (s, p) not in seen
        seen.add((s, p))
    part = None if notes.part is None else notes.part[keep]
    return NoteArray(
        notes.start[keep], notes.duration[keep], pitch[keep], notes.velocity[keep], notes.qpm, notes.beats_per_bar, dict(notes.meta), part
    )


def mode_twin(notes: NoteArray) -> NoteArray:
    """The whole piece in the parallel mode of its key (major -> natural minor, minor ->
    major): key-aware training data. Pop piano is mostly major, so a decoder learns minor
    harmony only weakly from it; each training song's twin shows the same music with its
    harmony, melody and key attributes in the other mode (`train symbolic --mode-twins`)."""
    if len(notes) == 0:
        return notes
    tonic, major = estimate_key(update_histogram(np.zeros(12), notes, decay=1.0))
    return to_parallel(notes, tonic, to_minor=major)
