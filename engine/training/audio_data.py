"""`moodlane data render-audio`: emotion-labelled audio rendered from a MIDI data folder.

Each clip is played by one General MIDI program drawn with a seeded hash of the clip's name
(never of its label), so timbre varies and carries no emotion. Labels are kept as they were:
VGMIDI's per-bar listener means become time-stamped points in seconds, EMOPIA's quadrant
stays a quadrant (plus its centre, flagged coarse), POP909 has none. The text description
names instrument, tempo, register and density only: text and emotion stay disentangled.

With `mode_twins`, the training clips of those sets are also rendered in the parallel mode
of their key (`mode_rule.mode_twin`: major -> natural minor, minor -> major), with the same
program and text, as `<id>~twin`: the same music with only its harmony moved. A twin has no
`labels` (its original's no longer hold); `data pseudo-label` gives it its original's label
plus the change the symbolic judge reads between the two (`twin_labels`). Held-out clips get
no twin, so validation and every evaluation stay real.

Output: `OUT/audio/<source>/<id>.flac` (mono, the codec's sample rate, 16-bit), a sidecar
`<id>.json` per clip (so a run resumes where it stopped) and `OUT/manifest.jsonl`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from moodlane.engine.atomic import write_atomic
from moodlane.engine.emotion import QUADRANT_CENTRES, Emotion
from moodlane.engine.symbolic.notes import NoteArray
from moodlane.engine.training.data import DataError, Item, emopia, is_valid_split, pop909, resolve_data_dir, vgmidi

# (GM program, name in the text description). Polyphony is kept for all of them.
PROGRAMS: tuple[tuple[int, str], ...] = (
    (0, "acoustic piano"),
    (4, "electric piano"),
    (48, "string ensemble"),
    (24, "nylon guitar"),
    (16, "organ"),
    (89, "warm pad"),
    (11, "vibraphone"),
    (46, "harp"),
)
# Words a description must never contain: emotion lives in the AV labels, not in the text.
EMOTION_WORDS = frozenset(
    "happy sad calm excited angry tense relaxed joyful gloomy peaceful energetic melancholic "
    "cheerful dark bright aggressive sombre somber uplifting mellow chill sentimental".split()
)


@dataclass(frozen=True)
class RenderJob:
    data: str | None
    out: str = "runs/audio"
    sample_rate: int = 24000
    max_seconds: float = 60.0  # length cap for unlabelled clips (POP909 songs run 3-5 minutes); labelled ones are whole
    sets: tuple[str, ...] = ("emopia", "vgmidi", "pop909")
    seed: int = 0
    jobs: int = 0  # worker processes (0: one per core)
    soundfont: str | None = None
    limit: int = 0  # clips per set (0: all); for smoke tests
    mode_twins: tuple[str, ...] = ()  # sets whose training clips are also rendered in their parallel mode

    def __post_init__(self) -> None:
        if not set(self.mode_twins) <= set(self.sets):
            raise DataError(f"mode twins of {', '.join(sorted(set(self.mode_twins) - set(self.sets)))}: not among the sets rendered")


def choose_program(clip_id: str, seed: int) -> tuple[int, str]:
    h = int(hashlib.sha1(f"{seed}:{clip_id}".encode()).hexdigest()[:8], 16)
    return PROGRAMS[h % len(PROGRAMS)]


def describe(notes: NoteArray, seconds: float, instrument: str) -> str:
    """'solo nylon guitar, slow, low register, sparse': no emotion words by construction."""
    q = notes.qpm
    tempo = "slow" if q < 76 else "moderate tempo" if q < 108 else "fast" if q < 140 else "very fast"
    mean_pitch = float(np.mean(notes.pitch)) if len(notes) else 60.0
    register = "low register" if mean_pitch < 55 else "middle register" if mean_pitch < 67 else "high register"
    rate = len(notes) / max(seconds, 1e-6)
    density = "sparse" if rate < 3 else "moderate density" if rate < 8 else "dense"
    return f"solo {instrument}, {tempo}, {register}, {density}"


TWIN = "~twin"  # a mode twin's id: its original's, then this


def _clip_id(it: Item, twin: bool = False) -> str:
    """`<source>/<file stem>`, and `TWIN` after it for the item's mode twin."""
    return it.group.split(":", 1)[0] + "/" + it.path.stem + (TWIN if twin else "")


