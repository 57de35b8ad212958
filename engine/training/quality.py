"""Does the symbolic engine's music look like the music it learned from? (`moodlane eval
symbolic`, the quality section.)

Everything is measured on 4-bar windows of notes snapped to the token grid (real clips are
snapped too, so both sides are judged alike):

* **texture** (`texture`): note density (notes per second: EMOPIA's transcriptions all say
  120 BPM whatever the music's pulse, so beats do not compare), polyphony (notes sounding at once,
  averaged over the 16th steps where any note sounds), pitch range (highest - lowest pitch,
  semitones) and top-voice share (the share of notes that are the highest note of their onset).
  Per quadrant, generated windows are set against the interquartile range of held-out EMOPIA
  windows of that quadrant.
* **melody** (`top_voice_stepwise`): of the consecutive onsets of the top voice (the
  skyline) that follow within a beat, the share that move by 1 to 4 semitones. A tune moves
  in small steps; a wall of repeated notes (interval 0) or chords leaping between registers
  does not.
* **MusPy-style metrics** (Dong et al. 2020; written here, formulas in each function):
  pitch-class entropy, scale consistency, groove consistency; and bar repetition, how much
  each bar reuses one of the four before it.
* **Fréchet distance** (`frechet_features`) in a space the generator is not conditioned on:
  per window, the key-normalised pitch-class histogram (12), histograms of inter-onset
  intervals (7) and durations (7) in seconds, the top voice's interval histogram (6) and the
  onset chord-size histogram (5), 37 dimensions, each standardised by the held-out set. Real
  against real gives the scale. Times are in seconds and no feature reads the bar grid, for
  the same reason as above.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from moodlane.engine.symbolic.attributes import lead_line, onset_groups, skyline
from moodlane.engine.symbolic.notes import NoteArray
from moodlane.engine.symbolic.tokens import STEPS_PER_BAR, STEPS_PER_BEAT
from moodlane.engine.training.stats import frechet
from moodlane.engine.training.witness import KK_MAJOR, KK_MINOR

WINDOW_BARS = 4
TEXTURE = ("note_density", "polyphony", "pitch_range", "top_voice_share")
METRICS = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "bar_repetition", "top_voice_stepwise", "lead_coverage")
_MAJOR_SCALE = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
_MINOR_SCALE = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)  # natural minor
_IOI_EDGES = np.array([0.0625, 0.125, 0.25, 0.5, 1.0, 2.0])  # seconds
_DUR_EDGES = np.array([0.125, 0.25, 0.5, 1.0, 2.0, 4.0])  # seconds
_INTERVAL_EDGES = np.array([1, 3, 5, 8, 13])  # |semitones|: 0, 1-2, 3-4, 5-7, 8-12, 13+


def windows(notes: NoteArray, bars: int = WINDOW_BARS) -> list[NoteArray]:
    """Consecutive `bars`-bar windows that hold notes (a trailing partial window is dropped
    unless it is the only one)."""
    n = notes.n_bars
    starts = list(range(0, max(n - bars + 1, 1), bars))
    return [w for w in (notes.window(b, b + bars) for b in starts) if len(w)]


def _steps(notes: NoteArray) -> tuple[np.ndarray, np.ndarray]:
    """Onset and end steps (16ths) of each note."""
    on = np.round(notes.start * STEPS_PER_BEAT).astype(np.int64)
    off = np.maximum(on + 1, np.round(notes.end * STEPS_PER_BEAT).astype(np.int64))
    return on, off


def texture(w: NoteArray, bars: int = WINDOW_BARS) -> dict[str, float]:
    on, off = _steps(w)
    span = bars * STEPS_PER_BAR
    sounding = np.zeros(max(span, int(off.max())), dtype=np.int64)
    for a, b in zip(on, off):
        sounding[a:b] += 1
    busy = sounding[sounding > 0]
    return {
        "note_density": len(w) / (bars * w.beats_per_bar * w.seconds_per_beat),
        "polyphony": float(busy.mean()) if busy.size else 0.0,
        "pitch_range": float(w.pitch.max() - w.pitch.min()),
        "top_voice_share": len(onset_groups(w)) / len(w),
    }


def pitch_class_entropy(w: NoteArray) -> float:
    """H = -sum_i p_i log2 p_i over the 12 pitch classes (note counts); 0 to log2 12 = 3.58."""
    p = np.bincount(w.pitch % 12, minlength=12) / len(w)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def scale_consistency(w: NoteArray) -> float:
    """max over the 24 major and natural-minor scales of the share of notes inside it."""
    pcs = w.pitch % 12
    return float(max(np.roll(s, k)[pcs].mean() for s in (_MAJOR_SCALE, _MINOR_SCALE) for k in range(12)))


def _bar_onsets(w: NoteArray, bars: int) -> np.ndarray:
    on, _ = _steps(w)
    grid = np.zeros((bars, STEPS_PER_BAR), dtype=bool)
    keep = on < bars * STEPS_PER_BAR
    grid[on[keep] // STEPS_PER_BAR, on[keep] % STEPS_PER_BAR] = True
    return grid


def groove_consistency(w: NoteArray, bars: int = WINDOW_BARS) -> float:
    """1 - mean over consecutive bars of hamming(onset pattern b, onset pattern b+1) / 16."""
    g = _bar_onsets(w, bars)
    return float(1.0 - np.mean([(g[b] != g[b + 1]).mean() for b in range(bars - 1)]))


def bar_repetition(w: NoteArray, bars: int = WINDOW_BARS) -> float:
    """Mean over bars 2.. of the best Jaccard similarity between the bar's set of (position,
    pitch class) onsets and that of one of the (up to 4) bars before it."""
    on, _ = _steps(w)
    sets = [set() for _ in range(bars)]
    for s, p in zip(on, w.pitch):
        if s < bars * STEPS_PER_BAR:
            sets[s // STEPS_PER_BAR].add((int(s % STEPS_PER_BAR), int(p % 12)))

    def jac(a: set, b: set) -> float:
        return len(a & b) / len(a | b) if a | b else 1.0

    return float(np.mean([max(jac(sets[b], sets[c]) for c in range(max(0, b - 4), b)) for b in range(1, bars)]))


def top_voice_stepwise(w: NoteArray) -> float:
    """Of consecutive top-voice onsets at most a beat apart, the share moving 1-4 semitones."""
    top = skyline(w)
    t, p = _steps(w)[0][top], w.pitch[top]
    near = np.diff(t) <= STEPS_PER_BEAT
    step = np.abs(np.diff(p))
    return float(((step >= 1) & (step <= 4))[near].mean()) if near.any() else 0.0


def lead_coverage(w: NoteArray, bars: int = WINDOW_BARS) -> float:
    """The share of the window's 16ths in which a lead note sounds (`attributes.lead_line`:
    the marked lead where the notes carry parts, else the monophonic skyline): a tune that
    carries through, against fragments."""
    lead = lead_line(w)
    steps = bars * STEPS_PER_BAR
    sounding = np.zeros(steps, dtype=bool)
    on, off = _steps(w)
    for a, b in zip(on[lead], off[lead]):
        sounding[max(int(a), 0) : min(int(b), steps)] = True
    return float(sounding.mean())


def metrics(w: NoteArray, bars: int = WINDOW_BARS) -> dict[str, float]:
    return {
        "pitch_class_entropy": pitch_class_entropy(w),
        "scale_consistency": scale_consistency(w),
        "groove_consistency": groove_consistency(w, bars),
        "bar_repetition": bar_repetition(w, bars),
        "top_voice_stepwise": top_voice_stepwise(w),
        "lead_coverage": lead_coverage(w, bars),
    }


def _hist(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    h = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1).astype(np.float64)
    return h / max(h.sum(), 1.0)


def frechet_features(w: NoteArray) -> np.ndarray:
    """The 37-dimensional window description the Fréchet distance uses (module docstring)."""
    pc = np.bincount(w.pitch % 12, minlength=12).astype(np.float64)
    score = [np.corrcoef(pc, np.roll(prof, k))[0, 1] if pc.std() else 0.0 for prof in (KK_MAJOR, KK_MINOR) for k in range(12)]
    tonic = int(np.argmax(score)) % 12
    pc = np.roll(pc, -tonic) / pc.sum()
    onsets = np.unique(w.start) * w.seconds_per_beat
    ioi = _hist(np.diff(onsets), _IOI_EDGES) if len(onsets) > 1 else np.zeros(len(_IOI_EDGES) + 1)
    dur = _hist(w.duration * w.seconds_per_beat, _DUR_EDGES)
    sky = w.pitch[skyline(w)]
    ivl = _hist(np.abs(np.diff(sky)), _INTERVAL_EDGES) if len(sky) > 1 else np.zeros(len(_INTERVAL_EDGES) + 1)
    sizes = np.minimum([len(g) for g in onset_groups(w)], 5)
    chord = np.bincount(np.asarray(sizes) - 1, minlength=5) / len(sizes)
    return np.concatenate([pc, ioi, dur, ivl, chord])


def standardiser(ref: np.ndarray):
    """z-scores by `ref`'s per-dimension mean and spread, dropping constant dimensions, so
    every histogram bin counts alike in the Fréchet distance."""
    mu, sd = ref.mean(0), ref.std(0)
    keep = sd > 1e-6
    return lambda x: (x[:, keep] - mu[keep]) / sd[keep]


def describe(pieces: list[NoteArray]) -> dict[str, np.ndarray]:
    """Per-window texture, metrics and Fréchet features of `pieces` (already on the grid),
    and the index of the piece each window comes from."""
    rows, feats, owner = [], [], []
    for i, piece in enumerate(pieces):
        for w in windows(piece):
            rows.append(texture(w) | metrics(w))
            feats.append(frechet_features(w))
            owner.append(i)
    names = TEXTURE + METRICS
    table = np.array([[r[k] for k in names] for r in rows]).reshape(-1, len(names))
    return {"table": table, "features": np.array(feats), "piece": np.array(owner, dtype=np.int64)}


def summarise(table: np.ndarray, names: tuple[str, ...] = TEXTURE + METRICS) -> dict[str, dict[str, float]]:
    """Median and interquartile range per column."""
    q = np.percentile(table, [25, 50, 75], axis=0) if len(table) else np.full((3, len(names)), np.nan)
    return {k: dict(zip(("q25", "median", "q75"), np.round(q[:, i], 3).tolist())) for i, k in enumerate(names)}


def inside_iqr(generated: dict, real: dict) -> dict[str, bool]:
    """Is each generated median inside the real interquartile range?"""
    return {k: bool(real[k]["q25"] <= generated[k]["median"] <= real[k]["q75"]) for k in TEXTURE}


def piano_roll_png(rows: list[tuple[str, NoteArray, NoteArray]], path: Path, seconds: float = 16.0) -> None:
    """One row per quadrant: the engine's render beside a held-out real clip, the first
    `seconds` of each, in seconds (EMOPIA's beats are its transcription's 120 BPM, not the
    music's, so beats would not compare). The lead (`attributes.lead_line`) is drawn in
    orange over the accompaniment's blues and greens (shade: velocity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moodlane.engine.atomic import write_atomic

    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 2.3 * len(rows)), squeeze=False, sharex=True)
    for r, (name, gen, real) in enumerate(rows):
        for c, (who, notes) in enumerate((("MoodLane", gen), ("held-out EMOPIA", real))):
            ax = axes[r, c]
            spb = notes.seconds_per_beat
            keep = notes.start * spb < seconds
            lead = lead_line(notes)[keep]
            for s, d, p, v, ld in zip(notes.start[keep] * spb, notes.duration[keep] * spb, notes.pitch[keep], notes.velocity[keep], lead):
                color = plt.cm.Oranges(0.45 + 0.5 * v / 127) if ld else plt.cm.viridis(0.15 + 0.6 * v / 127)
                ax.add_patch(plt.Rectangle((s, p - 0.4), d, 0.8, color=color))
            lo, hi = (int(notes.pitch[keep].min()) - 2, int(notes.pitch[keep].max()) + 2) if keep.any() else (48, 72)
            ax.set(xlim=(0, seconds), ylim=(lo, hi), title=f"{name}: {who} ({notes.qpm:.0f} BPM; lead in orange)")
            for b in np.arange(0, seconds, notes.beats_per_bar * spb):
                ax.axvline(b, c="0.85", lw=0.6, zorder=0)
            ax.tick_params(labelsize=7)
            ax.title.set_fontsize(9)
        axes[r, 0].set_ylabel("MIDI pitch", fontsize=8)
    for c in range(2):
        axes[-1, c].set_xlabel("seconds (grey lines: bars)", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def lead_agreement(notes: NoteArray) -> tuple[float, float, float]:
    """(precision, recall, F1) of `lead_line`'s skyline, the parts unmarked, against the lead
    a piece marks (POP909's MELODY and BRIDGE tracks)."""
    truth = lead_line(notes)
    found = lead_line(replace(notes, part=None))
    hit = float((truth & found).sum())
    p, r = hit / max(found.sum(), 1), hit / max(truth.sum(), 1)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def _mean_agreement(rows: list[tuple[float, float, float]]) -> dict | None:
    if not rows:
        return None
    p, r, f = np.round(np.mean(rows, 0), 3).tolist()
    return {"precision": p, "recall": r, "f1": f, "songs": len(rows)}


def real_sets(data_dir: Path, pop_songs: int = 100, progress: bool = True) -> dict[str, list]:
    """Real pieces on the token grid: held-out EMOPIA by quadrant ("valid": [(q, notes)]), and
    for scale EMOPIA's training songs, the first `pop_songs` POP909 songs and VGMIDI."""
    from tqdm import tqdm

    from moodlane.engine.symbolic.tokens import on_grid
    from moodlane.engine.training.data import emopia, is_valid_split, pop909, vgmidi

    out: dict[str, list] = {"valid": [], "emopia_train": [], "pop909": [], "vgmidi": [], "lead_agreement": []}
    for it in tqdm(emopia(data_dir), desc="EMOPIA windows", disable=not progress, leave=False):
        key = "valid" if is_valid_split(it.group) else "emopia_train"
        out[key].append((it.quadrant, on_grid(it.load())))
    for it in tqdm(pop909(data_dir)[:pop_songs], desc="POP909 windows", disable=not progress, leave=False):
        notes = it.load()
        if notes.part is not None:
            out["lead_agreement"].append(lead_agreement(notes))
        out["pop909"].append((None, on_grid(notes)))
    for it in tqdm(vgmidi(data_dir), desc="VGMIDI windows", disable=not progress, leave=False):
        out["vgmidi"].append((None, on_grid(it.load())))
    return out


def quality_report(
    quadrants: dict[int, list[NoteArray]],
    grid: list[NoteArray],
    real: dict[str, list],
    out: Path | None = None,
    asked: dict[int, float] | None = None,
) -> dict:
    """The engine's renders against held-out real music: `quadrants` (renders at each
    quadrant centre), `grid` (renders over a valence/arousal grid), `real` (`real_sets`),
    `asked` (the notes per second the emotion map asks at each quadrant centre, beside
    what was played). Writes the piano-roll PNG into `out`."""
    valid = describe([n for _, n in real["valid"]])
    gen = describe(grid)
    z = standardiser(valid["features"])
    fd = {"generated_grid": round(frechet(z(gen["features"]), z(valid["features"])), 2)}
    tables = {"generated_grid": gen["table"], "held_out": valid["table"]}
    for name in ("emopia_train", "pop909", "vgmidi"):
        d = describe([n for _, n in real[name]])
        fd[name] = round(frechet(z(d["features"]), z(valid["features"])), 2)
        tables[name] = d["table"]
    valid_q = np.array([k for k, _ in real["valid"]])
    per_q = {}
    for q, pieces in sorted(quadrants.items()):
        r = summarise(valid["table"][valid_q[valid["piece"]] == q])
        g = summarise(describe(pieces)["table"])
        per_q[f"Q{q}"] = {"generated": {k: g[k] for k in TEXTURE}, "held_out": {k: r[k] for k in TEXTURE}, "inside_iqr": inside_iqr(g, r)}
        if asked and q in asked:
            per_q[f"Q{q}"]["map_asks_notes_per_s"] = round(float(asked[q]), 2)
    report = {
        "window_bars": WINDOW_BARS,
        "frechet": {
            "features": "key-normalised pitch-class, inter-onset-interval (s), duration (s), top-voice interval and"
            " chord-size histograms (37-D), each dimension standardised by held-out EMOPIA",
            "to": f"held-out EMOPIA ({len(valid['features'])} windows)",
            "windows": len(gen["features"]),
            **fd,
        },
        "texture_by_quadrant": per_q,
        # how well the lead of unmarked music (EMOPIA, VGMIDI, renders) is found, on POP909's marks
        "lead_line_vs_pop909": _mean_agreement(real.get("lead_agreement") or []),
        "metrics": {side: {k: v for k, v in summarise(t).items() if k in METRICS} for side, t in tables.items()},
    }
    if out is not None:
        rows = []
        for q, pieces in sorted(quadrants.items()):
            real_q = next((n for k, n in real["valid"] if k == q), None)
            if pieces and real_q is not None:
                rows.append((f"Q{q}", pieces[0], real_q))
        if rows:
            piano_roll_png(rows, Path(out) / "piano_rolls.png")
            report["piano_rolls"] = str(Path(out) / "piano_rolls.png")
    return report
