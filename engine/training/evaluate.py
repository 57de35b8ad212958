"""`moodlane eval symbolic`: the judge on a data folder, then the generator judged by it.

(a) judge quadrant accuracy / F1 on EMOPIA clips, VA correlation on VGMIDI bars;
(b) EmoGen's objective accuracy: N pieces per quadrant centre, share judged in that quadrant;
(c) continuous control: Spearman between requested and judged V and A over a 5x5 VA grid;
(d) within-piece control: a Q3 -> Q1 automation ramp, judged arousal bar by bar;
(e) EmoGen's attribute forest: 4-quadrant accuracy of a random forest on EMOPIA's clip
    attributes, song-level cross-validation (all attributes, and the generator's own);
(f) the density sweep (arousal in the notes at a fixed tempo);
(g) quality (`engine.training.quality`): the pieces of (b) and (c) against held-out real
    music: a Fréchet distance, texture per quadrant, MusPy-style metrics, piano rolls.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from moodlane.engine.atomic import write_atomic
from moodlane.engine.automation import EmotionCurve, Lane
from moodlane.engine.emotion import QUADRANT_CENTRES, Emotion
from moodlane.engine.registry import GeneratorOptions, load_generator
from moodlane.engine.session import render
from moodlane.engine.symbolic.generator import SymbolicGenerator
from moodlane.engine.symbolic.judge import SymbolicJudge
from moodlane.engine.training.data import resolve_data_dir
from moodlane.engine.training.emotion import judge_report
from moodlane.engine.training.labelled import labelled_features
from moodlane.engine.training.quality import quality_report, real_sets

log = logging.getLogger(__name__)
GRID = (-0.8, -0.4, 0.0, 0.4, 0.8)


def ramp(start: Emotion, end: Emotion, beats: float) -> EmotionCurve:
    t = np.array([0.0, beats])
    return EmotionCurve(Lane(t, np.array([start.valence, end.valence])), Lane(t, np.array([start.arousal, end.arousal])))


def objective_accuracy(
    gen: SymbolicGenerator, judge: SymbolicJudge, n: int, bars: int, progress: bool = True, keep: dict | None = None
) -> dict:
    """`keep`, when given, receives the pieces: quadrant -> [NoteArray]."""
    per_q, probs = {}, {}
    it = tqdm(total=4 * n, desc="quadrant pieces", disable=not progress)
    for q, e in QUADRANT_CENTRES.items():
        hits, ps = [], []
        for seed in range(n):
            notes, _ = render(gen, EmotionCurve.constant(e), bars, seed=1000 * q + seed)
            if keep is not None:
                keep.setdefault(q, []).append(notes)
            j = judge.judge(notes)
            hits.append(j.quadrant == q)
            ps.append(j.probabilities)
            it.update(1)
        per_q[f"Q{q}"] = round(float(np.mean(hits)), 4)
        probs[f"Q{q}"] = np.round(np.mean(ps, 0), 3).tolist()
    it.close()
    acc = float(np.mean(list(per_q.values())))
    return {
        "accuracy": round(acc, 4),
        "accuracy_se": round(float(np.sqrt(acc * (1 - acc) / (4 * n))), 4),  # binomial standard error
        "per_quadrant": per_q,
        "mean_probabilities": probs,
        "pieces": 4 * n,
        "bars": bars,
    }


def va_grid(gen: SymbolicGenerator, judge: SymbolicJudge, n: int, bars: int, progress: bool = True, keep: list | None = None) -> dict:
    """`keep`, when given, receives the pieces."""
    req, got = [], []
    it = tqdm(total=len(GRID) ** 2 * n, desc="VA grid", disable=not progress)
    for v in GRID:
        for a in GRID:
            for seed in range(n):
                notes, _ = render(gen, EmotionCurve.constant(Emotion(v, a)), bars, seed=seed)
                if keep is not None:
                    keep.append(notes)
                j = judge.judge(notes)
                req.append((v, a))
                got.append((j.valence, j.arousal))
                it.update(1)
    it.close()
    req, got = np.array(req), np.array(got)
    return {
        "valence_spearman": round(float(spearmanr(req[:, 0], got[:, 0])[0]), 4),
        "arousal_spearman": round(float(spearmanr(req[:, 1], got[:, 1])[0]), 4),
        "points": len(req),
        "bars": bars,
        "requested": req.tolist(),
        "judged": np.round(got, 4).tolist(),
    }


def ramp_control(gen: SymbolicGenerator, judge: SymbolicJudge, n: int, bars: int, progress: bool = True) -> dict:
    curve = ramp(QUADRANT_CENTRES[3], QUADRANT_CENTRES[1], 4.0 * (bars - 1))
    rows = []
    for seed in tqdm(range(n), desc="Q3->Q1 ramps", disable=not progress):
        notes, _ = render(gen, curve, bars, seed=seed)
        rows.append([j.arousal for j in judge.judge_bars(notes)][:bars])
    m = np.array([r + [r[-1]] * (bars - len(r)) for r in rows]).mean(0)
    requested = [curve.at(4.0 * b).arousal for b in range(bars)]
    first, last = m[: bars // 4].mean(), m[-(bars // 4) :].mean()
    return {
        "arousal_spearman_vs_bar": round(float(spearmanr(np.arange(bars), m)[0]), 4),
        "rising_bar_fraction": round(float((np.diff(m) > 0).mean()), 4),
        "first_quarter_mean": round(float(first), 4),
        "last_quarter_mean": round(float(last), 4),
        "requested_arousal": np.round(requested, 3).tolist(),
        "judged_arousal_per_bar": np.round(m, 4).tolist(),
        "pieces": n,
    }


AROUSAL_STEPS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def density_sweep(gen: SymbolicGenerator, n: int, bars: int, tempo: float = 120.0, progress: bool = True) -> dict:
    """(f) arousal in the notes at a fixed tempo (a DAW sets it): notes per beat at each
    arousal step, for each valence of the grid, averaged over `n` seeds."""
    table, held, pitch = {}, {}, {}
    it = tqdm(total=len(GRID) * len(AROUSAL_STEPS) * n, desc="density sweep", disable=not progress)
    for v in GRID:
        row, dur, mean_pitch = [], [], []
        for a in AROUSAL_STEPS:
            pieces = []
            for seed in range(n):
                pieces.append(render(gen, EmotionCurve.constant(Emotion(v, a)), bars, seed=500 + seed, qpm=tempo)[0])
                it.update(1)
            row.append(round(float(np.mean([len(p) / (4.0 * bars) for p in pieces])), 3))
            dur.append(round(float(np.mean(np.concatenate([p.duration for p in pieces]))), 3))  # articulation
            mean_pitch.append(round(float(np.mean(np.concatenate([p.pitch for p in pieces]))), 1))  # register
        table[f"{v:+.1f}"], held[f"{v:+.1f}"], pitch[f"{v:+.1f}"] = row, dur, mean_pitch
    it.close()
    rows = np.array(list(table.values()))
    return {
        "tempo_bpm": tempo,
        "arousal": list(AROUSAL_STEPS),
        "notes_per_beat_by_valence": table,
        "beats_held_by_valence": held,
        "mean_pitch_by_valence": pitch,
        "monotone_steps": round(float((np.diff(rows, axis=1) > 0).mean()), 4),
        "ratio_plus1_over_minus1": {k: round(r[-1] / max(r[0], 1e-9), 2) for k, r in table.items()},
        "pieces": int(rows.size * n),
        "bars": bars,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    g = results["va_grid"]
    req, got = np.array(g["requested"]), np.array(g["judged"])
    keys = sorted({tuple(r) for r in req.tolist()})
    for k in keys:
        m = (req == k).all(1)
        mean = got[m].mean(0)
        ax1.annotate("", xy=mean, xytext=k, arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.8})
        ax1.scatter(*k, c="tab:blue", s=18)
        ax1.scatter(*mean, c="tab:red", s=18)
    ax1.scatter([], [], c="tab:blue", label="requested")
    ax1.scatter([], [], c="tab:red", label="judged (mean)")
    ax1.set(
        xlim=(-1, 1),
        ylim=(-1, 1),
        xlabel="valence",
        ylabel="arousal",
        title=f"VA grid: Spearman V {g['valence_spearman']:.2f}, A {g['arousal_spearman']:.2f}",
    )
    ax1.axhline(0, c="0.85", lw=0.8)
    ax1.axvline(0, c="0.85", lw=0.8)
    ax1.legend(loc="lower right")
    r = results["ramp"]
    bars = np.arange(len(r["requested_arousal"]))
    ax2.plot(bars, r["requested_arousal"], "--", label="requested arousal")
    ax2.plot(bars, r["judged_arousal_per_bar"], "-o", ms=3, label="judged arousal (mean)")
    ax2.set(xlabel="bar", ylabel="arousal", ylim=(-1, 1), title=f"Q3 -> Q1 ramp: Spearman {r['arousal_spearman_vs_bar']:.2f}")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def attribute_forest(lab: dict, conditioning: tuple[str, ...], folds: int = 5) -> dict:
    """(e): can the attributes tell EMOPIA's quadrants apart? Folds never split a song."""
    from moodlane.engine.symbolic.attributes import INDEX
    from moodlane.engine.symbolic.selection import forest_cv_accuracy

    X, y, g = lab["emopia_x"], lab["emopia_q"], lab["emopia_group"]
    out = {"clips": int(len(y)), "folds": folds}
    for name, cols in (("all_attributes", list(INDEX.values())), ("conditioning_attributes", [INDEX[a] for a in conditioning])):
        acc, f1 = forest_cv_accuracy(X[:, cols], y, g, folds)
        out[name] = {"n": len(cols), "accuracy": round(acc, 4), "macro_f1": round(f1, 4)}
    return out