def _source_notes(it: Item, max_seconds: float) -> NoteArray:
    """An item's notes as rendered: unlabelled ones cropped to `max_seconds` (0: whole)."""
    notes = it.load()
    if max_seconds and it.quadrant is None and it.valence is None:
        notes = _crop(notes, max_seconds * notes.qpm / 60.0)
    return notes


def _labels(it: Item, notes: NoteArray, seconds: float) -> dict | None:
    if it.quadrant is not None:
        c = QUADRANT_CENTRES[it.quadrant]
        return {"kind": "quadrant", "quadrant": it.quadrant, "valence": c.valence, "arousal": c.arousal, "coarse": True}
    if it.valence is not None:
        bar_s = notes.beats_per_bar * 60.0 / notes.qpm
        pts = [[round(k * bar_s, 3), round(float(v), 4), round(float(a), 4)] for k, (v, a) in enumerate(zip(it.valence, it.arousal))]
        return {"kind": "curve", "points": [p for p in pts if p[0] < seconds], "per": "bar"}
    return None


def _crop(notes: NoteArray, max_beats: float) -> NoteArray:
    keep = notes.start < max_beats
    return NoteArray(
        notes.start[keep],
        np.minimum(notes.duration[keep], max_beats - notes.start[keep]),
        notes.pitch[keep],
        notes.velocity[keep],
        notes.qpm,
        notes.beats_per_bar,
        {},
    )


_SYNTH = None  # one FluidSynth per worker process: loading the SoundFont takes seconds


def _worker_synth(job: RenderJob):
    global _SYNTH
    from moodlane.engine.synth import FluidSynth

    if _SYNTH is None or _SYNTH.sample_rate != job.sample_rate:
        _SYNTH = FluidSynth(job.soundfont, job.sample_rate)
    return _SYNTH


def render_clip(it: Item, job: RenderJob, out: Path, twin: bool = False) -> dict:
    """Render one item (in a worker), or with `twin` its mode twin, and write its FLAC and
    sidecar; returns the record."""
    import soundfile as sf

    from moodlane.engine.symbolic.mode_rule import mode_twin
    from moodlane.engine.synth import render_notes

    base, cid = _clip_id(it), _clip_id(it, twin)
    sidecar = out / "audio" / f"{cid}.json"
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    program, instrument = choose_program(base, job.seed)  # a twin is played as its original is
    notes = _source_notes(it, job.max_seconds)
    if twin:
        notes = mode_twin(notes)
    pcm = render_notes(notes, sample_rate=job.sample_rate, tail_s=1.0, program=program, synth=_worker_synth(job)).mean(axis=1)
    peak = float(np.abs(pcm).max()) if len(pcm) else 0.0
    if peak > 0.99:  # never clip; otherwise keep the synth's level (loudness carries expression)
        pcm *= 0.99 / peak
    seconds = len(pcm) / job.sample_rate
    buf = io.BytesIO()
    sf.write(buf, pcm, job.sample_rate, format="FLAC", subtype="PCM_16")
    wav_path = out / "audio" / f"{cid}.flac"
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(wav_path, buf.getvalue())
    rec = {
        "id": cid,
        "path": str(wav_path.relative_to(out)),
        "source": cid.split("/", 1)[0],
        "group": it.group,
        "duration": round(seconds, 3),
        "sample_rate": job.sample_rate,
        "program": program,
        "instrument": instrument,
        "tempo": round(float(notes.qpm), 2),
        "split": "valid" if is_valid_split(it.group) else "train",
        "labels": None if twin else _labels(it, notes, seconds),
        "text": describe(notes, seconds, instrument),
        "peak": round(peak, 4),
        **({"twin_of": base} if twin else {}),
    }
    write_atomic(sidecar, json.dumps(rec).encode())
    return rec


def _items(data_dir: Path, job: RenderJob) -> list[Item]:
    readers = {"emopia": emopia, "vgmidi": vgmidi, "pop909": pop909}
    out = []
    for s in job.sets:
        its = readers[s](data_dir)
        out += its[: job.limit] if job.limit else its
    return out


