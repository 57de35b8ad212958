"""LM checkpoints: `stem.safetensors` + `stem.json` (config, the codec it was trained on,
the training record, the weights' SHA-256), or a MusicGen folder (`engine.audio.musicgen`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from moodlane.engine.atomic import PACKAGE_WEIGHTS, save_stem, stem_files, weights_pair
from moodlane.engine.audio.lm import LaraLM, LMConfig

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "onnx")  # the audio engine's runtime (auto: ONNX when an export matches the LM)

FORMAT_VERSION = 1
DEFAULT_LM = PACKAGE_WEIGHTS / "lara"


class LMCheckpointError(ValueError):
    """An LM checkpoint that is missing, corrupt, or does not fit its codec."""


def codec_signature(codec) -> dict:
    """What an LM must agree on with the codec that decodes its tokens: the codec's weights
    (SHA-256; `file`: its stem, relative to the package's weights when shipped) and shapes."""
    cfg = getattr(codec, "cfg", None)  # MoodLane's Codec, else a MusicGen folder's HFCodec
    sig = {
        "name": cfg.name if cfg is not None else codec.meta.get("source", "musicgen"),
        "sample_rate": int(codec.sample_rate),
        "frame_rate": float(codec.frame_rate),
        "n_q": int(cfg.lm_codebooks if cfg is not None else codec.n_q),
        "bins": int(cfg.bins if cfg is not None else codec.bins),
    }
    if codec.sha256:
        path = Path(codec.meta["path"]) if codec.meta.get("path") else None
        sig["sha256"] = codec.sha256
        if path is not None:
            sig["file"] = path.name if path.parent.resolve() == PACKAGE_WEIGHTS.resolve() else str(path)
    return sig


def lm_codec(meta: dict) -> Path:
    """The codec an LM was trained with: its recorded file (a shipped stem, or a path); LMs
    written before codecs were recorded by file were all trained on the first shipped codec."""
    from moodlane.engine.audio.codec import LEGACY_CODEC

    f = (meta.get("codec") or {}).get("file")
    return (PACKAGE_WEIGHTS / f if "/" not in f else Path(f)) if f else LEGACY_CODEC


def check_pair(cfg: LMConfig, codec, where: str) -> None:
    sig = codec_signature(codec)
    if cfg.n_q > sig["n_q"] or cfg.card != sig["bins"] or abs(cfg.frame_rate - sig["frame_rate"]) > 1e-3:
        raise LMCheckpointError(
            f"{where} was trained for {cfg.n_q} codebooks of {cfg.card} at {cfg.frame_rate:g} frames/s, but the codec "
            f"({sig['name']}) gives {sig['n_q']} of {sig['bins']} at {sig['frame_rate']:g}: use the codec it was trained with"
        )


def check_lm_codec(cfg: LMConfig, meta: dict, codec, where: str) -> None:
    """The codec must be the one the LM was trained with (by SHA-256 when the LM records
    it, else by name and shapes): an error naming both otherwise."""
    from moodlane.engine.audio.codec import CodecError, check_codec

    rec = meta.get("codec") or {}
    try:
        check_codec(rec.get("sha256"), rec.get("name"), codec, f"the LM {where}", missing_ok=True)
    except CodecError as e:
        raise LMCheckpointError(str(e)) from None
    check_pair(cfg, codec, where)


def save_lm(stem: str | os.PathLike, model: LaraLM, meta: dict, half: bool = True) -> None:
    head = {"format_version": FORMAT_VERSION, "kind": "lara-lm", "config": model.cfg.to_json(), **meta}
    save_stem(stem, *weights_pair(model.state_dict(), head, half))


def load_lm(path: str | os.PathLike | None = None, warm_start: bool = False) -> tuple[LaraLM, dict]:
    """A MoodLane LM stem (default: the shipped one). Errors name the file and the problem.
    `warm_start`: parts this version of the model adds (zero-initialised) may be absent."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    st, js = stem_files(path or DEFAULT_LM, "LM", LMCheckpointError)
    try:
        meta = json.loads(js.read_text())
        cfg = LMConfig.from_json(meta["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise LMCheckpointError(f"{js}: not a MoodLane LM config ({type(e).__name__}: {e})") from None
    if meta.get("kind") != "lara-lm" or meta.get("format_version") != FORMAT_VERSION:
        raise LMCheckpointError(f"{js}: expected kind 'lara-lm', format_version {FORMAT_VERSION}")
    raw = st.read_bytes()
    if meta.get("weights_sha256") and hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
        raise LMCheckpointError(f"{st} does not match {js} (checksum differs: written by another run?)")
    try:
        state = {k: v.float() for k, v in load(raw).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LMCheckpointError(f"{st}: not a readable safetensors file ({e})") from None
    model = LaraLM(cfg)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise LMCheckpointError(f"{st} does not match its config: {str(e).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if not (warm_start and k.startswith("av.add."))]
    if missing or unexpected:
        bad = f"{len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {(missing + unexpected)[0]}"
        raise LMCheckpointError(f"{st} does not match its config: {bad}")
    return model.eval(), meta


def _stem_sha(path: str | os.PathLike) -> str | None:
    """SHA-256 of a checkpoint's weights file: the one its JSON records (the load verifies
    it), else hashed here (None: unreadable; the PyTorch load says why)."""
    try:
        st, js = stem_files(path, "", LMCheckpointError)
        return json.loads(js.read_text()).get("weights_sha256") or hashlib.sha256(st.read_bytes()).hexdigest()
    except (LMCheckpointError, OSError, ValueError):
        return None


def _codec_meta(path: str | os.PathLike) -> dict | None:
    """A codec stem's JSON (None: not a readable stem, such as an official EnCodec .th)."""
    try:
        return json.loads(stem_files(path, "codec", LMCheckpointError)[1].read_text())
    except (LMCheckpointError, OSError, ValueError):
        return None