@dataclass(frozen=True)
class EvalJob:
    """`moodlane eval symbolic`: how much to generate, with which generator, where to write."""

    data: str | None = None
    n: int = 25  # pieces per quadrant (and ramps)
    grid_n: int = 3  # pieces per VA grid point
    bars: int = 16
    density_n: int = 4  # pieces per (valence, arousal) point of the density sweep
    out: str = "out/eval"
    generator: GeneratorOptions = GeneratorOptions()  # the symbolic engine and its sampling


def run_eval(args: EvalJob) -> dict:
    t0 = time.time()
    data_dir = resolve_data_dir(args.data)
    judge = SymbolicJudge.shipped()
    lab = labelled_features(data_dir)
    results: dict = {
        "data": str(data_dir),
        "judge": {"all": judge_report(judge, lab), "validation_split": judge_report(judge, lab, valid=True)},
    }
    if args.generator.engine != "symbolic":
        raise ValueError(f"eval symbolic judges the symbolic engine, got {args.generator.engine!r}")
    gen = load_generator(args.generator)
    plain = load_generator(replace(args.generator, mode_rule=False))
    results["sampling"] = asdict(gen.sampling) | {
        "precision": args.generator.precision,
        "precision_used": gen.model.precision,
    }
    quadrants, grid = {}, []
    results["objective"] = objective_accuracy(gen, judge, args.n, args.bars, keep=quadrants)
    # EmoGen's attribute control alone, without the valence -> mode rule
    results["objective_attributes_only"] = objective_accuracy(plain, judge, args.n, args.bars)
    results["va_grid"] = va_grid(gen, judge, args.grid_n, max(4, args.bars // 2), keep=grid)
    results["ramp"] = ramp_control(gen, judge, args.n, args.bars)
    results["density"] = density_sweep(gen, args.density_n, max(4, args.bars // 2))
    results["attribute_forest"] = attribute_forest(lab, gen.cfg.attributes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    asked = {q: gen.map.asks_per_second(e, mode=gen.sampling.mapping) for q, e in QUADRANT_CENTRES.items()} if gen.map.timed else None
    results["quality"] = quality_report(quadrants, grid, real_sets(data_dir), out, asked)
    results["wall_s"] = round(time.time() - t0, 1)
    write_atomic(out / "results.json", json.dumps(results, indent=1).encode())
    plot(results, out / "va_grid.png")
    summary = {k: v for k, v in results.items() if k not in ("va_grid", "ramp", "objective_attributes_only", "density")}
    summary["density"] = {k: results["density"][k] for k in ("notes_per_beat_by_valence", "monotone_steps", "ratio_plus1_over_minus1")}
    summary["va_grid"] = {k: results["va_grid"][k] for k in ("valence_spearman", "arousal_spearman", "points")}
    summary["ramp"] = {
        k: results["ramp"][k] for k in ("arousal_spearman_vs_bar", "rising_bar_fraction", "first_quarter_mean", "last_quarter_mean")
    }
    summary["objective_attributes_only"] = {k: results["objective_attributes_only"][k] for k in ("accuracy", "accuracy_se", "per_quadrant")}
    q = results["quality"]
    summary["quality"] = {
        "frechet": q["frechet"],
        "texture_inside_held_out_iqr": {k: v["inside_iqr"] for k, v in q["texture_by_quadrant"].items()},
        "metrics_median": {side: {k: v["median"] for k, v in m.items()} for side, m in q["metrics"].items()},
    }
    summary["files"] = [str(out / "results.json"), str(out / "va_grid.png")] + ([q["piano_rolls"]] if "piano_rolls" in q else [])
    return summary
