"""What `moodlane train symbolic|map|judge` runs. Training reads the data folder and writes
work files and checkpoints: the part of the engine that does file I/O by design."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from moodlane.engine.atomic import write_atomic
from moodlane.engine.symbolic.checkpoint import PACKAGE_WEIGHTS
from moodlane.engine.symbolic.emotion_map import EmotionMap
from moodlane.engine.symbolic.model import TINY, SymbolicConfig
from moodlane.engine.training.data import resolve_data_dir
from moodlane.engine.training.emotion import fit_emotion_map, fit_judge, timed_attributes
from moodlane.engine.training.labelled import labelled_features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """`moodlane train ...`: what to train, from which data, into which files."""

    data: str | None = None  # data folder (None: $MOODLANE_DATA)
    out: str = "runs/symbolic"  # work folder: dataset cache, resumable train_state.pt
    export: str | None = None  # checkpoint stem (or judge file) to write; None: the package's weights
    steps: int = 3000
    batch_size: int = 8
    attributes: int = 22
    tiny: bool = False
    resume: bool = False
    audio: str = "runs/audio"  # rendered audio (`moodlane data render-audio`): codec and predictor
    device: str = "cpu"
    command: str = ""  # the command line, recorded with the weights
    lara_weight: float = 0.5  # audio LM
    lara_layer: int | None = None
    emotion: str = "av"
    init: str | None = None  # a MusicGen folder to fine-tune
    layers: int | None = None
    dim: int | None = None
    context: int | None = None
    lr: float | None = None
    codec_kind: str = "spectral"  # train codec: spectral (default) or seanet
    codec: str | None = None  # train audio: the codec whose tokens it learns (default: the shipped spectral codec)
    max_hours: float | None = None  # train codec: hours of audio held in memory
    minutes: float = 0.0  # train audio: a wall-clock budget (0: none)
    instrument_weights: tuple[tuple[str, float], ...] = ()  # train audio: crops per hour of an instrument, relative to 1
    pseudo_labels: bool = False  # train audio: unlabelled clips train with the symbolic judge's labels
    pseudo_stretch: float = 1.0  # train audio, with pseudo_labels: their spread about the mean, times this
    twin_stretch: float = 1.0  # train audio, with pseudo_labels: a mode twin's judged label change, times this
    valence_contrast: float = 0.0  # train audio: weight of the valence-contrast hinge (0: off)
    contrast_margin: float = 0.05  # train audio: its margin, nats a token per unit of |valence|
    seed: int = 0  # train audio: the initialisation's and the crops' seed
    parts: bool = False  # train symbolic: LEAD tokens mark the lead's notes
    mode_twins: bool = False  # train symbolic: each training song in its parallel mode too (key-aware)
    twin_splice: float = 0.0  # train symbolic, with mode_twins: share of crops switching mode at a bar line
    song_key: bool = False  # train symbolic: key attributes measured over the whole song
    add_attributes: tuple[str, ...] = ()  # train symbolic: conditioning beyond the selected (or --init's) attributes
    calibrate: bool = False  # train map: only add the calibration of the time-based attributes


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=1).encode())


def fit_map_for(stem: Path, data_dir: Path, work: Path) -> dict:
    """Fit the emotion map for the generator at `stem` and write `emotion_map.json` beside it."""
    meta = json.loads(stem.with_suffix(".json").read_text())
    cfg = SymbolicConfig.from_json(meta["config"])
    lab = labelled_features(data_dir, work / "labelled.npz")
    bank = bank_ranks = None
    if (work / "dataset.npz").is_file():  # real bars the generator learned from
        d = np.load(work / "dataset.npz")
        bank = d["bar_values"][np.repeat(~d["valid"], d["n_bars"])]
    elif stem.with_name("emotion_map.json").is_file():  # refit: keep the map's bank of real bars
        bank_ranks = EmotionMap.load(stem.with_name("emotion_map.json")).bank
    emap = fit_emotion_map(lab, cfg.attributes, np.asarray(cfg.bin_edges), bank, bank_ranks=bank_ranks)
    emap.meta["command"] = "moodlane train map --data DATA" if bank is None else "moodlane train symbolic --data DATA"
    _write_json(stem.with_name("emotion_map.json"), emap.to_json())
    return {"gain": emap.gain, "fit_correlation": emap.meta["fit_correlation"]}


def train_symbolic(args: TrainJob) -> dict:
    from moodlane.engine.symbolic.attributes import FEATURE_NAMES, NOT_CONTROLLABLE
    from moodlane.engine.symbolic.checkpoint import load_symbolic
    from moodlane.engine.symbolic.tokens import PARTS_VOCAB, VOCAB_SIZE
    from moodlane.engine.training.symbolic import TrainConfig, choose_attributes, train

    if not 0.0 <= args.twin_splice <= 1.0 or (args.twin_splice and not args.mode_twins):
        raise ValueError(f"--twin-splice must be in [0, 1] and needs --mode-twins, got {args.twin_splice}")
    bad = [a for a in args.add_attributes if a not in FEATURE_NAMES or a in NOT_CONTROLLABLE]
    if bad:
        raise ValueError(f"--add-attribute: {bad} not among the controllable attributes (engine/symbolic/attributes.py FEATURE_NAMES)")
    data_dir = resolve_data_dir(args.data)
    out = Path(args.out)
    stem = Path(args.export) if args.export else PACKAGE_WEIGHTS / "symbolic"
    t0 = time.time()
    init = None
    if args.init:  # warm start: its sizes and attributes (and its vocabulary, or with --parts LEAD added)
        init, _ = load_symbolic(args.init)
        base, attrs = init.cfg, init.cfg.attributes
    else:
        base, attrs = TINY if args.tiny else SymbolicConfig(), choose_attributes(data_dir, args.attributes)
    attrs = attrs + tuple(a for a in args.add_attributes if a not in attrs)
    cfg = replace(base, attributes=attrs, bin_edges=(), vocab_size=PARTS_VOCAB if args.parts else VOCAB_SIZE)  # edges: from the data
    tc = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        eval_every=min(250, args.steps),
        mode_twins=args.mode_twins,
        twin_splice=args.twin_splice,
        song_key=args.song_key,
    )
    result = train(data_dir, out, cfg, tc, export_stem=stem, resume=args.resume, init=init, command=args.command)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 writes the map
        return {"rank": int(os.environ["RANK"]), "final": result["history"][-1] if result["history"] else None}
    mapping = fit_map_for(stem, data_dir, out)
    return {
        "checkpoint": str(stem),
        "attributes": list(attrs),
        "final": result["history"][-1],
        "emotion_map": mapping,
        "wall_s": round(time.time() - t0, 1),
    }


def calibrate_map_for(stem: Path, data_dir: Path, work: Path, command: str = "") -> dict:
    """Add the EMOPIA calibration of the time-based attributes (mapping mode `calibrated`) to
    the emotion map beside `stem`, leaving everything else in it as it is."""
    path = stem.with_name("emotion_map.json")
    emap = EmotionMap.load(path)
    lab = labelled_features(data_dir, work / "labelled.npz")
    cfg = SymbolicConfig.from_json(json.loads(stem.with_suffix(".json").read_text())["config"])
    timed = timed_attributes(emap.attributes, np.asarray(cfg.bin_edges), lab)
    meta = {
        **emap.meta,
        "calibration": {"command": command or "moodlane train map --calibrate --data DATA", "data": "EMOPIA training split"},
    }
    _write_json(path, replace(emap, timed=timed, meta=meta).to_json())
    return {name: {"emopia_median_per_quadrant": t["emopia_median_per_quadrant"]} for name, t in timed.items()}


def train_map(args: TrainJob) -> dict:
    """Refit only the emotion map of the checkpoint at `export` (default: the shipped one), or
    with `calibrate` only add its calibration."""
    data_dir = resolve_data_dir(args.data)
    stem = Path(args.export) if args.export else PACKAGE_WEIGHTS / "symbolic"
    t0 = time.time()
    if args.calibrate:
        result = calibrate_map_for(stem, data_dir, Path(args.out), args.command)
    else:
        result = fit_map_for(stem, data_dir, Path(args.out))
    return {"emotion_map": str(stem.with_name("emotion_map.json")), **result, "wall_s": round(time.time() - t0, 1)}


def train_judge(args: TrainJob) -> dict:
    data_dir = resolve_data_dir(args.data)
    lab = labelled_features(data_dir, Path(args.out) / "labelled.npz")
    judge, report = fit_judge(lab)
    path = Path(args.export) if args.export else PACKAGE_WEIGHTS / "judge.json"
    judge.meta["command"] = "moodlane train judge --data DATA"
    _write_json(path, judge.to_json())
    return {"judge": str(path), "validation": report}


def train_codec(args: TrainJob) -> dict:
    from moodlane.engine.audio.codec import CodecConfig
    from moodlane.engine.audio.music_model import PACKAGE_WEIGHTS as AUDIO_WEIGHTS
    from moodlane.engine.audio.spectral import SpectralCodecConfig
    from moodlane.engine.training.codec import CodecTrainConfig, train_codec

    over = {k: v for k, v in (("lr", args.lr), ("max_hours", args.max_hours)) if v is not None}
    tc = CodecTrainConfig(steps=args.steps, batch_size=args.batch_size, device=args.device, **over)
    cfg = SpectralCodecConfig() if args.codec_kind == "spectral" else CodecConfig()
    stem = Path(args.export) if args.export else AUDIO_WEIGHTS / ("codec_spectral" if args.codec_kind == "spectral" else "codec")
    return train_codec(args.audio, args.out, stem, tc, cfg, resume=args.resume, tiny=args.tiny, command=args.command)


def train_predictor(args: TrainJob) -> dict:
    from moodlane.engine.audio.music_model import PACKAGE_WEIGHTS as AUDIO_WEIGHTS
    from moodlane.engine.training.predictor import train_predictor

    stem = Path(args.export) if args.export else AUDIO_WEIGHTS / "predictor"
    return train_predictor(args.audio, args.out, stem, command=args.command)


def warm_start_config(init, over: dict, where: str):
    """A warm start keeps the LM's shape: `--dim`/`--layers` that differ are an error naming
    both; `--context` and `--lara-layer` apply (the same weights in a model rebuilt with
    them). Returns the model to train and its config."""
    from moodlane.engine.audio.checkpoint import LMCheckpointError
    from moodlane.engine.audio.lm import LaraLM

    shape = {k: v for k, v in over.items() if k in ("dim", "ffn", "n_layer") and getattr(init.cfg, k) != v}
    if shape:
        have = ", ".join(f"{k} {getattr(init.cfg, k)}" for k in shape)
        asked = ", ".join(f"{k} {v}" for k, v in shape.items())
        raise LMCheckpointError(
            f"a warm start from {where} keeps its shape ({have}; asked {asked}): drop --dim/--layers, or train from scratch without --init"
        )
    apply = {k: v for k, v in over.items() if k in ("context", "lara_layer") and getattr(init.cfg, k) != v}
    if not apply:
        return init, init.cfg
    cfg = replace(init.cfg, **apply)
    model = LaraLM(cfg)
    model.load_state_dict(init.state_dict())
    return model, cfg


def train_audio(args: TrainJob) -> dict:
    """The LARA-Gen LM, on the tokens `moodlane data encode` wrote under --audio."""
    from moodlane.engine.audio.checkpoint import DEFAULT_LM, codec_signature
    from moodlane.engine.audio.codec import load_codec
    from moodlane.engine.audio.lm import LMConfig
    from moodlane.engine.training.lara import TEXTS, LaraTrainConfig, TextTable, tiny_setup, train_lara

    over = {
        k: v
        for k, v in (("n_layer", args.layers), ("dim", args.dim), ("lara_layer", args.lara_layer), ("context", args.context))
        if v is not None
    }
    if "dim" in over:
        over["ffn"] = 4 * over["dim"]
    tc = LaraTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lara_weight=args.lara_weight,
        emotion=args.emotion,
        device=args.device,
        minutes=args.minutes,
        instrument_weights=args.instrument_weights,
        pseudo_labels=args.pseudo_labels,
        pseudo_stretch=args.pseudo_stretch,
        twin_stretch=args.twin_stretch,
        valence_contrast=args.valence_contrast,
        contrast_margin=args.contrast_margin,
        seed=args.seed,
        **({"lr": args.lr} if args.lr is not None else {}),
    )
    init, text_encoder, init_meta = None, None, None
    if args.init and not Path(args.init).is_dir():  # warm start from a MoodLane LM
        from moodlane.engine.audio.checkpoint import load_lm

        init, init_meta = load_lm(args.init, warm_start=True)
        init, cfg = warm_start_config(init, over, args.init)
        sig = init_meta["codec"]
    elif args.init:
        from moodlane.engine.audio.checkpoint import load_text_encoder
        from moodlane.engine.audio.musicgen import load_decoder, load_hf_codec

        init, _ = load_decoder(args.init, **{k: v for k, v in over.items() if k in ("lara_layer", "context")})
        cfg, sig = init.cfg, codec_signature(load_hf_codec(args.init))
        text_encoder = load_text_encoder("t5", args.init)
    else:
        sig = codec_signature(load_codec(args.codec))
        cfg = LMConfig(n_q=sig["n_q"], card=sig["bins"], frame_rate=sig["frame_rate"], **over)
    if args.tiny:
        tc, cfg = tiny_setup(tc, cfg, sig)
    table = Path(args.audio) / TEXTS
    if text_encoder is None and table.is_file():  # a pack (moodlane data pack): the text states travel with it
        text_encoder = TextTable(table)
        if text_encoder.encoder != cfg.text_encoder:
            raise ValueError(f"{table} holds {text_encoder.encoder} states; this LM reads {cfg.text_encoder}")
    stem = Path(args.export) if args.export else DEFAULT_LM
    return train_lara(
        args.audio,
        args.out,
        stem,
        sig,
        tc,
        cfg,
        text_encoder=text_encoder,
        init=init,
        init_record=init_meta,
        resume=args.resume,
        command=args.command,
    )
