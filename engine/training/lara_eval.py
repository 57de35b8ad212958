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

musicnn is the LARA target and the predictor's backbone, so it must not be the only judge:
* **seeds**: several per grid point, with bootstrap 95 % intervals over the points;
* **paired seeds** (`paired_seed`): each grid clip again with its emotion flipped and with
  it dropped, same seed; the predicted change along the requested direction, with intervals;
* **independent witnesses** (`witness`): a Fréchet distance in aiSFX's embedding (a CNN
  trained on sound-effects libraries) from the grid clips to held-out piano renders, beside
  the codec's own reconstructions of those renders, and a transcription of both (notes per
  second, key clarity, pitch-class entropy). Both come with the `[eval]` extra; without it
  they say why they are missing;
* **transcribed emotion** (`transcribed_emotion`): the symbolic judge (a linear model over
  jSymbolic-style attributes of EMOPIA/VGMIDI MIDI: mode, chord qualities, tempo, dynamics;
  no audio model) over those transcriptions, scored like the grid, and over the real
  reference's clips. It hears valence in the notes' harmony, where musicnn may hear timbre.
  It also made POP909's pseudo-labels, so it is independent of musicnn, not of those labels.

Two references keep the bars honest:
* **real reference** (`real_reference`): the predictor on held-out labelled renders, scored
  like the grid (Spearman of predicted against labelled valence and arousal, first `seconds`
  of each clip): what real music of the training data gets from the same judge;
* **level** (`levels`): 1 s windows of the grid clips that are louder than the 99th
  percentile of the held-out renders' windows, that run away (over twice the loudest render
  window), or are silent (under -60 dBFS), beside the same shares for the renders.
Held-out clips are taken evenly through the manifest (`spread`), so every source and
quadrant is in each reference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.session import join, render_chunks
from moodlane.engine.training.audio_data import label_at, read_manifest
from moodlane.engine.training.audio_eval import correlation, grid_png, grid_stats
from moodlane.engine.training.stats import bootstrap_ci, frechet

GRID_PROMPT = "solo acoustic piano"
PROMPTS = ("solo acoustic piano", "solo string ensemble", "solo organ", "solo nylon guitar")
TEMPO = 120.0
HOP_S = 0.5  # the encoded features' hop
STATS = ("notes_per_s", "key_clarity", "pc_entropy", "median_note_s")  # of a transcription (`note_stats`)


def render_pcm(gen, curve: EmotionCurve, seconds: float, seed: int, prompt: str) -> np.ndarray:
    """Mono audio of `seconds` (whole bars at 120 BPM) from an audio generator."""
    beats = 4.0 * max(1, round(seconds * TEMPO / 240.0))
    chunks, qpm = render_chunks(gen, curve, beats, seed, TEMPO, prompt=prompt)
    return join(chunks, qpm).pcm[:, 0]


def spread(recs: list[dict], n: int) -> list[dict]:
    """At most `n` records evenly spaced through `recs`: the manifest runs source by source
    and quadrant by quadrant, so its first clips would all be EMOPIA's Q1."""
    if len(recs) <= n:
        return recs
    return [recs[i] for i in np.unique(np.linspace(0, len(recs) - 1, n).round().astype(int))]


def held_out(audio: str | Path, seconds: float, max_clips: int) -> list[tuple[dict, np.ndarray]]:
    """(record, external-model features) of held-out clips spread over the set, the first
    `seconds` of each."""
    root = Path(audio)
    out = []
    recs = [r for r in read_manifest(root) if r["split"] == "valid" and (root / "encoded" / (r["id"] + ".npz")).is_file()]
    for r in spread(recs, max_clips):
        d = np.load(root / "encoded" / (r["id"] + ".npz"))
        keep = d["feature_times"] <= seconds
        if keep.sum() >= 2:
            out.append((r, d["features"][keep].astype(np.float32)))
    if not out:
        raise ValueError(f"{root}/encoded: no held-out clips (run `moodlane data encode --out {root}`)")
    return out


