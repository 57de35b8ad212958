"""Figures for the audio foundation: the codec beside Opus (`moodlane codec roundtrip`,
`moodlane eval codec`, `moodlane bench codec`) and the Emotion Predictor on the symbolic
engine's own renders (`moodlane eval predictor`). Reads files and runs ffmpeg: I/O lives here,
not in the engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from moodlane.engine.audio.codec import Codec
from moodlane.engine.audio.losses import mel_distance, si_snr
from moodlane.engine.audio.music_model import resample

OPUS_KBPS = (6.0, 12.0)  # libopus's lowest rate, and the next rate EnCodec's paper reports


class AudioFileError(ValueError):
    """An audio file that cannot be read or judged."""


def read_audio(path: str | Path, min_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate, or one clear AudioFileError."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise AudioFileError(f"{p}: no such file")
    try:
        pcm, sr = sf.read(p, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioFileError(f"{p}: not a readable audio file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    pcm = pcm.mean(axis=1)
    if len(pcm) == 0:
        raise AudioFileError(f"{p}: the file holds no audio")
    if np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) < 1e-5:
        raise AudioFileError(f"{p}: the audio is silent")
    if len(pcm) / sr < min_seconds:
        raise AudioFileError(f"{p}: {len(pcm) / sr:.2f} s is shorter than one {min_seconds:.2f} s window")
    return pcm, int(sr)


def to_rate(pcm: np.ndarray, sr: int, target: int, name: str, say=print) -> np.ndarray:
    if sr != target:
        say(f"{name}: resampled {sr} Hz -> {target} Hz")
    return resample(pcm, sr, target)


def opus_roundtrip(pcm: np.ndarray, sr: int, kbps: float) -> np.ndarray | None:
    """Encode and decode with ffmpeg's libopus at `kbps`; None when ffmpeg is missing."""
    import soundfile as sf

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src, enc, dst = Path(d) / "in.wav", Path(d) / "x.opus", Path(d) / "out.wav"
        sf.write(src, pcm, sr, subtype="PCM_16")
        q = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
        subprocess.run(q + ["-i", str(src), "-c:a", "libopus", "-b:a", f"{kbps:g}k", "-application", "audio", str(enc)], check=True)
        subprocess.run(q + ["-i", str(enc), "-ar", str(sr), "-ac", "1", str(dst)], check=True)
        out, _ = sf.read(dst, dtype="float32")
    # libopus adds a pre-skip that ffmpeg removes; align by cross-correlation to be safe
    n = min(len(out), len(pcm))
    lag = _best_lag(pcm[:n], out[:n], max_lag=int(0.01 * sr))
    out = np.roll(out, -lag)[: len(pcm)]
    return np.pad(out, (0, len(pcm) - len(out)))


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> int:
    seg = slice(0, min(len(a), 5 * max_lag + 48000))
    x, y = a[seg], b[seg]
    lags = range(-max_lag, max_lag + 1)
    return max(lags, key=lambda k: float(np.dot(x[max(0, -k) : len(x) - max(0, k)], y[max(0, k) : len(y) - max(0, -k)])))


