"""`moodlane eval audio`: what LARA-Gen's output sounds like to the Emotion Predictor and to
the external music model, for one or more LMs side by side (CE only against CE + LARA).

For each LM:
* **grid**: a 5 x 5 valence/arousal grid, one clip per point; Spearman and Pearson between
  requested and predicted valence and arousal, and the MSE;
* **ramp**: one clip whose automation runs from Q3 (sad, calm) to Q1 (happy, excited);
  Spearman of the predicted arousal and valence against time;
* **prompts**: clips for several instrument prompts at a neutral emotion, classified by the
  nearest instrument centroid of held-out real renders in the external model's embedding
  space (does "solo acoustic piano" sound unlike "solo string ensemble"?), with their top tags;
* **Fréchet distance** in that embedding space to held-out renders (windows from the encoded
  features), beside the codec's ceiling: its own reconstructions of those renders.
The symbolic engine's audio on the same grid is the reference row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.session import join, render_chunks
from moodlane.engine.training.audio_data import read_manifest
from moodlane.engine.training.audio_eval import correlation, grid_png, grid_stats

GRID_PROMPT = "solo acoustic piano"
PROMPTS = ("solo acoustic piano", "solo string ensemble", "solo organ", "solo nylon guitar")
TEMPO = 120.0
HOP_S = 0.5  # the encoded features' hop


def render_pcm(gen, curve: EmotionCurve, seconds: float, seed: int, prompt: str) -> np.ndarray:
    """Mono audio of `seconds` (whole bars at 120 BPM) from an audio generator."""
    beats = 4.0 * max(1, round(seconds * TEMPO / 240.0))
    chunks, qpm = render_chunks(gen, curve, beats, seed, TEMPO, prompt=prompt)
    return join(chunks, qpm).pcm[:, 0]


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (N, D)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # nearly singular: offset the diagonals (as FID does)
        eps = 1e-6 * np.eye(len(s1))
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def held_out(audio: str | Path, seconds: float, max_clips: int) -> list[tuple[dict, np.ndarray, np.ndarray, np.ndarray]]:
    """(record, codes, feature times, features) of held-out clips, the first `seconds` of each."""
    root = Path(audio)
    out = []
    for r in read_manifest(root):
        f = root / "encoded" / (r["id"] + ".npz")
        if r["split"] != "valid" or not f.is_file():
            continue
        d = np.load(f)
        keep = d["feature_times"] <= seconds
        if keep.sum() < 2:
            continue
        out.append(
            (r, d["codes"][:, : int(seconds * float(d["frame_rate"]))], d["feature_times"][keep], d["features"][keep].astype(np.float32))
        )
        if len(out) >= max_clips:
            break
    if not out:
        raise ValueError(f"{root}/encoded: no held-out clips (run `moodlane data encode --out {root}`)")
    return out


def codec_ceiling(codec, clips: list, music_model) -> np.ndarray:
    """The external model's windows of the codec's reconstructions of held-out clips."""
    from moodlane.engine.audio.music_model import features_of

    embs = []
    for _, codes, _, _ in clips:
        pcm = codec.decode(codes.astype(np.int64)[None])[0]
        embs.append(features_of(music_model, pcm, codec.sample_rate, HOP_S).embedding)
    return np.concatenate(embs)


def centroids(clips: list) -> dict[str, np.ndarray]:
    """Mean embedding of held-out real windows per instrument prompt."""
    out = {}
    for p in PROMPTS:
        inst = p.removeprefix("solo ")
        rows = [f for r, _, _, f in clips if r.get("instrument") == inst]
        if rows:
            out[p] = np.concatenate(rows).mean(0)
    return out


def eval_lm(
    gen, predictor, music_model, cents: dict[str, np.ndarray], grid: int, seconds: float, ramp_seconds: float, progress: bool = True
) -> tuple[dict, np.ndarray, list]:
    """One LM: grid, ramp, prompts. Returns the figures, the grid rows and all generated embeddings."""
    from tqdm import tqdm

    from moodlane.engine.audio.music_model import features_of

    sr = gen.sample_rate
    axis = np.linspace(-0.8, 0.8, grid)
    rows, embs = [], []
    t0, audio_s = time.time(), 0.0
    for i, (v, a) in enumerate(
        tqdm([(v, a) for v in axis for a in axis], desc=f"{gen.meta.get('label', 'lm')}: grid", disable=not progress, leave=False)
    ):
        pcm = render_pcm(gen, EmotionCurve.constant(Emotion(float(v), float(a))), seconds, i, GRID_PROMPT)
        audio_s += len(pcm) / sr
        f, x = predictor.window_features(pcm, sr)
        pv, pa = predictor.predict_features(f, x).mean
        rows.append((v, a, pv, pa))
        embs.append(features_of(music_model, pcm, sr, HOP_S).embedding)
    r = np.array(rows)
    # ramp: Q3 -> Q1 over `ramp_seconds`
    beats = ramp_seconds * TEMPO / 60.0
    curve = EmotionCurve.from_points([(0.0, Emotion(-0.8, -0.8)), (beats, Emotion(0.8, 0.8))])
    pcm = render_pcm(gen, curve, ramp_seconds, 1000, GRID_PROMPT)
    audio_s += len(pcm) / sr
    pred = predictor.predict(pcm, sr)
    ramp = {
        "seconds": ramp_seconds,
        "arousal_spearman": correlation(pred.times, pred.arousal),
        "valence_spearman": correlation(pred.times, pred.valence),
        "windows": [
            [round(float(t), 2), round(float(v), 3), round(float(a), 3)] for t, v, a in zip(pred.times, pred.valence, pred.arousal)
        ],
    }
    # prompts at a neutral emotion
    prompts = {}
    hits = []
    for j, p in enumerate(PROMPTS):
        pcm = render_pcm(gen, EmotionCurve.constant(Emotion(0.0, 0.0)), seconds, 2000 + j, p)
        audio_s += len(pcm) / sr
        f = features_of(music_model, pcm, sr, HOP_S)
        embs.append(f.embedding)
        m = f.embedding.mean(0)
        nearest = max(cents, key=lambda c: float(m @ cents[c] / (np.linalg.norm(m) * np.linalg.norm(cents[c]) + 1e-9))) if cents else None
        hits.append(nearest == p)
        top = np.argsort(-f.tags.mean(0))[:3] if f.tags is not None else []
        prompts[p] = {"nearest_real_instrument": nearest, "top_tags": [music_model.tag_names[k] for k in top]}
    figures = {
        "grid": {"points": grid * grid, "seconds_each": seconds, "prompt": GRID_PROMPT, **grid_stats(r)},
        "ramp": ramp,
        "prompts": {"accuracy": round(float(np.mean(hits)), 3), "chance": round(1 / len(PROMPTS), 3), "clips": prompts},
        "generation_x_realtime": round(audio_s / (time.time() - t0), 2),
    }
    return figures, r, embs


def eval_audio(
    generators: list[tuple[str, object]],
    predictor,
    audio: str | Path,
    out: str | Path,
    grid: int = 5,
    seconds: float = 8.0,
    ramp_seconds: float = 32.0,
    real_clips: int = 60,
    symbolic: bool = True,
    progress: bool = True,
) -> dict:
    """Every LM in `generators` ((label, LaraGenerator)) through the same tests; JSON and PNGs into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    music_model = predictor.backbone()
    clips = held_out(audio, 30.0, real_clips)
    real = np.concatenate([f for _, _, _, f in clips])
    cents = centroids(clips)
    codec = generators[0][1].codec
    recon = codec_ceiling(codec, clips, music_model)
    result: dict = {
        "held_out": {"clips": len(clips), "windows": len(real), "seconds_each": 30.0},
        "fd_codec_ceiling": round(frechet(recon, real), 3),
        "models": {},
    }
    grids, ramps = {}, {}
    for label, gen in generators:
        gen.meta["label"] = label
        figures, r, embs = eval_lm(gen, predictor, music_model, cents, grid, seconds, ramp_seconds, progress)
        gen_emb = np.concatenate(embs)
        figures["fd_to_held_out"] = round(frechet(gen_emb, real), 3)
        figures["fd_to_codec_reconstructions"] = round(frechet(gen_emb, recon), 3)
        hist = gen.meta.get("history") or []
        figures["valid_ce"] = hist[-1].get("valid_ce") if hist else None
        figures["valid_lara_cos"] = hist[-1].get("valid_lara_cos") if hist else None
        figures["training"] = {k: gen.meta.get("training", {}).get(k) for k in ("command", "steps", "wall_s")}
        figures["sampling"] = {"cfg": gen.sampling.cfg, "top_k": gen.sampling.top_k, "temperature": gen.sampling.temperature}
        result["models"][label] = figures
        grids[label], ramps[label] = r, figures["ramp"]["windows"]
        grid_png(out / f"grid_{label}.png", r, f"LARA-Gen ({label}): requested (o) -> predictor hears (x)")
    if symbolic:
        from moodlane.engine.training.audio_eval import eval_predictor_on_symbolic

        sym = eval_predictor_on_symbolic(predictor, out, grid=grid, n=1, bars=max(1, round(seconds * TEMPO / 240.0)), progress=progress)
        result["symbolic_reference"] = {k: sym[k] for k in ("valence", "arousal", "mse", "quadrant_agreement")}
    _ramp_png(out / "ramp.png", ramps, ramp_seconds)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return result


def _ramp_png(path: Path, ramps: dict[str, list], seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for label, w in ramps.items():
        w = np.array(w)
        axes[0].plot(w[:, 0], w[:, 2], label=label)
        axes[1].plot(w[:, 0], w[:, 1], label=label)
    for ax, name in zip(axes, ("arousal", "valence")):
        ax.plot([0, seconds], [-0.8, 0.8], "k--", lw=0.8, label="requested")
        ax.set_title(f"Q3 -> Q1 ramp: predicted {name}", fontsize=9)
        ax.set_xlabel("time (s)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