class _InProcess:
    """`worker_pool(1)`: the same interface, no processes."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, fn, items, chunksize: int = 1):
        return map(fn, items)


def worker_pool(workers: int):
    """Worker processes started with 'spawn': forking a process that already runs torch,
    onnxruntime or FluidSynth threads can deadlock the child (seen in the test suite)."""
    import multiprocessing

    return _InProcess() if workers <= 1 else ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _render_one(args: tuple[Item, RenderJob, Path, bool]) -> dict:
    try:
        return render_clip(*args)
    except Exception as e:  # a broken file is reported and skipped, never stops the run
        return {"id": _clip_id(args[0], args[3]), "error": f"{type(e).__name__}: {e}"}


def render_audio(job: RenderJob, progress: bool = True) -> dict:
    data_dir = resolve_data_dir(job.data)
    out = Path(job.out)
    items = _items(data_dir, job)
    todo = [(it, job, out, False) for it in items]
    twins = set(job.mode_twins)
    todo += [(it, job, out, True) for it in items if _clip_id(it).split("/", 1)[0] in twins and not is_valid_split(it.group)]
    t0 = time.time()
    workers = job.jobs or os.cpu_count() or 1
    recs, errors = [], []
    with worker_pool(workers) as pool:
        for r in tqdm(pool.map(_render_one, todo, chunksize=4), total=len(todo), desc="render audio", disable=not progress):
            (errors if "error" in r else recs).append(r)
    recs.sort(key=lambda r: r["id"])
    write_manifest(out, recs)
    hours = sum(r["duration"] for r in recs) / 3600
    summary = {
        "clips": len(recs),
        "hours": round(hours, 2),
        "wall_s": round(time.time() - t0, 1),
        "workers": workers,
        "by_source": {s: sum(r["source"] == s for r in recs) for s in job.sets},
        "valid_clips": sum(r["split"] == "valid" for r in recs),
        "errors": errors[:20],
        "manifest": str(out / "manifest.jsonl"),
    }
    write_atomic(out / "render_summary.json", json.dumps(summary, indent=1).encode())
    return summary


def notes_seconds(notes: NoteArray):
    """A NoteArray as the witness's `Notes` in seconds, timed as `render_notes` plays it."""
    from moodlane.engine.training.witness import Notes

    spb = 60.0 / notes.qpm
    return Notes.from_midi_pitches(notes.start * spb, (notes.start + notes.duration) * spb, notes.pitch)


def source_note_arrays(recs: list[dict], data: str | os.PathLike | None, max_seconds: float = RenderJob.max_seconds) -> dict:
    """id -> the source MIDI's `NoteArray` of rendered clips, as they were rendered
    (unlabelled clips cropped to `max_seconds`; mode twins in their parallel mode). Needs the
    data folder."""
    from moodlane.engine.symbolic.mode_rule import mode_twin

    data_dir = resolve_data_dir(data)
    want = {r["id"] for r in recs}
    sets = tuple(sorted({r["source"] for r in recs}))
    out = {}
    for it in _items(data_dir, RenderJob(str(data_dir), sets=sets)):
        cid = _clip_id(it)
        if cid in want or cid + TWIN in want:
            notes = _source_notes(it, max_seconds)
            if cid in want:
                out[cid] = notes
            if cid + TWIN in want:
                out[cid + TWIN] = mode_twin(notes)
    return out


def source_notes(recs: list[dict], data: str | os.PathLike | None, max_seconds: float = RenderJob.max_seconds) -> dict:
    """id -> the source MIDI's notes (witness `Notes`, seconds) of rendered clips."""
    return {k: notes_seconds(n) for k, n in source_note_arrays(recs, data, max_seconds).items()}


def judge_labels(notes: NoteArray, judge) -> dict:
    """Per-bar (valence, arousal) that the symbolic judge reads from a clip's MIDI (its
    attributes over the same centred windows VGMIDI's bar labels use), as a label curve."""
    bar_s = notes.beats_per_bar * 60.0 / notes.qpm
    pts = [[round(k * bar_s, 3), round(j.valence, 4), round(j.arousal, 4)] for k, j in enumerate(judge.judge_bars(notes))]
    return {"kind": "curve", "points": pts, "per": "bar", "source": "symbolic judge"}


