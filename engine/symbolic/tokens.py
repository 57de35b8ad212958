"""A REMI-style vocabulary (Huang & Yang 2020) on a 16th-note grid in 4/4.

Worked example, one bar with a C major chord on beat 1 and an E on beat 3:

    BAR  POS_0  PITCH_48 DUR_8 VEL_10  PITCH_52 DUR_8 VEL_10  PITCH_55 DUR_8 VEL_10
         POS_8  PITCH_64 DUR_4 VEL_12  BAR ...

Within a position, pitches ascend; positions ascend within a bar. Durations are in 16ths
(1..32), velocities in 16 bins of 8. With parts (`encode(..., parts=True)`), a LEAD token
before a note's PITCH marks it as the lead, the melody a listener follows
(`attributes.lead_line`: POP909's MELODY and BRIDGE tracks, a skyline elsewhere):

    BAR  POS_0  PITCH_48 DUR_8 VEL_10  PITCH_55 DUR_8 VEL_10  LEAD PITCH_72 DUR_4 VEL_12 ...

A model without parts (vocabulary `PARTS_VOCAB - 1`) never sees or samples LEAD.

Tempo is not a token: the session (DAW, preset or emotion map) owns it. `decode(encode(x))` is `x` snapped to the grid, and
`encode(decode(tokens)) == tokens` for every grammatical sequence (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moodlane.engine.symbolic.attributes import lead_line
from moodlane.engine.symbolic.notes import ACCOMPANIMENT, MELODY, NoteArray

STEPS_PER_BEAT = 4
STEPS_PER_BAR = 16
BEATS_PER_BAR = 4.0
PITCH_LO, PITCH_HI = 21, 108  # piano range
MAX_DUR = 32
N_VEL = 16

PAD, BOS, EOS, BAR = 0, 1, 2, 3
POS0 = 4
PITCH0 = POS0 + STEPS_PER_BAR
DUR0 = PITCH0 + (PITCH_HI - PITCH_LO + 1)
VEL0 = DUR0 + MAX_DUR
VOCAB_SIZE = VEL0 + N_VEL  # without parts: the shipped model's vocabulary
LEAD = VOCAB_SIZE  # the next note is the lead's
PARTS_VOCAB = LEAD + 1


def token_name(t: int) -> str:
    if t == LEAD:
        return "LEAD"
    if t < POS0:
        return ("PAD", "BOS", "EOS", "BAR")[t]
    if t < PITCH0:
        return f"POS_{t - POS0}"
    if t < DUR0:
        return f"PITCH_{t - PITCH0 + PITCH_LO}"
    if t < VEL0:
        return f"DUR_{t - DUR0 + 1}"
    return f"VEL_{t - VEL0}"


def velocity_bin(v: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(v) // 8, 0, N_VEL - 1)


def bin_velocity(b: np.ndarray) -> np.ndarray:
    return np.asarray(b) * 8 + 4


@dataclass(frozen=True)
class GridNote:
    bar: int
    pos: int
    pitch: int
    dur: int
    vel_bin: int
    lead: bool = False


def quantise(notes: NoteArray, parts: bool = False) -> list[GridNote]:
    """Snap notes to the grid; drop out-of-range pitches; keep the longest of duplicates.
    `parts`: mark the lead's notes (`attributes.lead_line`)."""
    step = np.round(notes.start * STEPS_PER_BEAT).astype(np.int64)
    dur = np.clip(np.round(notes.duration * STEPS_PER_BEAT).astype(np.int64), 1, MAX_DUR)
    lead = lead_line(notes) if parts else np.zeros(len(notes), dtype=bool)
    keep: dict[tuple[int, int], GridNote] = {}
    for s, d, p, v, ld in zip(step, dur, notes.pitch, velocity_bin(notes.velocity), lead):
        if not PITCH_LO <= p <= PITCH_HI or s < 0:
            continue
        g = GridNote(int(s // STEPS_PER_BAR), int(s % STEPS_PER_BAR), int(p), int(d), int(v), bool(ld))
        old = keep.get((s, p))
        if old is None or old.dur < g.dur:
            keep[(s, p)] = g
    return _cut_overlaps(sorted(keep.values(), key=lambda g: (g.bar, g.pos, g.pitch)))


def _cut_overlaps(grid: list[GridNote]) -> list[GridNote]:
    """A key cannot sound twice: a repeated pitch ends the earlier note (MIDI semantics;
    without this, note-off pairing makes MIDI round trips ambiguous)."""
    last: dict[int, int] = {}
    out = list(grid)
    for i, g in enumerate(out):
        step = g.bar * STEPS_PER_BAR + g.pos
        j = last.get(g.pitch)
        if j is not None:
            p = out[j]
            p_step = p.bar * STEPS_PER_BAR + p.pos
            if p_step + p.dur > step:
                out[j] = GridNote(p.bar, p.pos, p.pitch, step - p_step, p.vel_bin, p.lead)
        last[g.pitch] = i
    return out


def encode(notes: NoteArray, bos: bool = True, eos: bool = True, parts: bool = False) -> np.ndarray:
    """Notes -> token ids (int64). Every bar up to the last note gets a BAR token; with
    `parts`, each of the lead's notes a LEAD token."""
    grid = quantise(notes, parts)
    n_bars = grid[-1].bar + 1 if grid else 0
    out = [BOS] if bos else []
    i = 0
    for bar in range(n_bars):
        out.append(BAR)
        last_pos = -1
        while i < len(grid) and grid[i].bar == bar:
            g = grid[i]
            if g.pos != last_pos:
                out.append(POS0 + g.pos)
                last_pos = g.pos
            out += [LEAD] * g.lead + [PITCH0 + g.pitch - PITCH_LO, DUR0 + g.dur - 1, VEL0 + g.vel_bin]
            i += 1
    if eos:
        out.append(EOS)
    return np.asarray(out, dtype=np.int64)


def bar_index(tokens: np.ndarray) -> np.ndarray:
    """For each token, the bar it belongs to (BAR tokens open their bar; BOS is bar 0)."""
    return np.maximum(np.cumsum(np.asarray(tokens) == BAR) - 1, 0)


def decode(tokens: np.ndarray, qpm: float = 120.0, bar_offset: int = 0, parts: bool = False) -> NoteArray:
    """Token ids -> notes. Ungrammatical fragments (a PITCH without DUR/VEL) are skipped.
    `parts`: the notes carry their part (MELODY after LEAD, else ACCOMPANIMENT)."""
    bar, pos = bar_offset - 1, 0
    starts, durs, pitches, vels, leads = [], [], [], [], []
    toks = [int(t) for t in tokens]
    lead = False
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == LEAD:
            lead = True
        elif t == BAR:
            bar += 1
            pos = 0
        elif t == EOS:
            break
        elif POS0 <= t < PITCH0:
            pos = t - POS0
        elif PITCH0 <= t < DUR0 and i + 2 < len(toks):
            d, v = toks[i + 1], toks[i + 2]
            if DUR0 <= d < VEL0 and VEL0 <= v < VOCAB_SIZE:
                starts.append((max(bar, 0) * STEPS_PER_BAR + pos) / STEPS_PER_BEAT)
                durs.append((d - DUR0 + 1) / STEPS_PER_BEAT)
                pitches.append(t - PITCH0 + PITCH_LO)
                vels.append(int(bin_velocity(v - VEL0)))
                leads.append(lead)
                i += 2
            lead = False
        i += 1
    start = np.array(starts)
    dur = np.array(durs)
    for p in set(pitches):  # a repeated key ends the earlier note, as in quantise()
        idx = [i for i, q in enumerate(pitches) if q == p]
        idx.sort(key=lambda i: start[i])
        for a, b in zip(idx, idx[1:]):
            if start[a] + dur[a] > start[b]:
                dur[a] = start[b] - start[a]
    part = np.where(leads, MELODY, ACCOMPANIMENT).astype(np.int8) if parts else None
    return NoteArray(start, dur, np.array(pitches), np.array(vels), qpm, BEATS_PER_BAR, part=part)


class Grammar:
    """Which tokens may follow: keeps sampled sequences decodable (positions ascend within
    a bar, pitches ascend within a position, every PITCH is followed by DUR then VEL, a LEAD
    by a PITCH). `vocab`: the model's vocabulary (with parts, `PARTS_VOCAB`: LEAD may come
    before any note's PITCH)."""

    def __init__(self, vocab: int = VOCAB_SIZE) -> None:
        self.vocab = vocab
        self.last = BOS
        self.pos = -1
        self.pitch = -1

    def reset_bar(self) -> None:
        self.last, self.pos, self.pitch = BAR, -1, -1

    def update(self, t: int) -> None:
        if t == BAR:
            self.reset_bar()
            return
        if POS0 <= t < PITCH0:
            self.pos, self.pitch = t - POS0, -1
        elif PITCH0 <= t < DUR0:
            self.pitch = t - PITCH0
        self.last = t

    def allowed(self) -> np.ndarray:
        m = np.zeros(self.vocab, dtype=bool)
        t = self.last
        lead = self.vocab > LEAD
        if t == BOS:
            m[BAR] = True
        elif t == BAR:
            m[POS0:PITCH0] = True
            m[BAR] = True
        elif POS0 <= t < PITCH0 or t == LEAD:
            m[PITCH0 + self.pitch + 1 : DUR0] = True
            if lead and t != LEAD:
                m[LEAD] = True
        elif PITCH0 <= t < DUR0:
            m[DUR0:VEL0] = True
        elif DUR0 <= t < VEL0:
            m[VEL0:VOCAB_SIZE] = True
        else:  # after VEL: another pitch here, a later position, or the next bar
            m[PITCH0 + self.pitch + 1 : DUR0] = True
            if lead and self.pitch + PITCH_LO < PITCH_HI:  # a higher pitch is left for the lead
                m[LEAD] = True
            m[POS0 + self.pos + 1 : PITCH0] = True
            m[BAR] = True
        return m


def on_grid(notes: NoteArray) -> NoteArray:
    """The piece as the tokens see it (16th grid, piano range), keeping its tempo and metre
    (and its parts, as lead and accompaniment, where it has them), so attributes of data and
    of generated music are measured alike."""
    parts = notes.part is not None
    g = quantise(notes, parts)
    return NoteArray(
        np.array([(x.bar * STEPS_PER_BAR + x.pos) / STEPS_PER_BEAT for x in g]),
        np.array([x.dur / STEPS_PER_BEAT for x in g]),
        np.array([x.pitch for x in g], dtype=np.int64),
        bin_velocity(np.array([x.vel_bin for x in g], dtype=np.int64)),
        notes.qpm,
        notes.beats_per_bar,
        part=np.array([MELODY if x.lead else ACCOMPANIMENT for x in g], dtype=np.int8) if parts else None,
    )