def codec_figures(codec: Codec, pcm: np.ndarray, opus: bool = True, ref_notes=None, transcribe=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Per bandwidth (and Opus 6 and 12 kbps): the witnesses (large-window log-spectral
    distance, chroma similarity, and with `transcribe` the note F1 against `ref_notes`, or
    against the input's own transcription when None), mel distance, SI-SNR, and the codec's
    encode/decode x real time; and each row's reconstruction, so callers never encode twice.
    With `transcribe`, an `original` row gives the input's own note F1 (the ceiling)."""
    from moodlane.engine.training.witness import listen, note_f1

    sr = codec.sample_rate
    secs = len(pcm) / sr
    rows, audio = {}, {}
    if transcribe is not None:
        if ref_notes is None:
            ref_notes = transcribe(pcm, sr)
        else:
            rows["original"] = {"note_f1": note_f1(ref_notes, transcribe(pcm, sr))["f1"], "lsd_db": 0.0, "chroma": 1.0}
    for kbps in codec.cfg.bandwidths:
        t0 = time.perf_counter()
        codes = codec.encode(pcm, kbps=kbps)
        t1 = time.perf_counter()
        y = codec.decode(codes, length=len(pcm))[0]
        t2 = time.perf_counter()
        audio[f"codec {kbps:g} kbps"] = y
        rows[f"codec {kbps:g} kbps"] = {
            "kbps": kbps,
            "codebooks": int(codes.shape[1]),
            **listen(pcm, y, sr, ref_notes, transcribe),
            "mel_distance": round(mel_distance(pcm, y, sr), 4),
            "si_snr_db": round(si_snr(pcm, y), 2),
            "encode_x_realtime": round(secs / (t1 - t0), 1),
            "decode_x_realtime": round(secs / (t2 - t1), 1),
        }
    if opus:
        for kbps in OPUS_KBPS:
            y = opus_roundtrip(pcm, sr, kbps)
            if y is not None:
                audio[f"opus {kbps:g} kbps"] = y
                rows[f"opus {kbps:g} kbps"] = {
                    "kbps": kbps,
                    **listen(pcm, y, sr, ref_notes, transcribe),
                    "mel_distance": round(mel_distance(pcm, y, sr), 4),
                    "si_snr_db": round(si_snr(pcm, y), 2),
                }
    return rows, audio


def spectrogram_png(path: Path, sr: int, panels: dict[str, np.ndarray], top_hz: float = 2500.0, n_fft: int = 4096) -> None:
    """Spectrograms one above the other, 0 to `top_hz` with an `n_fft` window (4096 at
    24 kHz: 5.9 Hz bins, so single partials show; a frame-rate comb shows as fixed lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import mlab

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    ref_db = None
    for ax, (name, x) in zip(np.atleast_1d(axes), panels.items()):
        spec, freqs, t = mlab.specgram(np.asarray(x, np.float64), NFFT=n_fft, Fs=sr, noverlap=n_fft - n_fft // 16)
        db = 10 * np.log10(spec + 1e-20)
        ref_db = db.max() if ref_db is None else ref_db  # one colour scale: the first panel's (the original)
        keep = freqs <= top_hz
        ax.pcolormesh(t, freqs[keep], db[keep], cmap="magma", vmin=ref_db - 90, vmax=ref_db, shading="auto")
        ax.set_ylim(0, top_hz)
        ax.set_ylabel("Hz")
        ax.set_title(name, fontsize=9, loc="left")
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def eval_codec(
    codec: Codec,
    audio_root: str | Path,
    out: Path,
    clips: int = 24,
    seconds: float = 10.0,
    progress: bool = True,
    data: str | Path | None = None,
    transcribe=None,
) -> dict:
    """Held-out songs (the manifest's valid split): mean figures over `clips` excerpts, and
    a spectrogram PNG of the first one. With `transcribe` and the MIDI `data` folder, note
    F1 against each excerpt's source notes."""
    import soundfile as sf
    from tqdm import tqdm

    from moodlane.engine.training.audio_data import read_manifest, source_notes

    recs = [r for r in read_manifest(audio_root) if r["split"] == "valid" and r["duration"] >= seconds + 1]
    recs = sorted(recs, key=lambda r: r["id"])[:: max(1, len(recs) // clips)][:clips]
    if not recs:
        raise AudioFileError(f"{audio_root}: no held-out clips of {seconds:g} s")
    notes = source_notes(recs, data) if transcribe is not None else {}
    per = []
    first = None
    for r in tqdm(recs, desc="codec vs opus", disable=not progress):
        pcm, sr = sf.read(Path(audio_root) / r["path"], dtype="float32")
        pcm = resample(pcm, sr, codec.sample_rate)
        mid = max(0, len(pcm) // 2 - int(seconds * codec.sample_rate) // 2)
        pcm = pcm[mid : mid + int(seconds * codec.sample_rate)]
        ref = notes[r["id"]].window(mid / codec.sample_rate, seconds) if r["id"] in notes else None
        rows, audio = codec_figures(codec, pcm, ref_notes=ref, transcribe=transcribe)
        per.append(rows)
        if first is None:
            first = (r, pcm, audio)
    table = {}
    for k in per[0]:
        vals = [p[k] for p in per if k in p]
        table[k] = {m: (round(float(np.mean([v[m] for v in vals])), 4) if isinstance(vals[0][m], float) else vals[0][m]) for m in vals[0]}
        for m in ("note_f1", "chroma", "lsd_db", "mel_distance", "si_snr_db"):
            if m in vals[0]:
                table[k][m + "_sd"] = round(float(np.std([v[m] for v in vals])), 4)
    out.mkdir(parents=True, exist_ok=True)
    r, pcm, audio = first
    panels = {f"original: {r['id']} ({r['instrument']})": pcm}
    panels.update(audio)
    png = out / "codec_spectrograms.png"
    spectrogram_png(png, codec.sample_rate, {k: v[: 6 * codec.sample_rate] for k, v in panels.items()})
    result = {
        "codec": codec.cfg.name,
        "codec_sha256": codec.sha256,
        "clips": len(per),
        "seconds_each": seconds,
        "held_out": "manifest split 'valid' (by song)",
        "note_f1": f"{transcribe.name} against the source MIDI (onsets 50 ms, pitch 50 cents)"
        if transcribe
        else "skipped (--no-transcribe)",
        "lsd": "log-spectral distance in dB, 4096-sample window, linear frequency, 0-8 kHz",
        "chroma": "mean frame cosine of 12-bin pitch-class profiles (4096-sample window)",
        "table": table,
        "png": str(png),
        "training": codec.meta.get("training", {}).get("steps"),
    }
    (out / "codec_results.json").write_text(json.dumps(result, indent=1))
    return result


def eval_predictor_on_symbolic(
    predictor, out: Path, grid: int = 5, n: int = 2, bars: int = 16, sample_rate: int = 24000, progress: bool = True
) -> dict:
    """Render the shipped symbolic engine over a valence/arousal grid through FluidSynth and
    ask the Emotion Predictor what it hears: how well the two paths agree."""
    from tqdm import tqdm

    from moodlane.engine.automation import EmotionCurve
    from moodlane.engine.emotion import Emotion
    from moodlane.engine.registry import GeneratorOptions, load_generator
    from moodlane.engine.session import render
    from moodlane.engine.synth import FluidSynth, render_notes

    gen = load_generator(GeneratorOptions(engine="symbolic"))
    synth = FluidSynth(sample_rate=sample_rate)
    axis = np.linspace(-1, 1, grid)
    rows = []
    todo = [(v, a, k) for v in axis for a in axis for k in range(n)]
    for v, a, k in tqdm(todo, desc="symbolic grid -> predictor", disable=not progress):
        e = Emotion(float(v), float(a))
        notes, _ = render(gen, EmotionCurve.constant(e), bars, seed=k, qpm=gen.default_tempo(e))
        pcm = render_notes(notes, sample_rate=sample_rate, tail_s=1.0, synth=synth).mean(axis=1)
        pv, pa = predictor.predict(pcm, sample_rate).mean
        rows.append((v, a, pv, pa))
    synth.close()
    r = np.array(rows)
    result = {
        "grid": grid,
        "pieces_per_point": n,
        "bars": bars,
        **grid_stats(r),
        "points": [[round(float(x), 3) for x in row] for row in rows],
    }
    out.mkdir(parents=True, exist_ok=True)
    grid_png(out / "predictor_symbolic_grid.png", r, "symbolic engine: requested (o) -> predictor hears (x)")
    (out / "predictor_symbolic.json").write_text(json.dumps(result, indent=1))
    result["png"] = str(out / "predictor_symbolic_grid.png")
    return result


def correlation(x, y, kind: str = "spearman") -> float | None:
    """Pearson or Spearman r, rounded; None where it is undefined (a constant input)."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return round(float((pearsonr if kind == "pearson" else spearmanr)(x, y)[0]), 3)


def grid_stats(r: np.ndarray) -> dict:
    """Rows (requested V, requested A, predicted V, predicted A): how well they agree."""
    stats = lambda x, y: {"pearson": correlation(x, y, "pearson"), "spearman": correlation(x, y, "spearman")}  # noqa: E731
    return {
        "valence": stats(r[:, 0], r[:, 2]),
        "arousal": stats(r[:, 1], r[:, 3]),
        "mse": round(float(np.mean((r[:, :2] - r[:, 2:]) ** 2)), 4),
        "quadrant_agreement": round(
            float(np.mean([(np.sign(x[0]) == np.sign(x[2])) & (np.sign(x[1]) == np.sign(x[3])) for x in r if x[0] and x[1]])), 3
        ),
    }


def grid_png(path: Path, r: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    keys = sorted({(x[0], x[1]) for x in r})
    for v, a in keys:
        sel = (r[:, 0] == v) & (r[:, 1] == a)
        pv, pa = r[sel, 2].mean(), r[sel, 3].mean()
        ax.annotate("", (pv, pa), (v, a), arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 0.8})
        ax.plot(v, a, "o", color="tab:blue", ms=4)
        ax.plot(pv, pa, "x", color="tab:red", ms=5)
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.axhline(0, color="0.85", lw=0.8)
    ax.axvline(0, color="0.85", lw=0.8)
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