def read_clip(audio: str | Path, rec: dict, seconds: float) -> tuple[np.ndarray, int]:
    """The first `seconds` of a rendered clip, mono."""
    import soundfile as sf

    pcm, sr = sf.read(Path(audio) / rec["path"], dtype="float32", frames=int(seconds * rec["sample_rate"]))
    return (pcm if pcm.ndim == 1 else pcm.mean(1)), sr


def reconstruct(codec, pcm: np.ndarray, sr: int, n_q: int) -> np.ndarray:
    """The codec's own round trip at the LM's codebooks: what an LM on it could at best say."""
    from moodlane.engine.audio.music_model import resample

    x = resample(pcm, sr, codec.sample_rate)
    return codec.decode(codec.encode(x, n_q=n_q), len(x))[0]


def codec_ceiling(codec, n_q: int, audio: str | Path, clips: list, music_model) -> np.ndarray:
    """The external model's windows of the codec's reconstructions of held-out clips (encoded
    here with that codec: the stored tokens may be another codec's)."""
    from moodlane.engine.audio.music_model import features_of

    embs = []
    for rec, _ in clips:
        pcm, sr = read_clip(audio, rec, 30.0)
        embs.append(features_of(music_model, reconstruct(codec, pcm, sr, n_q), codec.sample_rate, HOP_S).embedding)
    return np.concatenate(embs)


def centroids(clips: list) -> dict[str, np.ndarray]:
    """Mean embedding of held-out real windows per instrument prompt."""
    out = {}
    for p in PROMPTS:
        inst = p.removeprefix("solo ")
        rows = [f for r, f in clips if r.get("instrument") == inst]
        if rows:
            out[p] = np.concatenate(rows).mean(0)
    return out


