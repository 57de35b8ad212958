"""The audio foundation's commands: `codec roundtrip`, `predict audio`, `data encode`,
`eval codec|predictor`, `bench codec`. Registered on the main parser by `cli.build_parser`."""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from moodlane.daw_bridge.argtypes import finite, finite_list, positive_int
from moodlane.engine.atomic import commit
from moodlane.engine.audio.generator import AV_CFG, CFG


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _transcriber(args):
    """Basic Pitch when installed and wanted; None (and one line saying why) otherwise."""
    from moodlane.engine.training.witness import TranscriberMissing, transcriber

    if getattr(args, "no_transcribe", False):
        return None
    try:
        return transcriber()
    except TranscriberMissing as e:
        _say(f"note F1 skipped: {e}")
        return None


def print_codec_rows(rows: dict) -> None:
    cols = (("note_f1", "note F1", "{:.3f}"), ("chroma", "chroma", "{:.3f}"), ("lsd_db", "LSD dB", "{:.2f}"))
    cols += (("mel_distance", "mel dist", "{:.3f}"), ("si_snr_db", "SI-SNR dB", "{:.2f}"))
    cols += (("encode_x_realtime", "encode xRT", "{}"), ("decode_x_realtime", "decode xRT", "{}"))
    cols = tuple(c for c in cols if any(c[0] in r for r in rows.values()))
    print(f"{'':>16} " + " ".join(f"{h:>10}" for _, h, _ in cols))
    for name, r in rows.items():
        print(f"{name:>16} " + " ".join(f"{fmt.format(r[k]) if k in r else '':>10}" for k, _, fmt in cols))


def cmd_codec(args) -> int:
    if args.what == "bound":
        return cmd_codec_bound(args)
    from moodlane.daw_bridge.files import wav_bytes
    from moodlane.engine.audio.codec import load_codec
    from moodlane.engine.training.audio_eval import codec_figures, read_audio, to_rate

    if args.input is None or args.output is None:
        raise ValueError("codec roundtrip needs IN.wav and -o OUT.wav")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise ValueError(f"output folder {out.parent} does not exist")
    codec = load_codec(args.codec_checkpoint)
    kbps = args.kbps if args.kbps is not None else codec.cfg.lm_codebooks * codec.cfg.kbps_per_codebook
    codec.cfg.codebooks_for(kbps)  # a bandwidth this codec has, checked before any work
    ref_notes = None
    if args.midi:
        from moodlane.engine.symbolic.notes import parse_midi
        from moodlane.engine.training.audio_data import notes_seconds

        ref_notes = notes_seconds(parse_midi(Path(args.midi).read_bytes()))
    pcm, sr = read_audio(args.input)
    pcm = to_rate(pcm, sr, codec.sample_rate, args.input, _say)
    transcribe = _transcriber(args)
    rows, audio = codec_figures(codec, pcm, opus=not args.no_opus, ref_notes=ref_notes, transcribe=transcribe)
    commit({out: wav_bytes(audio[f"codec {kbps:g} kbps"][:, None], codec.sample_rate)})
    if args.json:
        print(
            json.dumps(
                {
                    "file": args.input,
                    "codec": codec.cfg.name,
                    "codec_sha256": codec.sha256,
                    "seconds": len(pcm) / codec.sample_rate,
                    "rows": rows,
                }
            )
        )
        return 0
    print(f"{args.input}: {len(pcm) / codec.sample_rate:.1f} s, codec {codec.label} ({codec.frame_rate:g} frames/s)")
    print_codec_rows(rows)
    if transcribe is not None:
        against = args.midi if args.midi else "the input's own transcription (give --midi for the source notes)"
        print(f"note F1: {transcribe.name}, against {against}; LSD: 4096-sample window, 0-8 kHz; chroma: frame cosine")
    if args.no_opus or not any(k.startswith("opus") for k in rows):
        print("(Opus skipped: " + ("--no-opus" if args.no_opus else "ffmpeg with libopus not found") + ")")
    print(f"wrote {out} (codec at {kbps:g} kbps)")
    return 0