def _onnx_failed(backend: str, why: str):
    """An ONNX backend that cannot run: an explicit `--backend onnx` is an error (it never
    silently becomes PyTorch); `auto` warns and falls back."""
    if backend == "onnx":
        raise LMCheckpointError(f"--backend onnx: {why} (run `moodlane export onnx`, or use --backend auto to fall back to PyTorch)")
    log.warning("%s: using PyTorch", why)
    return None


def _onnx_generator(lm, codec, sampling, backend: str, onnx_dir, providers, threads: int, precision: str):
    """The ONNX-backed generator when an export matching the checkpoint is there. With
    `auto`, None (and a warning naming the file, unless no export is there at all) means
    PyTorch; with `onnx`, any problem is an LMCheckpointError naming the file."""
    try:
        from moodlane.engine.audio.onnx_runtime import OnnxExportError, default_folder, load_onnx_lara
    except ImportError as e:  # pragma: no cover - the package ships export/
        return _onnx_failed(backend, f"the ONNX runtime backend cannot be imported ({e})")
    lm_sha = _stem_sha(lm or DEFAULT_LM)
    try:
        codec_stem = codec or lm_codec(json.loads(stem_files(lm or DEFAULT_LM, "LM", LMCheckpointError)[1].read_text()))
        codec_sha = _stem_sha(codec_stem)
    except (LMCheckpointError, OSError, ValueError):
        return None  # the PyTorch load reports the broken checkpoint
    from moodlane.engine.audio.codec import ceiling_sha, config_from_json

    codec_meta = _codec_meta(codec_stem)
    # the SHA-256 of the codec's decoder bound ("" for none; None: an official .th has none either way)
    codec_bound = None if codec_meta is None else ceiling_sha(codec_meta) or ""
    # what runs outside the graph (a spectral codec's phase reconstruction) follows the codec's JSON
    codec_cfg = config_from_json(codec_meta["config"]) if codec_meta and "config" in codec_meta else None
    if lm_sha is None:
        return None  # the PyTorch load reports the broken checkpoint
    folder = Path(onnx_dir) if onnx_dir else default_folder(lm_sha)
    if backend == "auto" and not (folder / "manifest.json").exists():
        log.info("no ONNX export in %s (moodlane export onnx): using PyTorch", folder)
        return None
    try:
        return load_onnx_lara(
            folder, sampling, lm_sha, codec_sha, providers, threads, precision=precision, codec_bound=codec_bound, codec_cfg=codec_cfg
        )
    except OnnxExportError as e:
        return _onnx_failed(backend, str(e))


