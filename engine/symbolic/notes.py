"""Notes as parallel numpy arrays, in beats (quarter notes), with symusic for MIDI bytes.

The engine never touches files: it parses and writes bytes; the CLI owns paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import symusic


class MidiError(ValueError):
    """MIDI data that cannot be parsed or holds no usable notes."""


@dataclass
class NoteArray:
    """A single-stream piece: onsets and durations in beats, MIDI pitch and velocity.

    `qpm` is the tempo (quarter notes per minute); `beats_per_bar` comes from the first
    time signature (4 for 4/4, 3 for 3/4, 3 for 6/8).
    """

    start: np.ndarray  # (N,) float64, beats
    duration: np.ndarray  # (N,) float64, beats
    pitch: np.ndarray  # (N,) int64, 0..127
    velocity: np.ndarray  # (N,) int64, 1..127
    qpm: float = 120.0
    beats_per_bar: float = 4.0
    meta: dict = field(default_factory=dict)
    # (N,) int8: the part each note plays, ACCOMPANIMENT, MELODY or BRIDGE (a second melody),
    # as POP909 marks its tracks; None where the source does not say (a one-track piano file)
    part: np.ndarray | None = None

    def __post_init__(self) -> None:
        order = np.lexsort((self.pitch, self.start))
        self.start = np.asarray(self.start, dtype=np.float64)[order]
        self.duration = np.maximum(np.asarray(self.duration, dtype=np.float64)[order], 1e-6)
        self.pitch = np.asarray(self.pitch, dtype=np.int64)[order]
        self.velocity = np.asarray(self.velocity, dtype=np.int64)[order]
        if self.part is not None:
            part = np.asarray(self.part, dtype=np.int8)
            if part.shape != self.pitch.shape:
                raise ValueError(f"part has {part.shape[0]} entries for {self.pitch.shape[0]} notes")
            self.part = part[order]

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def end(self) -> np.ndarray:
        return self.start + self.duration

    @property
    def n_bars(self) -> int:
        if len(self) == 0:
            return 0
        return int(np.floor(self.start.max() / self.beats_per_bar)) + 1

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.qpm

    def window(self, bar_lo: int, bar_hi: int) -> NoteArray:
        """Notes whose onset lies in bars [bar_lo, bar_hi), times shifted to the window."""
        lo, hi = bar_lo * self.beats_per_bar, bar_hi * self.beats_per_bar
        m = (self.start >= lo) & (self.start < hi)
        return NoteArray(
            self.start[m] - lo,
            self.duration[m],
            self.pitch[m],
            self.velocity[m],
            self.qpm,
            self.beats_per_bar,
            {"bars": bar_hi - bar_lo},
            None if self.part is None else self.part[m],
        )

    @classmethod
    def empty(cls, qpm: float = 120.0) -> NoteArray:
        z = np.zeros(0)
        return cls(z, z, z.astype(np.int64), z.astype(np.int64), qpm)


ACCOMPANIMENT, MELODY, BRIDGE = 0, 1, 2
# POP909's track names, and those `to_score` writes for a lead
PART_OF_TRACK = {"MELODY": MELODY, "BRIDGE": BRIDGE, "PIANO": ACCOMPANIMENT, "LEAD": MELODY, "ACCOMPANIMENT": ACCOMPANIMENT}


def from_score(score: symusic.Score) -> NoteArray:
    """Merge every non-drum track into one stream (all data here is piano). Where every
    track is named as POP909 names them (MELODY, BRIDGE, PIANO) or as `to_score` names a
    lead (Lead, Accompaniment), each note keeps its part."""
    s = score.to("quarter")
    tracks = [t for t in s.tracks if not t.is_drum and len(t.notes)]
    if not tracks:
        raise MidiError("MIDI file has no (non-drum) notes")
    arrays = [t.notes.numpy() for t in tracks]
    cat = {k: np.concatenate([a[k] for a in arrays]) for k in ("time", "duration", "pitch", "velocity")}
    names = [t.name.strip().upper() for t in tracks]
    part = None
    if all(n in PART_OF_TRACK for n in names):
        part = np.concatenate([np.full(len(a["pitch"]), PART_OF_TRACK[n], np.int8) for a, n in zip(arrays, names)])
    qpm = float(s.tempos[0].qpm) if len(s.tempos) else 120.0
    bpb = 4.0
    if len(s.time_signatures):
        ts = s.time_signatures[0]
        bpb = ts.numerator * 4.0 / ts.denominator
        if ts.denominator == 8 and ts.numerator % 3 == 0:
            bpb = ts.numerator * 0.5
        if bpb < 2.0:  # POP909 writes 1/4: treat as common time
            bpb = 4.0
    return NoteArray(
        cat["time"].astype(np.float64),
        cat["duration"].astype(np.float64),
        cat["pitch"].astype(np.int64),
        cat["velocity"].astype(np.int64) & 0x7F,
        qpm,
        bpb,
        part=part,
    )


def parse_midi(data: bytes) -> NoteArray:
    try:
        score = symusic.Score.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError/ValueError on corrupt files
        raise MidiError(f"not a readable MIDI file ({e})") from None
    return from_score(score)


def to_score(notes: NoteArray, tpq: int = 480, program: int = 0, name: str = "MoodLane", lead: np.ndarray | None = None) -> symusic.Score:
    """One piano track; with `lead` ((N,) bool, see `attributes.lead_line`), two: "Lead" and
    "Accompaniment", so a producer can give the tune its own instrument."""
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, float(notes.qpm)))
    num = int(round(notes.beats_per_bar))
    score.time_signatures.append(symusic.TimeSignature(0, num, 4))
    start = np.round(notes.start * tpq).astype(np.int32)
    dur = np.maximum(np.round(notes.duration * tpq).astype(np.int32), 1)
    groups = [(name, np.ones(len(notes), dtype=bool))] if lead is None else [("Lead", lead), ("Accompaniment", ~lead)]
    for track_name, m in groups:
        track = symusic.Track(track_name, program, False)
        track.notes = symusic.Note.from_numpy(start[m], dur[m], notes.pitch[m].astype(np.int8), notes.velocity[m].astype(np.int8), "tick")
        score.tracks.append(track)
    return score


def to_midi_bytes(notes: NoteArray, tpq: int = 480, lead: np.ndarray | None = None) -> bytes:
    return bytes(to_score(notes, tpq, lead=lead).dumps_midi())


def align_to_grid(notes: NoteArray, steps_per_beat: int = 4) -> NoteArray:
    """Shift a piece so its onsets fall on the 16th grid, beats and bars.

    POP909's files carry a constant offset from the beat (a lead-in that is not a whole
    number of 16ths). We take the circular mode of onsets within a 16th, then the 16th
    phase that puts the most onsets on beats, then the beat phase that puts the most bass
    onsets on bar lines. A file already on the grid is left unchanged.
    """
    if len(notes) == 0:
        return notes
    step = 1.0 / steps_per_beat
    frac = np.mod(notes.start, step) / step  # 0..1 within a 16th
    hist = np.bincount(np.floor(frac * 24).astype(np.int64) % 24, minlength=24)
    sub = (np.argmax(hist) + 0.5) / 24 * step if hist.max() > 0 else 0.0
    dev = np.mod(notes.start + step / 2, step) - step / 2
    if np.abs(dev).max() < 1e-6:  # already on the grid: keep its bars (VGMIDI labels are per bar)
        return notes
    resid = (notes.start - sub) / step
    resid = resid - np.round(resid)
    near = np.abs(resid) < 0.125
    if near.any():  # refine the coarse histogram estimate
        sub += float(np.median(resid[near])) * step
    shifted = notes.start - sub
    steps = np.round(shifted / step).astype(np.int64)
    beat_phase = max(range(steps_per_beat), key=lambda k: int(((steps - k) % steps_per_beat == 0).sum()))
    bpb = int(round(notes.beats_per_bar))
    beats = (steps - beat_phase) // steps_per_beat
    on_beat = (steps - beat_phase) % steps_per_beat == 0
    low = notes.pitch < np.median(notes.pitch)
    bar_phase = max(range(bpb), key=lambda k: int((on_beat & low & ((beats - k) % bpb == 0)).sum()))
    offset = sub + beat_phase * step + bar_phase
    start = notes.start - offset
    # keep the first note at or after time 0 by whole bars
    if start.min() < 0:
        start = start + np.ceil(-start.min() / notes.beats_per_bar) * notes.beats_per_bar
    return NoteArray(start, notes.duration, notes.pitch, notes.velocity, notes.qpm, notes.beats_per_bar, dict(notes.meta), notes.part)