def twin_labels(base: dict, base_notes: NoteArray, twin_notes: NoteArray, judge) -> dict:
    """A mode twin's label curve: per bar, its original's label (real, else pseudo) plus the
    change the symbolic judge reads from the original's MIDI to the twin's, clipped to
    [-1, 1]; the judge's own reading of the twin where the original has no label."""
    orig = np.asarray(judge_labels(base_notes, judge)["points"], np.float64).reshape(-1, 3)
    twin = np.asarray(judge_labels(twin_notes, judge)["points"], np.float64).reshape(-1, 3)
    n = min(len(orig), len(twin))  # the same bars: a twin moves pitches only
    label = label_at(base, twin[:n, 0], pseudo=True)
    moved = np.where(np.isnan(label), twin[:n, 1:], np.clip(label + twin[:n, 1:] - orig[:n, 1:], -1.0, 1.0))
    pts = [[round(float(t), 3), round(float(v), 4), round(float(a), 4)] for t, (v, a) in zip(twin[:n, 0], moved)]
    return {"kind": "curve", "points": pts, "per": "bar", "source": "symbolic judge: its mode twin's label plus the judged change"}


def pseudo_label(audio: str | os.PathLike, data: str | os.PathLike | None, judge, progress: bool = True) -> dict:
    """`moodlane data pseudo-label`: every rendered clip without a label (POP909) gets
    `pseudo_labels`, the symbolic judge's per-bar reading of its source MIDI, in its sidecar
    and the manifest; a mode twin gets its original's label moved by the judged change
    (`twin_labels`). Kept apart from `labels`: only `train audio --pseudo-labels` reads
    them; the predictor, its references and every evaluation see the clips as unlabelled."""
    root = Path(audio)
    recs = read_manifest(root)
    by_id = {r["id"]: r for r in recs}
    # originals first: a twin's label builds on its original's
    todo = sorted((r for r in recs if not r.get("labels")), key=lambda r: "twin_of" in r)
    notes = source_note_arrays(todo + [by_id[r["twin_of"]] for r in todo if r.get("twin_of") in by_id], data)
    done = []
    for r in tqdm(todo, desc="pseudo-label", disable=not progress):
        base = r.get("twin_of")
        if r["id"] not in notes or (base is not None and base not in notes):
            continue
        if base is None:
            r["pseudo_labels"] = judge_labels(notes[r["id"]], judge)
        else:
            r["pseudo_labels"] = twin_labels(by_id[base], notes[base], notes[r["id"]], judge)
        side = root / Path(r["path"]).with_suffix(".json")
        if side.is_file():
            write_atomic(side, json.dumps({**json.loads(side.read_text()), "pseudo_labels": r["pseudo_labels"]}).encode())
        done.append(r)
    write_manifest(root, recs)
    va = np.array([p[1:] for r in done for p in r["pseudo_labels"]["points"]]).reshape(-1, 2)
    quads = [Emotion(float(v), float(a)).quadrant for v, a in va]
    return {
        "clips": len(done),
        "unlabelled": len(todo),
        "missing_midi": len(todo) - len(done),
        "mode_twins": sum(1 for r in done if "twin_of" in r),
        "bars": len(va),
        "valence_mean": round(float(va[:, 0].mean()), 3) if len(va) else None,
        "arousal_mean": round(float(va[:, 1].mean()), 3) if len(va) else None,
        "bar_quadrant_shares": {f"Q{q}": round(quads.count(q) / max(len(quads), 1), 3) for q in (1, 2, 3, 4)},
    }


def write_manifest(root: str | os.PathLike, recs: list[dict]) -> None:
    """`root/manifest.jsonl`, one record a line, written atomically (`read_manifest` reads it)."""
    write_atomic(Path(root) / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in recs).encode())


def read_manifest(root: str | os.PathLike) -> list[dict]:
    p = Path(root) / "manifest.jsonl"
    if not p.is_file():
        raise DataError(f"{p} does not exist: run `moodlane data render-audio --out {root}` first")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def label_at(rec: dict, t: Iterable[float], pseudo: bool = False) -> np.ndarray:
    """(valence, arousal) of a clip at times `t` (s): the bar's point, or the clip's quadrant
    centre; NaN where the clip has no label (with `pseudo`, its `pseudo_labels` if it has
    them: `pseudo_label`)."""
    t = np.asarray(list(t), dtype=np.float64)
    lab = rec.get("labels") or (rec.get("pseudo_labels") if pseudo else None)
    if not lab:
        return np.full((len(t), 2), np.nan)
    if lab["kind"] == "quadrant":
        return np.tile([lab["valence"], lab["arousal"]], (len(t), 1))
    pts = np.asarray(lab["points"], dtype=np.float64)
    if len(pts) == 0:
        return np.full((len(t), 2), np.nan)
    k = np.clip(np.searchsorted(pts[:, 0], t, side="right") - 1, 0, len(pts) - 1)
    return pts[k, 1:3]