def load_text_encoder(kind: str = "minilm", musicgen: str | os.PathLike | None = None):
    """The frozen encoder an LM config names: "minilm" (the package's) or "t5" (a MusicGen
    folder's)."""
    from moodlane.engine.audio.text import MiniLM, TextEncoderError

    if kind == "minilm":
        return MiniLM()
    if musicgen is None:
        raise TextEncoderError("this LM reads T5 text states: give the MusicGen folder (--lm-checkpoint DIR)")
    from moodlane.engine.audio.musicgen import load_t5

    return load_t5(musicgen)


def load_lara(
    lm: str | os.PathLike | None = None,
    codec: str | os.PathLike | None = None,
    sampling=None,
    backend: str = "auto",
    onnx_dir: str | os.PathLike | None = None,
    providers: list[str] | None = None,
    threads: int = 1,
    precision: str = "fp32",
):
    """The audio generator: a MoodLane LM stem (default: the shipped one) with the codec it
    was trained on (default: the one its metadata names, checked by SHA-256) and its text encoder, or a MusicGen folder
    (decoder, its EnCodec and T5; `codec` then overrides the folder's EnCodec).

    `backend`: "onnx" runs the export in `onnx_dir` (default: the cache folder for this
    checkpoint, `engine.audio.onnx_runtime.default_folder`) on onnxruntime, "torch" PyTorch, "auto" the
    export when one matching the checkpoint exists. A missing, corrupt or mismatched export
    is an LMCheckpointError naming the file with "onnx", and falls back to PyTorch with a
    warning naming it with "auto". `precision` "int8": the ONNX decoder with int8 weights
    (PyTorch runs fp32 either way)."""
    from moodlane.engine.audio.codec import load_codec
    from moodlane.engine.audio.generator import AudioSampling, LaraGenerator

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    sampling = sampling or AudioSampling()
    musicgen = lm is not None and Path(lm).is_dir()
    if backend == "onnx" and musicgen:
        raise LMCheckpointError(f"--backend onnx: ONNX export covers MoodLane LM stems; run the MusicGen folder {lm} with --backend torch")
    if backend != "torch" and not musicgen:
        gen = _onnx_generator(lm, codec, sampling, backend, onnx_dir, providers, threads, precision)
        if gen is not None:
            return gen
    if musicgen:
        from moodlane.engine.audio.musicgen import load_decoder, load_hf_codec

        model, _ = load_decoder(lm, av_tokens=0)  # not fine-tuned with AV: fresh AV tokens would be noise in every layer
        log.info("MusicGen folder %s: text conditioning only (no emotion control until fine-tuned with `train audio --init`)", lm)
        dec = load_codec(codec) if codec else load_hf_codec(lm)
        check_pair(model.cfg, dec, str(lm))
        return LaraGenerator(model, dec, load_text_encoder("t5", lm), sampling, meta={"source": str(lm)})
    model, meta = load_lm(lm)
    dec = load_codec(codec or lm_codec(meta))
    check_lm_codec(model.cfg, meta, dec, str(lm or DEFAULT_LM))
    return LaraGenerator(
        model, dec, load_text_encoder(model.cfg.text_encoder), sampling, emotion_as_text=meta.get("emotion") == "text", meta=meta
    )
