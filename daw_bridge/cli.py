"""`moodlane`: render, serve, train, eval, bench, data, codec, predict, presets, info.

User errors (bad values, unknown preset, malformed files, missing checkpoint) print one
line naming the problem and what was expected, exit with status 2, and leave no partial
output file.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import sys
from pathlib import Path

from moodlane.daw_bridge.argtypes import finite, int_range, name_weight, positive_int
from moodlane.daw_bridge.audio_cli import add_audio_commands, add_eval_options, bench_codec, cmd_data_encode, cmd_eval_audio
from moodlane.engine.audio.checkpoint import LMCheckpointError
from moodlane.engine.audio.codec import CodecError
from moodlane.engine.audio.generator import AV_CFG, CFG
from moodlane.engine.audio.music_model import MusicModelError
from moodlane.engine.audio.musicgen import MusicGenFolderError
from moodlane.engine.audio.onnx_runtime import OnnxExportError
from moodlane.engine.audio.predictor import PredictorError
from moodlane.engine.audio.text import TextEncoderError
from moodlane.engine.automation import AutomationError, EmotionCurve, parse_automation
from moodlane.engine.chunk import AUDIO_CHUNK_BEATS, MAX_PROMPT
from moodlane.engine.emotion import Emotion, EmotionError
from moodlane.engine.registry import BACKENDS, ENGINES, KINDS, PRECISIONS, GeneratorOptions, describe_backend, load_generator
from moodlane.engine.session import MAX_BEATS
from moodlane.engine.symbolic.checkpoint import CheckpointError
from moodlane.engine.symbolic.emotion_map import MODES as MAPPINGS
from moodlane.engine.symbolic.notes import MidiError
from moodlane.engine.synth import SynthError
from moodlane.engine.training.audio_eval import AudioFileError
from moodlane.engine.training.data import DataError
from moodlane.export.onnx import ExportError
from moodlane.presets import PRESET_DIR, PresetError, get_emotion_preset, load_emotion_presets

USER_ERRORS = (
    EmotionError,
    PresetError,
    AutomationError,
    MidiError,
    CheckpointError,
    DataError,
    SynthError,
    CodecError,
    PredictorError,
    MusicModelError,
    AudioFileError,
    LMCheckpointError,
    MusicGenFolderError,
    TextEncoderError,
    ExportError,
    OnnxExportError,
)
EXIT_USAGE = 2


class UsageError(ValueError):
    """A command line that asks for something impossible."""


def generator_options(args: argparse.Namespace) -> GeneratorOptions:
    """The typed options behind the flags `add_generator_options` defines."""
    return GeneratorOptions(
        engine=args.engine,
        checkpoint=args.checkpoint,
        precision=args.precision,
        mapping=args.mapping,
        temperature=args.temperature,
        guidance=args.guidance,
        guide_texture=args.guide_texture,
        mode_rule=not args.no_mode_rule,
        lm_checkpoint=args.lm_checkpoint,
        codec_checkpoint=args.codec_checkpoint,
        cfg=args.cfg,
        av_cfg=args.av_cfg,
        top_k=args.top_k,
        backend=args.backend,
        onnx_dir=args.onnx,
        providers=tuple(p.strip() for p in args.providers.split(",") if p.strip()) if args.providers else None,
    )


def add_guide_texture(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guide-texture",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the valence contrast also pushes texture (density, durations, polyphony); --no-guide-texture keeps it to "
        "harmony, register and dynamics (more realistic texture, weaker judged emotion; see the README)",
    )


def add_generator_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine", choices=ENGINES, default="symbolic", help="generator: symbolic (default), audio, mock, mock-audio (no weights)"
    )
    p.add_argument("--generator", dest="engine", choices=("symbolic", "mock"), help=argparse.SUPPRESS)  # the 0.1 name
    p.add_argument("--checkpoint", help="symbolic checkpoint stem (default: the shipped model)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="decoder weights on the CPU: auto (symbolic: the faster here, measured at load; audio: fp32), int8, fp32 "
        "(audio: int8 needs --backend onnx)",
    )
    p.add_argument(
        "--mapping",
        choices=MAPPINGS,
        default="smooth",
        help="emotion -> attributes: smooth (continuous VA map, default), emogen (EmoGen's quadrant prototypes), "
        "calibrated (smooth, with density and durations at real music's per-quadrant range)",
    )
    p.add_argument("--temperature", type=finite("temperature", 0.05, 5), default=1.0)
    p.add_argument("--guidance", type=finite("guidance", 0, 10), default=1.0, help="valence contrast guidance (0: ~1.3x faster)")
    add_guide_texture(p)
    p.add_argument("--no-mode-rule", action="store_true", help="attribute control only: valence does not move the mode")
    a = p.add_argument_group("audio engine (LARA-Gen)")
    a.add_argument("--lm-checkpoint", help="LM stem, or a MusicGen folder in the transformers format (default: the shipped LM)")
    a.add_argument("--codec-checkpoint", help="codec stem (default: the one the LM was trained with; bench codec: or an official .th)")
    a.add_argument("--cfg", type=finite("cfg", 0, 20), default=CFG, help=f"classifier-free guidance (1: off, batch 1; default {CFG:g})")
    a.add_argument("--av-cfg", type=finite("av-cfg", 0, 20), default=AV_CFG, help=f"guidance on the emotion alone (default {AV_CFG:g})")
    a.add_argument("--top-k", type=int_range("top-k", 1, 4096), default=250, help="sample from the k likeliest tokens (default 250)")
    a.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="LM runtime: onnx (moodlane export onnx first), torch, or auto (ONNX when an export matches the LM; default)",
    )
    a.add_argument("--onnx", metavar="DIR", help="ONNX export folder (default: the cache folder moodlane export onnx writes)")
    a.add_argument("--providers", help="onnxruntime providers in order, e.g. cuda,cpu or tensorrt,cuda,cpu (default: cuda,cpu)")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path} ({e.strerror})") from None


def _emotion_source(args, generator) -> tuple[EmotionCurve, float | None]:
    """The emotion curve and the tempo the user or preset asked for (None: from emotion)."""
    chosen = [x for x in (args.preset, args.automation, args.valence is not None or args.arousal is not None) if x]
    if len(chosen) > 1:
        raise UsageError("give one of --preset, --automation, or --valence/--arousal")
    tempo = args.tempo
    if args.preset:
        p = get_emotion_preset(args.preset)
        return EmotionCurve.constant(p.emotion), tempo or p.tempo
    if args.automation:
        data = _read(args.automation, "automation file")
        suffix = Path(args.automation).suffix
        curve = parse_automation(data, suffix, tempo or 120.0)
        if tempo is None:  # seconds need a tempo: take the one the emotion at 0 implies
            tempo = generator.default_tempo(curve.at(0.0))
            curve = parse_automation(data, suffix, tempo)
        return curve, tempo
    v = 0.0 if args.valence is None else args.valence
    a = 0.0 if args.arousal is None else args.arousal
    return EmotionCurve.constant(Emotion(v, a)), tempo


def _length_beats(args, curve: EmotionCurve, qpm: float) -> float:
    """The render's length: --bars, --seconds (whole bars), the automation's, or 16 bars."""
    if args.seconds is not None:
        bars = max(1, math.ceil(args.seconds * qpm / 60.0 / 4.0))
    elif args.bars is not None:
        bars = args.bars
    elif args.automation:
        bars = max(1, math.ceil(curve.end_beat / 4.0))
        if 4 * bars > MAX_BEATS:
            raise UsageError(
                f"the automation ends at beat {curve.end_beat:g} ({bars} bars, over {MAX_BEATS // 4}): pass --bars to render part of it"
            )
    else:
        bars = 16
    if 4 * bars > MAX_BEATS:
        raise UsageError(f"a render is at most {MAX_BEATS // 4} bars, asked for {bars}")
    return 4.0 * bars


def _prompt(args) -> str:
    """The text prompt: --prompt, else the preset's, else none (the engine's default)."""
    if args.prompt is not None:
        if not args.prompt.strip():
            raise UsageError("--prompt is empty: give a few words such as 'solo piano', or leave it out")
        if len(args.prompt) > MAX_PROMPT:
            raise UsageError(f"--prompt is {len(args.prompt)} characters; at most {MAX_PROMPT}")
        return args.prompt.strip()
    return get_emotion_preset(args.preset).prompt if args.preset else ""


def _say_backend(generator, quiet: bool) -> None:
    line = describe_backend(generator)
    if line and not quiet:
        print(line, file=sys.stderr)


def cmd_export(args) -> int:
    """Export the LM (default: the shipped one), its codec decoder and text encoder to ONNX."""
    from moodlane.engine.audio.checkpoint import load_lara
    from moodlane.engine.audio.onnx_runtime import default_folder
    from moodlane.export.onnx import export_lara

    gen = load_lara(args.lm_checkpoint, args.codec_checkpoint, backend="torch")
    if gen.model is None or not gen.meta.get("weights_sha256"):
        raise UsageError("ONNX export covers MoodLane LM stems (the shipped LM, or one from moodlane train audio)")
    out = Path(args.out) if args.out else default_folder(gen.meta["weights_sha256"])
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    from tqdm import tqdm

    with tqdm(total=5, desc="exporting", unit="graph", disable=args.quiet, leave=False) as bar:  # memory, decoder, codec, text, parity
        manifest = export_lara(gen, out, opset=args.opset, progress=lambda what: (bar.set_postfix_str(what), bar.update(1)))
    if not args.quiet:
        sizes = {k: (out / v["file"]).stat().st_size / 1e6 for k, v in manifest["files"].items()}
        print(f"wrote {out} in {manifest['export_seconds']} s (opset {manifest['opset']}):")
        for k, mb in sizes.items():
            print(f"  {manifest['files'][k]['file']:22s} {mb:7.1f} MB")
        print("parity with PyTorch (max abs): " + ", ".join(f"{k.removesuffix('_max_abs')} {v:.1e}" for k, v in manifest["parity"].items()))
        if args.out:
            print(f"use it with: moodlane render --engine audio --backend onnx --onnx {out} ...")
        else:
            print("the audio engine now uses it by default (--backend torch to opt out)")
    return 0


def cmd_render(args) -> int:
    from tqdm import tqdm

    from moodlane.daw_bridge.files import wav_bytes
    from moodlane.engine.atomic import commit
    from moodlane.engine.session import join, render_chunks
    from moodlane.engine.symbolic.notes import to_midi_bytes

    out = Path(args.output)
    wav = Path(args.wav) if args.wav else (out if out.suffix.lower() == ".wav" else None)
    for p in [out] + ([wav] if wav else []):
        if not p.parent.is_dir():
            raise UsageError(f"output folder {p.parent} does not exist")
    if out.suffix.lower() not in (".mid", ".midi", ".wav"):
        raise UsageError(f"-o must name a .mid or .wav file, got {out.name!r}")
    opts = generator_options(args)
    prompt = _prompt(args)
    audio_engine = KINDS[opts.engine] == "audio"
    if audio_engine and (out.suffix.lower() != ".wav" or args.wav):
        raise UsageError(f"the {opts.engine} engine makes audio: write it with -o FILE.wav")
    if wav is not None and not audio_engine:
        from moodlane.engine.synth import _fluidsynth, find_soundfont

        find_soundfont(args.soundfont)
        _fluidsynth()
    generator = load_generator(opts)
    _say_backend(generator, args.quiet)
    curve, tempo = _emotion_source(args, generator)
    qpm = tempo or generator.default_tempo(curve.at(0.0))
    beats = _length_beats(args, curve, qpm)
    bar = tqdm(total=round(beats, 2), desc="generating", unit="beat", disable=args.quiet, leave=False)
    chunks, qpm = render_chunks(generator, curve, beats, args.seed, qpm, on_chunk=lambda c: bar.update(c.beats), prompt=prompt)
    bar.close()
    piece = join(chunks, qpm)
    writes: dict = {}
    if generator.kind == "notes":
        if out.suffix.lower() != ".wav":
            from moodlane.engine.symbolic.attributes import lead_line

            writes[out] = to_midi_bytes(piece, lead=lead_line(piece) if args.parts == "tracks" else None)
        if wav is not None:
            from moodlane.engine.synth import render_notes

            sbar = tqdm(total=100, desc="synthesising", unit="%", disable=args.quiet, leave=False)
            audio = render_notes(piece, args.soundfont, args.sample_rate, progress=lambda f: sbar.update(int(f * 100) - sbar.n))
            sbar.close()
            writes[wav] = wav_bytes(audio, args.sample_rate)
        what = f"{len(piece)} notes"
    else:
        writes[wav] = wav_bytes(piece.pcm, piece.sample_rate)
        what = f"{piece.pcm.shape[0] / piece.sample_rate:.1f} s of audio at {piece.sample_rate} Hz"
    commit(writes)  # every file or none
    if not args.quiet:
        first, last = chunks[0].emotion, chunks[-1].emotion
        secs = beats * 60.0 / qpm
        msg = f"wrote {' and '.join(map(str, writes))} ({int(beats // 4)} bars, {what}, {qpm:.0f} BPM, {secs:.1f} s; "
        msg += f"V/A {first.valence:+.2f}/{first.arousal:+.2f}"
        msg += f" -> {last.valence:+.2f}/{last.arousal:+.2f})" if first != last else ")"
        print(msg)
    return 0


def cmd_presets(args) -> int:
    for name, p in sorted(load_emotion_presets().items()):
        tempo = f"{p.tempo:.0f} BPM" if p.tempo else "tempo from emotion"
        print(f"{name:12s} V {p.emotion.valence:+.2f}  A {p.emotion.arousal:+.2f}  Q{p.emotion.quadrant}  {tempo:18s} {p.description}")
    return 0


def cmd_info(args) -> int:
    from moodlane.engine.symbolic.checkpoint import DEFAULT_SYMBOLIC

    meta = json.loads(DEFAULT_SYMBOLIC.with_suffix(".json").read_text()) if DEFAULT_SYMBOLIC.with_suffix(".json").is_file() else {}
    info = {k: meta.get(k) for k in ("kind", "format_version", "training")}
    for name in ("codec_spectral", "codec", "predictor", "lara"):  # the audio weights, beside the symbolic model's
        f = DEFAULT_SYMBOLIC.with_name(f"{name}.json")
        if f.is_file():
            audio_meta = json.loads(f.read_text())
            info[name] = {"config": audio_meta.get("config"), "training": audio_meta.get("training")}
    info["lara_onnx"] = _onnx_info()
    print(json.dumps(info, indent=1))
    if args.plot:
        history = (meta.get("training") or {}).get("history") or []
        if not history:
            raise UsageError("the checkpoint's training record has no loss history to plot")
        _plot_history(history, Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _onnx_info() -> dict:
    """Whether the shipped LM has an ONNX export in the cache folder, and its parity."""
    import hashlib

    from moodlane.engine.audio.checkpoint import DEFAULT_LM
    from moodlane.engine.audio.onnx_runtime import OnnxExportError, default_folder, read_manifest

    folder = default_folder(hashlib.sha256(DEFAULT_LM.with_suffix(".safetensors").read_bytes()).hexdigest())
    try:
        m = read_manifest(folder)
    except OnnxExportError as e:
        return {"folder": str(folder), "exported": False, "why": str(e)}
    return {"folder": str(folder), "exported": True, "opset": m["opset"], "files": sorted(m["files"]), "parity": m.get("parity")}


def _plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moodlane.engine.atomic import write_atomic

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    for key, label in (("train_loss", "train (one batch)"), ("valid_loss", "validation (held-out songs)")):
        ax.plot(steps, [h[key] for h in history], marker="o", ms=3, label=label)
    ax.set_xlabel("step (batch of 8 x 512 tokens)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("shipped symbolic model: training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def cmd_train(args) -> int:
    from moodlane.engine.training import jobs

    job = jobs.TrainJob(
        data=args.data,
        out=args.out or f"runs/{args.what}",
        export=args.export,
        steps=args.steps,
        batch_size=args.batch_size,
        attributes=args.attributes,
        tiny=args.tiny,
        resume=args.resume,
        audio=args.audio,
        device=args.device,
        command="moodlane " + " ".join(sys.argv[1:]),
        lara_weight=args.lara_weight,
        lara_layer=args.lara_layer,
        emotion=args.emotion,
        init=args.init,
        layers=args.layers,
        dim=args.dim,
        context=args.context,
        lr=args.lr,
        codec_kind=args.codec_kind,
        codec=args.codec_checkpoint,
        max_hours=args.max_hours,
        minutes=args.minutes,
        instrument_weights=tuple(args.instrument_weight),
        pseudo_labels=args.pseudo_labels,
        pseudo_stretch=args.pseudo_stretch,
        twin_stretch=args.twin_stretch,
        valence_contrast=args.valence_contrast,
        contrast_margin=args.contrast_margin,
        seed=args.seed,
        parts=args.parts,
        mode_twins=args.mode_twins,
        twin_splice=args.twin_splice,
        song_key=args.song_key,
        add_attributes=tuple(args.add_attribute),
        calibrate=args.calibrate,
    )
    run = {
        "symbolic": jobs.train_symbolic,
        "map": jobs.train_map,
        "judge": jobs.train_judge,
        "codec": jobs.train_codec,
        "predictor": jobs.train_predictor,
        "audio": jobs.train_audio,
    }[args.what]
    print(json.dumps(run(job), indent=1))
    return 0


def cmd_data(args) -> int:
    from moodlane.engine.training import audio_data

    if args.what == "encode":
        return cmd_data_encode(args)
    if args.what == "pack":
        from moodlane.engine.audio.text import MiniLM
        from moodlane.engine.training.pack import pack_tokens

        if not args.pack_out:
            raise DataError("data pack needs --pack-out DIR (the pack; --out is the encoded folder it reads)")
        try:
            record = pack_tokens(args.out, args.pack_out, MiniLM(), "minilm", args.codebooks, args.max_mb, args.valid_clips)
        except ValueError as e:  # no token files, too few codebooks, a budget too small
            raise DataError(str(e)) from None
        print(json.dumps(record, indent=1))
        return 0
    if args.what == "pseudo-label":
        from moodlane.engine.symbolic.judge import SymbolicJudge

        judge = SymbolicJudge.shipped()
        print(json.dumps(audio_data.pseudo_label(args.out, args.data, judge), indent=1))
        return 0
    if args.what == "render-audio":
        sets = tuple(args.sets.split(","))
        twins = args.mode_twins  # None: no twins; "": the twins of every set rendered
        if twins is not None:
            twins = tuple(twins.split(",")) if twins else sets
        job = audio_data.RenderJob(
            data=args.data,
            out=args.out,
            sample_rate=args.sample_rate,
            max_seconds=args.max_seconds,
            sets=sets,
            seed=args.seed,
            jobs=args.jobs,
            soundfont=args.soundfont,
            limit=args.limit,
            mode_twins=twins or (),
        )
        print(json.dumps(audio_data.render_audio(job), indent=1))
    return 0


def cmd_eval(args) -> int:
    from moodlane.engine.training.evaluate import EvalJob, run_eval

    if args.what != "symbolic":
        return cmd_eval_audio(args)
    job = EvalJob(
        data=args.data,
        n=args.n,
        grid_n=args.grid_n,
        bars=args.bars,
        density_n=args.density_n,
        out=args.out,
        generator=GeneratorOptions(
            checkpoint=args.checkpoint,
            precision=args.precision,
            guidance=args.guidance,
            guide_texture=args.guide_texture,
            mapping=args.mapping,
        ),
    )
    print(json.dumps(run_eval(job), indent=1))
    return 0


def cmd_bench(args) -> int:
    from moodlane.daw_bridge import bench

    opts = generator_options(args)
    if args.what == "codec":
        result = bench_codec(args.codec_checkpoint, args.seconds, args.repeats)
    elif args.what == "audio":
        result = bench.bench_audio(opts, seconds=args.seconds, repeats=args.repeats)
    elif args.what == "onnx":
        from moodlane.daw_bridge.bench_onnx import bench_onnx

        result = bench_onnx(opts, seconds=args.seconds, repeats=args.repeats, trials=args.trials, live=args.trials > 0)
    elif args.what == "symbolic":
        result = bench.bench_symbolic(opts, bars=args.bars, repeats=args.repeats)
    else:
        cfg = bench.LiveBenchConfig(
            tempo=args.tempo,
            trials=args.trials,
            cpu_seconds=args.cpu_seconds,
            flood_rate=args.flood_rate,
            flood_seconds=args.flood_seconds,
            clock_seconds=args.clock_seconds,
        )
        result = bench.bench_live(opts, cfg)
    print(json.dumps(result, indent=1))
    return 0


def _host_port(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}") from None
    if not 1 <= p <= 65535:
        raise argparse.ArgumentTypeError(f"feedback port must be a whole number in [1, 65535], got {s!r}")
    return host or "127.0.0.1", p


def cmd_serve(args) -> int:
    from moodlane.daw_bridge.midi import CCMapping
    from moodlane.daw_bridge.serve import ServeOptions, serve

    cc_path = Path(args.cc_map) if args.cc_map else PRESET_DIR / "mapping.json"
    try:
        cc_map = CCMapping.from_json(json.loads(_read(str(cc_path), "MIDI mapping file")), str(cc_path))
    except json.JSONDecodeError as e:
        raise UsageError(f"{cc_path} is not valid JSON ({e})") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if KINDS[args.engine] == "audio" and args.mode == "midi":
        raise UsageError(f"the {args.engine} engine makes audio: serve it with --mode audio")
    generator = load_generator(generator_options(args))
    _say_backend(generator, args.quiet)
    emotion = get_emotion_preset(args.preset).emotion if args.preset else Emotion(args.valence or 0.0, args.arousal or 0.0)
    opts = ServeOptions(
        osc_host=args.host,
        osc_port=args.port,
        feedback=args.feedback,
        midi=not args.no_midi,
        midi_backend=args.midi_backend,
        midi_in=args.midi_in,
        midi_out=args.midi_out,
        channel=args.channel - 1,
        lead_channel=None if args.lead_channel is None else args.lead_channel - 1,
        mode=args.mode,
        clock=args.clock,
        tempo=args.tempo or 120.0,
        lookahead_beats=args.lookahead,
        audio_chunk_beats=args.chunk_beats,
        smooth_s=args.smooth,
        seed=args.seed,
        emotion=emotion,
        prompt=_prompt(args),
        autoplay=not args.wait_for_play,
        soundfont=args.soundfont,
        audio_device=args.audio_device,
        blocksize=args.blocksize,
        sample_rate=args.sample_rate,
        duration=args.duration,
        status_line=not args.quiet,
        cc_map=cc_map,
        web=_web_options(args),
    )
    return serve(opts, generator)


def _web_options(args):
    """serve --web: the page on loopback unless --web-host says otherwise."""
    from moodlane.daw_bridge.web import WebOptions

    if not args.web:
        if args.web_host or args.web_port is not None or args.web_token:
            raise UsageError("--web-host, --web-port and --web-token go with --web")
        return None
    return WebOptions(host=args.web_host or "127.0.0.1", port=9080 if args.web_port is None else args.web_port, token=args.web_token)


def cmd_learn(args) -> int:
    from pythonosc.udp_client import SimpleUDPClient

    SimpleUDPClient(args.host, args.port).send_message("/moodlane/learn", args.lane)
    print(f"MIDI learn armed for {args.lane}: move the DAW control that should drive it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="moodlane", description="Emotion-controlled music generation for the DAW.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="offline bounce: emotion -> .mid (and .wav)")
    src = r.add_argument_group("emotion (one of)")
    src.add_argument("--preset", help="named emotion from presets/emotions.json (see `moodlane presets`)")
    src.add_argument("--valence", type=finite("valence", -1, 1), help="constant valence in [-1, 1] (sad -> happy)")
    src.add_argument("--arousal", type=finite("arousal", -1, 1), help="constant arousal in [-1, 1] (calm -> excited)")
    src.add_argument(
        "--automation", metavar="FILE", help="breakpoints: .json, .csv (beats|seconds,valence,arousal) or .mid with CC16/CC17 lanes"
    )
    length = r.add_mutually_exclusive_group()
    length.add_argument("--bars", type=positive_int("bars"), help="length in 4/4 bars (default 16, or the automation's length)")
    length.add_argument("--seconds", type=finite("seconds", 0.1, 36000), help="length in seconds (rounded up to whole bars)")
    r.add_argument("--tempo", type=finite("tempo", 30, 300), help="BPM (default: the preset's, else mapped from the emotion)")
    r.add_argument("--seed", type=int, default=0, help="same seed -> same file (default 0)")
    r.add_argument("-o", "--output", required=True, help="file to write: .mid (notes), or .wav (audio engines; notes through FluidSynth)")
    r.add_argument("--wav", help="notes engines: also render audio through FluidSynth to this WAV file")
    r.add_argument(
        "--parts",
        choices=("one", "tracks"),
        default="one",
        help="notes engines: one piano track (default), or tracks: the lead (melody) and the accompaniment on two tracks",
    )
    r.add_argument("--prompt", help="text prompt, for text-conditioned engines (others ignore it)")
    r.add_argument("--soundfont", help="General MIDI .sf2/.sf3 (default: system soundfont, or $MOODLANE_SOUNDFONT)")
    r.add_argument(
        "--sample-rate", type=int_range("sample rate", 8000, 192000), default=44100, help="WAV sample rate for notes (default 44100)"
    )
    add_generator_options(r)
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=cmd_render)

    s = sub.add_parser("serve", help="live: OSC/MIDI control in, MIDI/audio out")
    s.add_argument("--host", default="127.0.0.1", help="OSC bind address (default 127.0.0.1; 0.0.0.0 listens on every interface)")
    s.add_argument("--port", type=int_range("port", 1, 65535), default=9000, help="OSC port (default 9000)")
    s.add_argument("--feedback", type=_host_port, help="HOST:PORT for status (default: the sender's port + 1)")
    s.add_argument("--mode", choices=("midi", "audio", "both"), default="midi", help="outputs (switch live with /moodlane/mode)")
    s.add_argument("--no-midi", action="store_true", help="no MIDI ports at all")
    s.add_argument("--midi-backend", help="mido backend, e.g. mido.backends.rtmidi/UNIX_JACK (or $MOODLANE_MIDI_BACKEND)")
    s.add_argument("--midi-in", help="connect to this input port instead of creating 'MoodLane In'")
    s.add_argument("--midi-out", help="connect to this output port instead of creating 'MoodLane Out'")
    s.add_argument("--cc-map", help="MIDI mapping JSON (default presets/mapping.json: CC 16 valence, CC 17 arousal)")
    s.add_argument("--channel", type=int, default=1, choices=range(1, 17), metavar="1-16", help="MIDI out channel")
    s.add_argument(
        "--lead-channel",
        type=int,
        choices=range(1, 17),
        metavar="1-16",
        help="send the lead (melody) on this channel, the accompaniment on --channel (default: all on --channel)",
    )
    s.add_argument(
        "--clock",
        choices=("internal", "midi", "link"),
        default="internal",
        help="internal (OSC /moodlane/tempo), MIDI clock on MoodLane In, or Ableton Link (pip install aalink)",
    )
    s.add_argument("--tempo", type=finite("tempo", 20, 400), help="BPM for the internal clock (default 120)")
    s.add_argument("--lookahead", type=finite("lookahead", 0.25, 16), default=2.0, help="beats generated ahead of the play head")
    s.add_argument(
        "--chunk-beats",
        type=finite("chunk-beats", 0.25, 16),
        default=AUDIO_CHUNK_BEATS,
        help=f"audio engines: beats per chunk; a lane change is heard at the next chunk (default {AUDIO_CHUNK_BEATS:g}, as "
        "offline, so the same seed gives the same chunks; notes engines make bars)",
    )
    s.add_argument("--smooth", type=finite("smooth", 0, 10), default=0.3, help="control smoothing time constant, seconds")
    s.add_argument("--preset", help="starting emotion")
    s.add_argument("--valence", type=finite("valence", -1, 1))
    s.add_argument("--arousal", type=finite("arousal", -1, 1))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--prompt", help="text-conditioned engines: the starting prompt (default: the preset's; /moodlane/prompt changes it)")
    s.add_argument("--wait-for-play", action="store_true", help="stay stopped until /moodlane/play")
    s.add_argument("--soundfont")
    s.add_argument("--audio-device", help="sounddevice output device name or index")
    s.add_argument("--blocksize", type=int_range("blocksize", 16, 16384), default=512, help="audio frames per callback")
    s.add_argument("--sample-rate", type=int_range("sample rate", 8000, 192000), help="audio stream rate (default: the device's)")
    s.add_argument("--duration", type=finite("duration", 0.1, 1e9), help="stop after this many seconds")
    w = s.add_argument_group("web control surface")
    w.add_argument("--web", action="store_true", help="serve the XY pad and status page (http://127.0.0.1:9080/)")
    w.add_argument("--web-port", type=int_range("web port", 0, 65535), help="web page port (default 9080; 0: any free port)")
    w.add_argument("--web-host", help="web page bind address (default 127.0.0.1; any other address needs the token printed at start)")
    w.add_argument("--web-token", help="the token a non-loopback page requires (default: a fresh random one)")
    add_generator_options(s)
    s.add_argument("-q", "--quiet", action="store_true", help="no status line")
    s.set_defaults(func=cmd_serve)

    lr = sub.add_parser("learn", help="arm MIDI learn on a running server: the next CC drives LANE")
    lr.add_argument("lane", choices=("valence", "arousal"))
    lr.add_argument("--host", default="127.0.0.1")
    lr.add_argument("--port", type=int_range("port", 1, 65535), default=9000)
    lr.set_defaults(func=cmd_learn)

    p = sub.add_parser("presets", help="list the named emotions")
    p.set_defaults(func=cmd_presets)
    i = sub.add_parser("info", help="how the shipped models were trained")
    i.add_argument("--plot", metavar="PNG", help="also plot its loss history")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("train", help="train a model on a data folder laid out like shared/data")
    t.add_argument(
        "what",
        choices=("symbolic", "map", "judge", "codec", "predictor", "audio"),
        help="symbolic: generator + emotion map; map: the emotion map only; codec, predictor: on the rendered audio (--audio); "
        "audio: the LARA-Gen LM on the encoded audio (moodlane data encode)",
    )
    t.add_argument("--data", help="data folder (or $MOODLANE_DATA)")
    t.add_argument("--audio", default="runs/audio", help="rendered audio folder (moodlane data render-audio): codec, predictor")
    t.add_argument("--out", help="work folder: dataset cache, resumable train_state.pt (default runs/WHAT)")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    t.add_argument("--export", help="checkpoint stem to write (default: the package's engine/weights/)")
    t.add_argument("--steps", type=positive_int("steps"), default=3000)
    t.add_argument("--batch-size", type=positive_int("batch size"), default=8)
    t.add_argument("--attributes", type=positive_int("attributes"), default=22, help="top-k attributes to condition on")
    t.add_argument("--tiny", action="store_true", help="a tiny model (for a smoke test)")
    t.add_argument("--parts", action="store_true", help="symbolic: learn the lead apart from the accompaniment (LEAD tokens)")
    t.add_argument(
        "--mode-twins",
        action="store_true",
        help="symbolic: key-aware data, each training song also in its parallel mode (major <-> minor)",
    )
    t.add_argument(
        "--twin-splice",
        type=float,
        default=0.0,
        metavar="P",
        help="symbolic, with --mode-twins: the share of crops that switch to the twin at a bar line (the mode moves, its context does not)",
    )
    t.add_argument("--song-key", action="store_true", help="symbolic: condition on the whole song's key, not each window's")
    t.add_argument(
        "--add-attribute",
        action="append",
        default=[],
        metavar="NAME",
        help="symbolic: condition on this attribute too (repeatable; with --init its table starts at zero), e.g. minor_chord_share",
    )
    t.add_argument(
        "--calibrate",
        action="store_true",
        help="map: only add the EMOPIA calibration of density and durations (--mapping calibrated) to the map at --export",
    )
    t.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    tcg = t.add_argument_group("codec")
    tcg.add_argument(
        "--kind", dest="codec_kind", choices=("spectral", "seanet"), default="spectral", help="codec family (default spectral)"
    )
    tcg.add_argument("--max-hours", type=finite("max-hours", 0.01, 1000), help="codec: hours of training audio held in memory (default 12)")
    la = t.add_argument_group("audio LM")
    la.add_argument("--lara-weight", type=finite("lara-weight", 0, 10), default=0.5, help="LARA loss weight lambda (0: cross-entropy only)")
    la.add_argument("--lara-layer", type=positive_int("lara-layer"), help="block whose hidden states the proxy aligns (default 2)")
    la.add_argument(
        "--emotion", choices=("av", "text"), default="av", help="av: the AV encoder; text: emotion words in the prompt (baseline)"
    )
    la.add_argument("--codec-checkpoint", help="the codec that encoded the tokens (default: the shipped spectral codec)")
    la.add_argument(
        "--init",
        help="audio: start from a MusicGen folder (transformers format: fine-tune it with emotion control) or an LM stem; "
        "symbolic: from a symbolic stem (with --parts, LEAD is added)",
    )
    la.add_argument("--layers", type=positive_int("layers"), help="decoder blocks (default 4)")
    la.add_argument("--dim", type=positive_int("dim"), help="model width (default 256)")
    la.add_argument("--context", type=positive_int("context"), help="steps per training crop and attention window (default 300: 4 s)")
    la.add_argument("--lr", type=finite("lr", 1e-6, 1.0), help="peak learning rate (default: audio LM 6e-4, codec 1e-3)")
    la.add_argument(
        "--minutes",
        type=finite("minutes", 0, 100_000),
        default=0.0,
        help="audio LM: stop after this much wall time (or --steps, whichever first), the learning rate decaying over it (0: no limit)",
    )
    la.add_argument(
        "--instrument-weight",
        action="append",
        default=[],
        type=name_weight("instrument weight"),
        metavar="NAME=W",
        help="audio LM: draw W times as many crops per hour of this instrument's clips (repeatable), "
        'e.g. "acoustic piano=3" for the default prompt; the valid split stays unweighted',
    )
    la.add_argument(
        "--pseudo-labels",
        action="store_true",
        help="audio LM: unlabelled clips (POP909) train with the symbolic judge's per-bar emotion of their MIDI "
        "(moodlane data pseudo-label) instead of with the emotion dropped",
    )
    la.add_argument(
        "--pseudo-stretch",
        type=finite("pseudo stretch", 0.1, 10.0),
        default=1.0,
        metavar="K",
        help="audio LM, with --pseudo-labels: spread them K times about their mean, clipped to [-1, 1] "
        "(the judge's readings are shrunk toward it: valence std 0.21 over POP909's bars; default 1: as read)",
    )
    la.add_argument(
        "--twin-stretch",
        type=finite("twin stretch", 0.1, 10.0),
        default=1.0,
        metavar="K",
        help="audio LM, with --pseudo-labels: a mode twin's label moves K times the change the symbolic judge "
        "reads from its original (data render-audio --mode-twins), clipped to [-1, 1] (default 1: as read)",
    )
    la.add_argument(
        "--valence-contrast",
        type=finite("valence contrast", 0.0, 100.0),
        default=0.0,
        metavar="W",
        help="audio LM: add W x a hinge asking each labelled crop's cross-entropy with its valence negated to exceed "
        "the true one's by --contrast-margin x |valence| nats a token (a second pass over those crops; default 0: off)",
    )
    la.add_argument(
        "--contrast-margin",
        type=finite("contrast margin", 1e-4, 1.0),
        default=0.05,
        metavar="M",
        help="audio LM, with --valence-contrast: the margin, nats a token per unit of |valence| (default 0.05)",
    )
    la.add_argument(
        "--seed",
        type=int,
        default=0,
        help="audio LM: seed of the initialisation and the training crops (default 0; the ablation trains each variant at several)",
    )
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="prepare training data: render labelled audio, encode it to codec tokens, pack them for a GPU machine")
    d.add_argument(
        "what",
        choices=("render-audio", "encode", "pack", "pseudo-label"),
        help="render-audio: MIDI -> labelled audio; encode: audio -> codec tokens; pack: tokens, LARA targets, text states in a budget; "
        "pseudo-label: the symbolic judge's per-bar emotion for unlabelled clips, from their MIDI (train audio --pseudo-labels)",
    )
    d.add_argument("--data", help="MIDI data folder laid out like shared/data (or $MOODLANE_DATA)")
    d.add_argument("--out", default="runs/audio", help="folder for audio/, manifest.jsonl, encoded/ (resumes what is there)")
    d.add_argument("--codec-checkpoint", help="encode: codec stem or official EnCodec .th (default: the shipped spectral codec)")
    d.add_argument("--kbps", type=float, help="encode: bandwidth (default: all the codec's codebooks)")
    d.add_argument("--sample-rate", type=int_range("sample rate", 8000, 96000), default=24000, help="the codec's rate")
    d.add_argument("--max-seconds", type=finite("max seconds", 0, 3600), default=60.0, help="cap for unlabelled clips (0: whole)")
    d.add_argument("--sets", default="emopia,vgmidi,pop909", help="comma-separated subsets of the data folder")
    d.add_argument("--seed", type=int, default=0, help="seed of the per-clip General MIDI program choice")
    d.add_argument("--jobs", type=int, default=0, help="render-audio: worker processes (0: one per core)")
    d.add_argument("--limit", type=int, default=0, help="clips per set (0: all)")
    d.add_argument(
        "--mode-twins",
        nargs="?",
        const="",
        metavar="SETS",
        help="render-audio: also render each training clip of these sets (comma-separated; bare: all --sets) in the "
        "parallel mode of its key, as <id>~twin; data pseudo-label then labels the twins",
    )
    d.add_argument("--soundfont", help="General MIDI .sf2/.sf3 (default: the system's)")
    d.add_argument("--pack-out", help="pack: the folder to write (train audio --audio reads it like --out)")
    d.add_argument("--codebooks", type=int_range("codebooks", 1, 32), default=4, help="pack: codebooks kept (the LM's)")
    d.add_argument(
        "--max-mb",
        type=finite("max MB", 1, 10_000),
        default=16.0,
        help="pack: size budget (a GPU call carries 64 MiB, the checkout about 45 MB of it)",
    )
    d.add_argument("--valid-clips", type=positive_int("valid clips"), default=64, help="pack: held-out clips kept")
    d.set_defaults(func=cmd_data)

    e = sub.add_parser("eval", help="symbolic: emotion control; codec: against Opus on held-out songs; predictor: on the symbolic renders")
    e.add_argument("what", choices=("symbolic", "codec", "predictor", "audio"))
    e.add_argument("--data", help="data folder (or $MOODLANE_DATA); codec: the MIDI the audio was rendered from (note F1)")
    e.add_argument("--n", type=positive_int("n"), default=25, help="pieces per quadrant (and ramps)")
    e.add_argument("--grid-n", type=positive_int("grid-n"), default=3, help="pieces per VA grid point")
    e.add_argument("--bars", type=positive_int("bars"), default=16)
    e.add_argument("--density-n", type=positive_int("density-n"), default=4, help="pieces per point of the arousal/density sweep")
    e.add_argument("--out", default="out/eval", help="folder for results.json and va_grid.png")
    e.add_argument("--checkpoint", help="symbolic checkpoint stem (default: the shipped model)")
    e.add_argument("--precision", choices=PRECISIONS, default="auto")
    e.add_argument("--guidance", type=finite("guidance", 0, 10), default=1.0, help="valence contrast guidance")
    add_guide_texture(e)
    e.add_argument("--mapping", choices=MAPPINGS, default="smooth")
    add_eval_options(e)
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="speed and memory figures")
    b.add_argument(
        "what",
        choices=("symbolic", "live", "codec", "audio", "onnx"),
        help="onnx: LARA-Gen on PyTorch and onnxruntime side by side (speed, first audio, live latency, RSS)",
    )
    b.add_argument("--bars", type=positive_int("bars"), default=32, help="symbolic: bars per run")
    b.add_argument("--repeats", type=positive_int("repeats"), default=3, help="symbolic, codec, audio: runs; onnx: interleaved rounds")
    b.add_argument("--seconds", type=finite("seconds", 1, 600), default=10.0, help="codec, audio: audio per run")
    add_generator_options(b)
    b.add_argument("--tempo", type=finite("tempo", 20, 400), default=120.0, help="live: BPM")
    b.add_argument("--trials", type=int_range("trials", 0, 1000), default=10, help="live, onnx: control changes timed (onnx: 0 skips live)")
    b.add_argument("--cpu-seconds", type=finite("cpu seconds", 0.5, 600), default=5.0)
    b.add_argument("--flood-rate", type=positive_int("flood rate"), default=10000, help="live: OSC messages per second")
    b.add_argument("--flood-seconds", type=finite("flood seconds", 1, 3600), default=30.0)
    b.add_argument("--clock-seconds", type=finite("clock seconds", 0, 600), default=20.0, help="live: MIDI clock slave run (0: skip)")
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("export", help="export the LARA-Gen LM, codec decoder and text encoder to ONNX (onnxruntime backend)")
    x.add_argument("what", choices=("onnx",))
    x.add_argument("--out", help="folder to write (default: the cache folder the audio engine looks in)")
    x.add_argument("--lm-checkpoint", help="LM stem (default: the shipped LM)")
    x.add_argument("--codec-checkpoint", help="codec stem (default: the codec the LM was trained with)")
    x.add_argument("--opset", type=int_range("opset", 14, 21), default=17, help="ONNX opset (default 17)")
    x.add_argument("-q", "--quiet", action="store_true")
    x.set_defaults(func=cmd_export)

    add_audio_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)  # force: main() may run twice in one process
    try:
        return args.func(args)
    except (*USER_ERRORS, UsageError) as e:
        print(f"moodlane: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("moodlane: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