def eval_lm(
    gen,
    predictor,
    music_model,
    cents: dict[str, np.ndarray],
    grid: int,
    seconds: float,
    ramp_seconds: float,
    progress: bool = True,
    seeds: int = 1,
    ramp_seeds: int = 1,
) -> tuple[dict, np.ndarray, list, list]:
    """One LM: grid (`seeds` clips per point), ramp, prompts. Returns the figures, the grid
    rows (requested V, A, predicted V, A, point, seed), all generated embeddings and the grid
    clips' audio."""
    from tqdm import tqdm

    from moodlane.engine.audio.music_model import features_of

    sr = gen.sample_rate
    rows, embs, pcms = [], [], []
    t0, audio_s = time.time(), 0.0
    for i, v, a, k in tqdm(grid_requests(grid, seeds), desc=f"{gen.meta.get('label', 'lm')}: grid", disable=not progress, leave=False):
        pcm = render_pcm(gen, EmotionCurve.constant(Emotion(v, a)), seconds, grid_seed(i, k), GRID_PROMPT)
        audio_s += len(pcm) / sr
        pv, pa = predict_mean(predictor, pcm, sr)
        rows.append((v, a, pv, pa, i, k))
        embs.append(features_of(music_model, pcm, sr, HOP_S).embedding)
        pcms.append(pcm)
    r = np.array(rows)
    # ramp: Q3 -> Q1 over `ramp_seconds`, `ramp_seeds` times
    beats = ramp_seconds * TEMPO / 60.0
    curve = EmotionCurve.from_points([(0.0, Emotion(-0.8, -0.8)), (beats, Emotion(0.8, 0.8))])
    per_seed = []
    for k in range(ramp_seeds):
        pcm = render_pcm(gen, curve, ramp_seconds, 1000 + k, GRID_PROMPT)
        audio_s += len(pcm) / sr
        pred = predictor.predict(pcm, sr)
        per_seed.append((correlation(pred.times, pred.arousal), correlation(pred.times, pred.valence), pred))
    pred = per_seed[0][2]
    ramp = {
        "seconds": ramp_seconds,
        "seeds": ramp_seeds,
        "arousal_spearman": per_seed[0][0],  # seed 1000, the one clip earlier reports had
        "valence_spearman": per_seed[0][1],
        "arousal_spearman_per_seed": [x[0] for x in per_seed],
        "arousal_spearman_median": _median([x[0] for x in per_seed]),
        "valence_spearman_median": _median([x[1] for x in per_seed]),
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
    groups = [np.flatnonzero(r[:, 4] == i) for i in range(grid * grid)]
    figures = {
        "grid": {
            "points": grid * grid,
            "seeds_per_point": seeds,
            "seconds_each": seconds,
            "prompt": GRID_PROMPT,
            **grid_stats(r[:, :4]),
            **spearman_cis(r, groups),
            **({"note": "one sample per point: intervals resample the points only"} if seeds == 1 else {}),
        },
        "ramp": ramp,
        "prompts": {"accuracy": round(float(np.mean(hits)), 3), "chance": round(1 / len(PROMPTS), 3), "clips": prompts},
        "generation_x_realtime": round(audio_s / (time.time() - t0), 2),
    }
    return figures, r, embs, pcms


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(float(np.median(xs)), 3) if xs else None


def grid_requests(grid: int, seeds: int) -> list[tuple[int, float, float, int]]:
    """The grid's clips, (point, valence, arousal, k): `seeds` of them at each point of a
    `grid` x `grid` lattice over [-0.8, 0.8]^2, valence-major; `grid_seed(point, k)` seeds each."""
    axis = np.linspace(-0.8, 0.8, grid)
    return [(i, float(v), float(a), k) for i, (v, a) in enumerate((v, a) for v in axis for a in axis) for k in range(seeds)]


def grid_seed(point: int, k: int) -> int:
    return point + 1000 * k  # k = 0: the seed one clip per point always had


def predict_mean(predictor, pcm: np.ndarray, sr: int) -> tuple[float, float]:
    f, x = predictor.window_features(pcm, sr)
    pv, pa = predictor.predict_features(f, x).mean
    return float(pv), float(pa)


def paired_seed(gen, predictor, rows: np.ndarray, seconds: float, progress: bool = True) -> dict:
    """Each grid clip's seed again with the emotion flipped (-v, -a) and with it dropped (no AV
    tokens). Per clip, the predicted change along the requested direction: sign(a) x
    (predicted arousal with the true emotion - with the flipped one), likewise for valence and
    for dropped; the mean over clips whose request is off the axis, with a bootstrap 95 %
    interval over clips. An LM that ignores its emotion gives intervals around 0."""
    from tqdm import tqdm

    sr = gen.sample_rate
    flip, drop = [], []
    for v, a, _, _, i, k in tqdm(rows, desc=f"{gen.meta.get('label', 'lm')}: paired seeds", disable=not progress, leave=False):
        seed = grid_seed(int(i), int(k))
        flip.append(predict_mean(predictor, render_pcm(gen, EmotionCurve.constant(Emotion(-v, -a)), seconds, seed, GRID_PROMPT), sr))
        gen.av_dropped = True
        try:
            drop.append(predict_mean(predictor, render_pcm(gen, EmotionCurve.constant(Emotion(v, a)), seconds, seed, GRID_PROMPT), sr))
        finally:
            gen.av_dropped = False
    flip, drop = np.array(flip), np.array(drop)
    out = {"clips": len(rows)}
    for col, name in ((0, "valence"), (1, "arousal")):
        use = np.abs(rows[:, col]) > 0.1
        sign = np.sign(rows[use, col])
        for other, kind in ((flip, "flipped"), (drop, "dropped")):
            d = sign * (rows[use, col + 2] - other[use, col])
            idx = [np.array([j]) for j in range(len(d))]
            out[f"{name}_vs_{kind}"] = {"mean": round(float(d.mean()), 4), "ci95": bootstrap_ci(lambda p, d=d: float(d[p].mean()), idx)}
    return out


def spearman_cis(r: np.ndarray, groups: list[np.ndarray]) -> dict:
    """Bootstrap 95 % intervals of the valence and arousal Spearman of rows (requested V, A,
    judged V, A, ...), resampling `groups` of rows."""
    rho = lambda col: lambda pick: correlation(r[pick, col], r[pick, col + 2])  # noqa: E731
    return {"valence_spearman_ci95": bootstrap_ci(rho(0), groups), "arousal_spearman_ci95": bootstrap_ci(rho(1), groups)}


def transcribed_emotion(judge, notes: list, requested: np.ndarray, group: np.ndarray) -> dict:
    """The symbolic judge over transcriptions (`notes`, one `Notes` per clip): Spearman of its
    readings against the `requested` (valence, arousal) per clip, with intervals resampling
    clips by `group` (the grid point); clips transcribed without notes are left out."""
    from moodlane.engine.training.witness import judged_emotion

    got = [judged_emotion(judge, n, TEMPO) for n in notes]
    keep = [i for i, g in enumerate(got) if g is not None]
    if len(keep) < 4:
        return {"clips": len(keep), "note": "too few clips with transcribed notes"}
    r = np.array([(*requested[i][:2], *got[i]) for i in keep])
    g = np.asarray(group)[keep]
    return {
        "judge": "symbolic judge (engine/weights/judge.json) over Basic Pitch notes",
        "clips": len(r),
        "valence_spearman": correlation(r[:, 0], r[:, 2]),
        "arousal_spearman": correlation(r[:, 1], r[:, 3]),
        **spearman_cis(r, [np.flatnonzero(g == k) for k in np.unique(g)]),
    }


def real_reference(predictor, audio: str | Path, seconds: float, max_clips: int, judge=None) -> dict:
    """The predictor on held-out labelled renders: Spearman of its clip means against the
    labels, with bootstrap 95 % intervals over clips. The grid's figures cannot be expected to
    beat this. With a `judge` (and the transcriber installed), the transcribed-emotion witness
    on the same clips too."""
    rows, pcms = [], []
    recs = [r for r in read_manifest(Path(audio)) if r["split"] == "valid" and r.get("labels") and r.get("duration", 0) >= seconds]
    for r in spread(recs, max_clips):
        va = np.nanmean(label_at(r, np.arange(0.0, seconds, 0.5)), axis=0)  # a VGMIDI curve: its mean over the clip
        if np.isfinite(va).all():
            pcm, sr = read_clip(audio, r, seconds)
            rows.append((*va, *predict_mean(predictor, pcm, sr)))
            pcms.append((pcm, sr))
    if len(rows) < 4:
        return {"clips": len(rows), "note": "too few held-out labelled clips"}
    r = np.array(rows)
    out = {"clips": len(r), "seconds_each": seconds, **grid_stats(r), **spearman_cis(r, [np.array([j]) for j in range(len(r))])}
    if judge is not None:
        from moodlane.engine.training.witness import TranscriberMissing, transcriber

        try:
            notes = [transcriber()(pcm, sr) for pcm, sr in pcms]
            out["transcribed_emotion"] = transcribed_emotion(judge, notes, r, np.arange(len(r)))
        except TranscriberMissing as e:
            out["transcribed_emotion"] = f"skipped: {e}"
    return out


def window_rms(pcm: np.ndarray, sr: int, window_s: float = 1.0) -> np.ndarray:
    n = int(sr * window_s)
    k = len(pcm) // n
    return np.sqrt(np.mean(pcm[: k * n].reshape(k, n) ** 2, axis=1)) if k else np.zeros(0)


def levels(pcms: list[np.ndarray], sr: int, renders: list[tuple[np.ndarray, int]]) -> dict:
    """Shares of 1 s windows that are louder than the renders' 99th percentile window, that
    run away (over twice the loudest render window: the drones an LM can fall into), or are
    silent (under -60 dBFS), generated beside renders."""
    real = np.concatenate([window_rms(p, r_sr) for p, r_sr in renders])
    loud, runaway = float(np.percentile(real, 99)), 2.0 * float(real.max())
    gen = np.concatenate([window_rms(p, sr) for p in pcms])

    def shares(x: np.ndarray) -> dict:
        m = lambda pick: round(float(np.mean(pick)), 4)  # noqa: E731
        return {"too_loud": m(x > loud), "runaway": m(x > runaway), "silent": m(x < 1e-3), "median_rms": round(float(np.median(x)), 4)}

    return {"loud_rms": round(loud, 4), "runaway_rms": round(runaway, 4), "generated": shares(gen), "renders": shares(real)}


def instrument_renders(
    audio: str | Path, seconds: float, max_clips: int, instrument: str = "acoustic piano"
) -> list[tuple[np.ndarray, int]]:
    """(audio, sample rate) of held-out renders of one instrument spread over the set: the
    first `seconds` of each."""
    recs = [
        r
        for r in read_manifest(Path(audio))
        if r["split"] == "valid" and r.get("instrument") == instrument and r.get("duration", 0) >= seconds
    ]
    return [read_clip(audio, r, seconds) for r in spread(recs, max_clips)]


def renders_by_instrument(audio: str | Path, seconds: float, per: int) -> dict[str, list[tuple[np.ndarray, int]]]:
    """`per` held-out renders of every instrument the manifest has."""
    names = sorted({r.get("instrument") for r in read_manifest(Path(audio)) if r.get("instrument")})
    return {k: instrument_renders(audio, seconds, per, k) for k in names}


def witness(
    pcms: list[np.ndarray],
    sr: int,
    renders: list,
    codec,
    n_q: int,
    seconds: float,
    transcribe=None,
    embed=None,
    instruments: dict[str, list] | None = None,
    judge=None,
    rows: np.ndarray | None = None,
) -> dict:
    """The independent judges of `pcms` (grid clips) against held-out piano renders ((audio,
    rate)): aiSFX Fréchet distances (generated -> renders, and the LM's codec's own
    reconstructions -> renders as the ceiling; their ratio), which instrument the clips and
    the reconstructions sound like among `instruments`' renders, and transcription statistics;
    with a `judge` and the grid's `rows` (requested V, A, predicted V, A, point, seed), the
    transcribed emotion."""
    from moodlane.engine.training.witness import TranscriberMissing, heard_as, note_stats, sfx_embedding, transcriber

    recon = [reconstruct(codec, pcm, r_sr, n_q) for pcm, r_sr in renders]
    out: dict = {"renders": len(renders), "seconds_each": seconds}
    try:
        embed = embed or sfx_embedding()
        real = np.concatenate([embed(pcm, r_sr) for pcm, r_sr in renders])
        gen_e = np.concatenate([embed(p, sr) for p in pcms])
        rec_e = np.concatenate([embed(p, codec.sample_rate) for p in recon])
        fd_gen, fd_rec = frechet(gen_e, real), frechet(rec_e, real)
        out["sfx_fd"] = {
            "embedding": getattr(embed, "name", "aisfx"),
            "generated_to_renders": round(fd_gen, 2),
            "codec_reconstructions_to_renders": round(fd_rec, 2),
            "ratio": round(fd_gen / max(fd_rec, 1e-9), 3),
        }
        if instruments:
            sets = {"generated": [(p, sr) for p in pcms], "codec_reconstructions": [(p, codec.sample_rate) for p in recon]}
            out["heard_as"] = heard_as(embed, sets, instruments)
    except TranscriberMissing as e:
        out["sfx_fd"] = f"skipped: {e}"
    try:
        transcribe = transcribe or transcriber()

        def stats(clips: list, rate: int, notes: list | None = None) -> dict:
            notes = notes if notes is not None else [transcribe(p, rate) for p in clips]
            figs = [note_stats(n, len(p) / rate) for n, p in zip(notes, clips)]
            return {k: round(float(np.nanmean([f[k] for f in figs])), 4) for k in STATS}

        heard = [transcribe(p, sr) for p in pcms]
        out["transcription"] = {
            "transcriber": getattr(transcribe, "name", "basic-pitch"),
            "generated": stats(pcms, sr, heard),
            "renders": stats([p for p, _ in renders], renders[0][1]) if renders else None,
            "codec_reconstructions": stats(recon, codec.sample_rate),
        }
        if judge is not None and rows is not None:
            out["transcribed_emotion"] = transcribed_emotion(judge, heard, rows, rows[:, 4])
    except TranscriberMissing as e:
        out["transcription"] = f"skipped: {e}"
    return out


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
    seeds: int = 1,
    paired: bool = True,
    witnesses: bool = True,
    piano_clips: int = 20,
    codecs: dict | None = None,
    ramp_seeds: int = 1,
    reference_clips: int = 64,
) -> dict:
    """Every LM in `generators` ((label, LaraGenerator)) through the same tests; JSON and PNGs
    into `out`. `codecs`: label -> the PyTorch codec each LM was trained on (default: the
    generator's own; an ONNX generator's codec only decodes), for its ceilings."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    music_model = predictor.backbone()
    clips = held_out(audio, 30.0, real_clips)
    real = np.concatenate([f for _, f in clips])
    cents = centroids(clips)
    result: dict = {"held_out": {"clips": len(clips), "windows": len(real), "seconds_each": 30.0}, "models": {}}
    renders = instrument_renders(audio, seconds, piano_clips) if witnesses else []
    instruments = renders_by_instrument(audio, seconds, max(2, piano_clips // 2)) if witnesses else {}
    judge = None
    if witnesses:
        from moodlane.engine.symbolic.judge import SymbolicJudge

        judge = SymbolicJudge.shipped()
    result["real_reference"] = real_reference(predictor, audio, seconds, reference_clips, judge)
    grids, ramps = {}, {}
    for label, gen in generators:
        gen.meta["label"] = label
        codec = (codecs or {}).get(label, gen.codec)
        recon = codec_ceiling(codec, gen.cfg.n_q, audio, clips, music_model)
        figures, r, embs, pcms = eval_lm(gen, predictor, music_model, cents, grid, seconds, ramp_seconds, progress, seeds, ramp_seeds)
        figures["fd_codec_ceiling"] = round(frechet(recon, real), 3)
        if paired:
            figures["paired_seed"] = paired_seed(gen, predictor, r, seconds, progress)
        if witnesses and renders:
            figures["witness"] = witness(
                pcms, gen.sample_rate, renders, codec, gen.cfg.n_q, seconds, instruments=instruments, judge=judge, rows=r
            )
            figures["level"] = levels(pcms, gen.sample_rate, renders)
        elif witnesses:
            figures["witness"] = "skipped: no held-out acoustic-piano renders"
        gen_emb = np.concatenate(embs)
        figures["fd_to_held_out"] = round(frechet(gen_emb, real), 3)
        figures["fd_to_codec_reconstructions"] = round(frechet(gen_emb, recon), 3)
        hist = gen.meta.get("history") or []
        figures["valid_ce"] = hist[-1].get("valid_ce") if hist else None
        figures["valid_lara_cos"] = hist[-1].get("valid_lara_cos") if hist else None
        figures["training"] = {k: gen.meta.get("training", {}).get(k) for k in ("command", "steps", "wall_s")}
        figures["sampling"] = {k: getattr(gen.sampling, k) for k in ("cfg", "av_cfg", "top_k", "temperature")}
        result["models"][label] = figures
        grids[label], ramps[label] = r, figures["ramp"]["windows"]
        slug = "".join(c if c.isalnum() or c in "-." else "_" for c in label)
        grid_png(out / f"grid_{slug}.png", r[:, :4], f"LARA-Gen ({label}): requested (o) -> predictor hears (x)")
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