def _plot_predictions(path: Path, preds: list[tuple[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(preds), 1, figsize=(9, 2.4 * len(preds)), squeeze=False)
    for ax, (name, p) in zip(axes[:, 0], preds):
        ax.plot(p.times, p.valence, label="valence", color="tab:orange")
        ax.plot(p.times, p.arousal, label="arousal", color="tab:blue")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        v, a = p.mean
        ax.set_title(f"{name}: mean valence {v:+.2f}, arousal {a:+.2f}", fontsize=9, loc="left")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds (window centres)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    commit({path: buf.getvalue()})


def cmd_predict(args) -> int:
    from moodlane.engine.audio.predictor import load_predictor
    from moodlane.engine.training.audio_eval import read_audio

    if args.plot and not Path(args.plot).parent.is_dir():
        raise ValueError(f"output folder {Path(args.plot).parent} does not exist")
    pred = load_predictor(args.predictor)
    model = pred.backbone()
    clips = [(f, *read_audio(f, min_seconds=model.window_s)) for f in args.files]  # every file checked before any output
    results = []
    for f, pcm, sr in clips:
        if sr != model.sample_rate:
            _say(f"{f}: resampled {sr} Hz -> {model.sample_rate} Hz for {model.name}")
        p = pred.predict(pcm, sr)
        results.append((f, p))
        if args.json:
            print(json.dumps(p.to_json(f)))
        else:
            v, a = p.mean
            print(f"{f}: valence {v:+.3f}  arousal {a:+.3f}  ({len(p.times)} windows of {model.window_s:.2f} s, hop {pred.cfg.hop_s:g} s)")
            for t, wv, wa in zip(p.times, p.valence, p.arousal):
                print(f"  {t:7.2f} s  V {wv:+.2f}  A {wa:+.2f}")
    if args.plot:
        _plot_predictions(Path(args.plot), results)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def cmd_data_encode(args) -> int:
    from moodlane.engine.audio.codec import load_codec
    from moodlane.engine.training.encode import encode_all

    codec = load_codec(args.codec_checkpoint)
    print(json.dumps(encode_all(codec, args.out, kbps=args.kbps), indent=1))
    return 0


def cmd_eval_audio(args) -> int:
    from moodlane.engine.training import audio_eval

    out = Path(args.out)
    if args.what == "audio":
        result = eval_lara(args, out)
    elif args.what == "codec":
        from moodlane.engine.audio.codec import load_codec

        codec = load_codec(args.codec_checkpoint)
        transcribe = _transcriber(args)
        data = args.data if transcribe is not None else None
        result = audio_eval.eval_codec(codec, args.audio, out, clips=args.clips, seconds=args.seconds, data=data, transcribe=transcribe)
        print_codec_rows(result["table"])
    else:
        from moodlane.engine.audio.predictor import load_predictor

        pred = load_predictor(args.predictor)
        result = {
            "held_out": pred.meta.get("training", {}).get("results"),
            "symbolic_agreement": audio_eval.eval_predictor_on_symbolic(pred, out, grid=args.grid, n=args.grid_n, bars=args.bars),
        }
        (out / "predictor_results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


RUNTIMES = {"torch": ("torch", "fp32"), "onnx": ("onnx", "fp32"), "int8": ("onnx", "int8")}


def _lm_label(spec: str) -> tuple[str, str | None, str, str]:
    """`--lm [LABEL=]STEM[@RUNTIME]` -> (label, stem or None for the shipped LM, backend,
    precision). STEM `shipped` is the shipped LM; RUNTIME torch (default), onnx (fp32) or
    int8 (the ONNX int8 decoder; both need `moodlane export onnx` first)."""
    label, _, rest = spec.rpartition("=")
    stem, _, runtime = rest.partition("@")
    if runtime and runtime not in RUNTIMES:
        from moodlane.engine.audio.checkpoint import LMCheckpointError

        raise LMCheckpointError(f"--lm {spec}: the runtime after @ must be one of {', '.join(RUNTIMES)}")
    backend, precision = RUNTIMES[runtime or "torch"]
    name = "shipped" if stem == "shipped" else Path(stem).name
    return label or name + (f"@{runtime}" if runtime else ""), None if stem == "shipped" else stem, backend, precision


def eval_lara(args, out: Path) -> dict:
    from moodlane.engine.atomic import stem_files
    from moodlane.engine.audio.checkpoint import DEFAULT_LM, LMCheckpointError, lm_codec, load_lara
    from moodlane.engine.audio.codec import load_codec
    from moodlane.engine.audio.generator import AudioSampling
    from moodlane.engine.audio.predictor import load_predictor
    from moodlane.engine.training.lara_eval import eval_audio

    scales = [(c, a) for c in args.cfg for a in args.av_cfg]
    gens, codecs = [], {}
    for label, stem, backend, precision in map(_lm_label, args.lm or ["shipped"]):
        meta = json.loads(stem_files(stem or DEFAULT_LM, "LM", LMCheckpointError)[1].read_text())
        codec = load_codec(lm_codec(meta))  # its ceiling: the PyTorch codec it was trained on (ONNX only decodes)
        for cfg, av_cfg in scales:
            gen = load_lara(stem, None, AudioSampling(cfg=cfg, av_cfg=av_cfg, top_k=args.top_k), backend=backend, precision=precision)
            if gen.lm.name != backend:
                raise LMCheckpointError(f"--lm {label}: no ONNX export matches {stem or 'the shipped LM'} (run moodlane export onnx)")
            name = label if len(scales) == 1 else f"{label} cfg{cfg:g} av{av_cfg:g}"
            gens.append((name, gen))
            codecs[name] = codec
            for k in ("training", "history"):  # an ONNX generator's meta is the export's: the LM's record comes from its stem
                gen.meta.setdefault(k, meta.get(k))
    return eval_audio(
        gens,
        load_predictor(args.predictor),
        args.audio,
        out,
        grid=args.grid,
        seconds=args.seconds,
        ramp_seconds=args.ramp_seconds,
        real_clips=args.clips,
        symbolic=not args.no_symbolic,
        seeds=args.seeds,
        paired=not args.no_paired,
        witnesses=not args.no_witness,
        piano_clips=args.piano_clips,
        codecs=codecs,
        ramp_seeds=args.ramp_seeds,
    )


def bench_codec(checkpoint: str | None, seconds: float, repeats: int) -> dict:
    import torch

    from moodlane.daw_bridge.bench import cpu_name, peak_rss_mb
    from moodlane.engine.audio.codec import load_codec

    codec = load_codec(checkpoint)
    sr = codec.sample_rate
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    pcm = sum(0.1 * np.sin(2 * np.pi * f * t) * np.exp(-((t % 0.5) * 4)) for f in rng.uniform(100, 2000, 6)).astype(np.float32)
    rows = {}
    for kbps in codec.cfg.bandwidths:
        enc, dec = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            codes = codec.encode(pcm, kbps=kbps)
            t1 = time.perf_counter()
            codec.decode(codes)
            dec.append(time.perf_counter() - t1)
            enc.append(t1 - t0)
        rows[f"{kbps:g} kbps"] = {
            "encode_x_realtime": round(seconds / float(np.median(enc)), 1),
            "decode_x_realtime": round(seconds / float(np.median(dec)), 1),
        }
    # what live audio decodes per one-beat chunk at 120 BPM: 0.5 s, the generator's 0.5 s of left context, the codec's right context
    frames = int(round(1.0 * codec.frame_rate)) + codec.context_frames
    codes = codec.encode(pcm[: frames * codec.cfg.hop])
    chunk = []
    for _ in range(max(repeats, 5)):
        t0 = time.perf_counter()
        codec.decode(codes, first_frame=100)
        chunk.append(time.perf_counter() - t0)
    return {
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "codec": codec.label,
        "live_chunk_decode_ms": round(1000 * float(np.median(chunk)), 1),
        "parameters_m": round(sum(p.numel() for p in codec.model.parameters()) / 1e6, 2),
        "seconds": seconds,
        "repeats": repeats,
        "speed": rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def cmd_codec_bound(args) -> int:
    """Measure the spectral codec's decoder bound on the training split's tokens and record
    it in the codec's JSON (the weights file is unchanged: tokens stay the codec's)."""
    import torch
    from tqdm import tqdm

    from moodlane.engine.atomic import stem_files
    from moodlane.engine.audio.codec import DEFAULT_CODEC, ceiling_record, load_codec
    from moodlane.engine.audio.spectral import logmag_ceiling
    from moodlane.engine.training.audio_data import read_manifest
    from moodlane.engine.training.lara_eval import spread

    stem = Path(args.codec_checkpoint) if args.codec_checkpoint else DEFAULT_CODEC
    codec = load_codec(stem)
    if codec.cfg.kind != "spectral":
        raise ValueError(f"{codec.label} is not a spectral codec: the bound is the spectral decoder's")
    root = Path(args.audio)
    recs = [r for r in read_manifest(root) if r["split"] == "train" and (root / "encoded" / (r["id"] + ".npz")).is_file()]
    recs = spread(recs, args.clips) if args.clips else recs
    counts = sorted({codec.cfg.lm_codebooks, codec.cfg.n_q})  # what the LM decodes, and the full rate

    def clips():
        for r in tqdm(recs, desc="decoding", unit="clip", file=sys.stderr):
            d = np.load(root / "encoded" / (r["id"] + ".npz"))
            if str(d["codec_sha256"]) != codec.sha256:
                raise ValueError(f"{root}/encoded/{r['id']}.npz was encoded by another codec; encode again with this one")
            for k in counts:
                yield torch.as_tensor(d["codes"][:k].astype(np.int64))

    t0 = time.perf_counter()
    ceiling = logmag_ceiling(codec.model, clips(), args.margin)
    js = stem_files(stem, "codec", ValueError)[1]
    meta = json.loads(js.read_text())
    meta["logmag_ceiling"] = ceiling_record(
        ceiling.tolist(),
        margin=args.margin,
        clips=len(recs),
        codebooks=counts,
        data=f"{root}: train split, {len(recs)} clips spread over the manifest",
        command=" ".join(["moodlane", *sys.argv[1:]]),
        wall_s=round(time.perf_counter() - t0, 1),
    )
    commit({js: (json.dumps(meta, indent=1) + "\n").encode()})
    c = ceiling - args.margin
    print(
        f"{js}: decoder bound recorded ({len(recs)} clips, {counts} codebooks): per-bin maximum log magnitude "
        f"median {float(c.median()):.2f}, highest {float(c.max()):.2f}; bound = maximum + {args.margin:g}. "
        "Export the ONNX files again (moodlane export onnx): the bound is in the codec decoder's graph."
    )
    return 0


def add_audio_commands(sub) -> None:
    c = sub.add_parser(
        "codec",
        help="the audio codec: roundtrip a file and print its quality figures; bound: record the decoder's log-magnitude ceiling",
    )
    c.add_argument("what", choices=("roundtrip", "bound"))
    c.add_argument("input", metavar="IN.wav", nargs="?")
    c.add_argument("-o", "--output", metavar="OUT.wav")
    c.add_argument("--audio", default="runs/audio", help="bound: the encoded training audio (moodlane data encode)")
    c.add_argument("--clips", type=int, default=400, help="bound: training clips, spread over the set (0: all)")
    c.add_argument("--margin", type=finite("margin", 0, 5), default=0.5, help="bound: log units over the loudest decoded frame")
    c.add_argument("--kbps", type=float, help="bandwidth of OUT.wav (default: the language model's, 3 kbps)")
    c.add_argument("--codec-checkpoint", help="MoodLane codec stem or official EnCodec .th (default: the shipped spectral codec)")
    c.add_argument("--midi", metavar="SOURCE.mid", help="score the note F1 against these notes (default: the input's transcription)")
    c.add_argument("--no-transcribe", action="store_true", help="skip the note F1 (the transcriber is the [eval] extra)")
    c.add_argument("--no-opus", action="store_true", help="skip the Opus comparison")
    c.add_argument("--json", action="store_true", help="figures as one JSON object")
    c.set_defaults(func=cmd_codec)

    p = sub.add_parser("predict", help="the Emotion Predictor: valence/arousal over time of audio files")
    p.add_argument("what", choices=("audio",))
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.add_argument("--plot", metavar="OUT.png", help="plot valence/arousal over time")
    p.add_argument("--json", action="store_true", help="one JSON object per file, per line")
    p.add_argument("--predictor", help="predictor checkpoint stem (default: the shipped one)")
    p.set_defaults(func=cmd_predict)


def add_eval_options(e: argparse.ArgumentParser) -> None:
    e.add_argument("--audio", default="runs/audio", help="codec, audio: rendered (and encoded) audio folder (held-out split)")
    e.add_argument(
        "--lm",
        action="append",
        metavar="[LABEL=]STEM",
        help="audio: an LM to judge, repeatable (default: shipped); @torch (default), @onnx or @int8 picks the runtime",
    )
    e.add_argument(
        "--cfg", type=finite_list("cfg", 0, 20), default=[CFG], help="audio: classifier-free guidance; a list (1.5,3) judges each"
    )
    e.add_argument(
        "--av-cfg",
        type=finite_list("av-cfg", 0, 20),
        default=[AV_CFG],
        help=f"audio: extra guidance on the emotion alone (default {AV_CFG:g}); a list (0,1,2) judges each",
    )
    e.add_argument("--top-k", type=positive_int("top-k"), default=250, help="audio: top-k sampling")
    e.add_argument("--ramp-seconds", type=finite("ramp seconds", 4, 600), default=32.0, help="audio: length of the Q3 -> Q1 ramp")
    e.add_argument("--no-symbolic", action="store_true", help="audio: skip the symbolic engine's reference grid")
    e.add_argument("--seeds", type=positive_int("seeds"), default=1, help="audio: clips per grid point (intervals resample points)")
    e.add_argument("--ramp-seeds", type=positive_int("ramp seeds"), default=1, help="audio: Q3 -> Q1 ramps, one per seed (median reported)")
    e.add_argument("--no-paired", action="store_true", help="audio: skip the paired-seed test (each grid clip flipped and dropped)")
    e.add_argument(
        "--no-witness", action="store_true", help="audio: skip the aiSFX Fréchet distance and the transcription (the [eval] extra)"
    )
    e.add_argument("--piano-clips", type=positive_int("piano clips"), default=20, help="audio: held-out piano renders the witnesses use")
    e.add_argument("--codec-checkpoint", help="codec: the codec to judge (default: the shipped spectral codec)")
    e.add_argument("--no-transcribe", action="store_true", help="codec: skip the note F1 (the transcriber is the [eval] extra)")
    e.add_argument("--clips", type=positive_int("clips"), default=24, help="codec: held-out excerpts; audio: held-out clips for FD")
    e.add_argument("--seconds", type=finite("seconds", 1, 600), default=10.0, help="codec: excerpt length; audio: grid clip length")
    e.add_argument("--predictor", help="predictor: checkpoint stem (default: the shipped one)")
    e.add_argument("--grid", type=positive_int("grid"), default=5, help="predictor: VA grid points per axis")
