"""The onnxruntime backend of the LARA-Gen generator: the files `export.onnx` writes, run by
the same generation loop as PyTorch (`engine.audio.generator.LaraGenerator`: delay pattern,
top-k, guidance and chunked state stay there; only the LM's step, its memory, the codec
decoder and the text encoder change hands).

Providers: CUDA, then CPU (TensorRT first when asked). The KV cache and the conditioning
memory are OrtValues bound with I/O binding on the session's device, so on a GPU they never
leave it; each step's outputs are new OrtValues, so a cache snapshot (`clone`) is a list
copy. On the CPU the same binding code runs (and is what the tests cover).

`load_onnx_lara` checks the manifest against the checkpoint (SHA-256 of the LM and codec
weights, of each ONNX file): a missing, corrupt or mismatched export raises `OnnxExportError`
naming the file, and the engine falls back to PyTorch with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moodlane.engine.audio.lm import LMConfig

MANIFEST_VERSION = 1  # the export's manifest format (export.onnx writes it, this module reads it)


def past_names(n_layer: int, prefix: str = "past") -> list[str]:
    """The decoder graph's KV-cache inputs (`past`) or outputs (`present`), layer by layer."""
    return [f"{prefix}.layers.{i}.self_attn.{kv}" for i in range(n_layer) for kv in ("key", "value")]


log = logging.getLogger(__name__)

PROVIDER_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")
SHORT = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OnnxExportError(ValueError):
    """An ONNX export that is missing, corrupt or made from another checkpoint."""


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise OnnxExportError(
            "onnxruntime is not installed: pip install 'moodlane[onnx]' (CPU) or 'moodlane[gpu]' (CUDA), never both"
        ) from None
    return onnxruntime


def choose_providers(wanted: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(available, to request, notices). `wanted`: short or full names in order of
    preference (default CUDA then CPU); ones this onnxruntime lacks are dropped with a
    notice, and CPU always stays last as the fallback."""
    ort = _ort()
    available = list(ort.get_available_providers())
    names = [SHORT.get(w.lower(), w) for w in (wanted or PROVIDER_ORDER)]
    missing = [n for n in names if n not in available and n != "CPUExecutionProvider"]
    notices = [f"{n} is not available in this onnxruntime ({ort.__version__}; has {', '.join(available)}): skipped" for n in missing]
    if not wanted:  # the default order asks for CUDA wherever it is; its absence is the everyday case, not news
        notices = []
    chosen = [n for n in names if n in available and n != "CPUExecutionProvider"] + ["CPUExecutionProvider"]
    return available, chosen, notices


def _session(data: bytes, where: Path, providers: list[str], threads: int):
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # onnxruntime-gpu without CUDA libraries logs an error and runs on CPU: we report it ourselves
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "provider not in available provider names": the caller reports what runs
            return ort.InferenceSession(data, so, providers=providers)
    except Exception as e:  # onnxruntime raises its own (Fail, InvalidProtobuf, ...) types
        raise OnnxExportError(f"{where}: onnxruntime cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


@dataclass
class OrtCache:
    """The KV cache as OrtValues (B, H, length, hd) per layer and key/value, on the device.
    Never written in place: each step returns new ones, so a snapshot is a list copy."""

    values: list
    length: int
    capacity: int
    batch: int

    def clone(self) -> OrtCache:
        return OrtCache(list(self.values), self.length, self.capacity, self.batch)


class OnnxLM:
    """The LM's step and memory on onnxruntime, with the `TorchLM` interface."""

    name = "onnx"

    def __init__(self, decoder, memory, cfg: LMConfig, available: list[str]) -> None:
        ort = _ort()
        self.dec, self.mem, self.cfg = decoder, memory, cfg
        self.available = available
        self.used = decoder.get_providers()
        self.device = "cuda" if self.used[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
        self._ortvalue = ort.OrtValue
        self._past = past_names(cfg.n_layer)
        self._present = past_names(cfg.n_layer, "present")
        self._mem_out = [o.name for o in memory.get_outputs()]

    def _value(self, a: np.ndarray):
        return self._ortvalue.ortvalue_from_numpy(np.ascontiguousarray(a), self.device, 0)

    def memory(self, text: torch.Tensor, mask: torch.Tensor, va: torch.Tensor, av_on: torch.Tensor) -> dict:
        b = self.mem.io_binding()
        for name, t in zip(("text_states", "text_mask", "va", "av_on"), (text, mask, va, av_on)):
            b.bind_ortvalue_input(name, self._value(t.numpy()))
        for name in self._mem_out:
            b.bind_output(name, self.device)
        self.mem.run_with_iobinding(b)
        return dict(zip(self._mem_out, b.get_outputs()))

    def new_cache(self, batch: int) -> OrtCache:
        empty = np.zeros((batch, self.cfg.n_head, 0, self.cfg.head_dim), np.float32)
        return OrtCache([self._value(empty) for _ in self._past], 0, self.cfg.context, batch)

    def logits(self, tokens: torch.Tensor, mem: dict, cache: OrtCache) -> torch.Tensor:
        """tokens (B, K, S) after the cached steps -> the last step's logits (B, K, card)."""
        if cache.length + tokens.shape[2] > cache.capacity:
            raise RuntimeError(f"KV cache full ({cache.capacity} steps)")
        b = self.dec.io_binding()
        b.bind_ortvalue_input("input_ids", self._value(tokens.numpy()))
        for name, v in zip(self._past, cache.values):
            b.bind_ortvalue_input(name, v)
        for name, v in mem.items():
            b.bind_ortvalue_input(name, v)
        b.bind_output("logits", "cpu")  # small; sampling runs in torch on the host
        for name in self._present:
            b.bind_output(name, self.device)
        self.dec.run_with_iobinding(b)
        out = b.get_outputs()
        cache.values = list(out[1:])
        cache.length += tokens.shape[2]
        return torch.from_numpy(out[0].numpy())

    def describe(self) -> dict:
        threads = self.dec.get_session_options().intra_op_num_threads
        return {"backend": "onnx", "providers_available": self.available, "providers_used": self.used, "threads": threads}


class OnnxCodec:
    """The codec decoder on onnxruntime: `decode` codes (B, K, F) -> (B, T) float32. A
    spectral codec's graph gives the log magnitude; its phase comes from the same
    `griffin_lim` the PyTorch codec calls."""

    def __init__(self, session, sample_rate: int, frame_rate: float, meta: dict, cfg=None) -> None:
        self.sess, self.sample_rate, self.frame_rate, self.meta, self.cfg = session, sample_rate, frame_rate, meta, cfg

    @property
    def context_frames(self) -> int:
        return self.cfg.context_frames if self.cfg is not None else 2

    def decode(self, codes, length: int | None = None, first_frame: int = 0) -> np.ndarray:
        from moodlane.engine.audio.codec import fit_length

        codes = np.ascontiguousarray(np.asarray(codes, dtype=np.int64))
        if codes.ndim == 2:
            codes = codes[None]
        if self.cfg is not None and self.cfg.kind == "spectral":
            from moodlane.engine.audio.spectral import griffin_lim

            logmag = self.sess.run(["logmag"], {"codes": codes})[0]
            with torch.inference_mode():
                y = griffin_lim(torch.from_numpy(logmag), self.cfg, first_frame).numpy()
        else:
            y = self.sess.run(["audio"], {"codes": codes})[0]
        return fit_length(y, length)


class OnnxText:
    """MiniLM on onnxruntime, with the exported tokenizer: texts -> (states, mask)."""

    def __init__(self, session, tokenizer_path: Path) -> None:
        from moodlane.engine.audio.text import load_tokenizer

        self.sess = session
        self.tokenizer = load_tokenizer(tokenizer_path)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from moodlane.engine.audio.text import tokenize

        ids, mask = tokenize(self.tokenizer, texts)
        states = self.sess.run(["text_states"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        return torch.from_numpy(states), mask


def default_folder(lm_sha: str) -> Path:
    """Where `moodlane export onnx` writes, and the engine looks, for an LM with this
    SHA-256: $MOODLANE_ONNX_CACHE, else $XDG_CACHE_HOME/moodlane/onnx, else ~/.cache/..."""
    root = os.environ.get("MOODLANE_ONNX_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moodlane" / "onnx"
    return Path(root) / f"lara-{lm_sha[:12]}"


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise OnnxExportError(f"{path} does not exist (moodlane export onnx --out {folder})")
    try:
        m = json.loads(path.read_text())
        LMConfig.from_json(m["lm_config"])
    except (ValueError, KeyError, TypeError) as e:
        raise OnnxExportError(f"{path}: not a MoodLane ONNX manifest ({type(e).__name__}: {e})") from None
    if m.get("kind") != "lara-onnx" or m.get("format_version") != MANIFEST_VERSION:
        raise OnnxExportError(f"{path}: expected kind 'lara-onnx', format_version {MANIFEST_VERSION}")
    return m


def _read_checked(folder: Path, entry: dict) -> tuple[bytes, Path]:
    path = folder / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OnnxExportError(f"{path} cannot be read ({e.strerror})") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise OnnxExportError(f"{path} is corrupt or was replaced (its SHA-256 differs from manifest.json's)")
    return data, path


def check_source(manifest: dict, folder: Path, lm_sha: str | None, codec_sha: str | None, codec_bound: str | None = None) -> None:
    """The export must come from these weights (None: not checked). `codec_bound`: the SHA-256
    of the codec's decoder bound ("" for none; None: not checked): the bound is in the
    exported graph, so an export made before the codec had one must not run with it."""
    src = manifest.get("source") or {}
    for what, want in (("LM", lm_sha), ("codec", codec_sha)):
        have = src.get(f"{what.lower()}_sha256")
        if want and have != want:
            raise OnnxExportError(
                f"{folder / 'manifest.json'} was exported from another {what} checkpoint "
                f"(SHA-256 {str(have)[:12]}, this one {want[:12]}): run moodlane export onnx again"
            )
    have = src.get("codec_bound_sha256") or ""
    if codec_bound is not None and have != codec_bound:
        said = lambda x: x[:12] if x else "none"  # noqa: E731
        raise OnnxExportError(
            f"{folder / 'manifest.json'} was exported with another decoder bound (logmag_ceiling {said(have)}, "
            f"the codec's {said(codec_bound)}): run moodlane export onnx again"
        )


def load_onnx_lara(
    folder: str | os.PathLike,
    sampling=None,
    lm_sha: str | None = None,
    codec_sha: str | None = None,
    providers: list[str] | None = None,
    threads: int = 1,
    text_encoder=None,
    precision: str = "fp32",
    codec_bound: str | None = None,
    codec_cfg=None,
):
    """A `LaraGenerator` on the ONNX files in `folder`. `lm_sha`/`codec_sha`: the checkpoint
    the caller expects (the manifest must agree; `codec_bound` too, see `check_source`).
    `codec_cfg`: the codec's config as its JSON says now (the phase reconstruction's settings
    run outside the graph; None: as exported). `text_encoder`: used when the export has
    none (a test's stand-in; else the LM config's encoder is loaded in PyTorch). `precision`:
    "fp32" (the default: it reproduces PyTorch) or "int8" (the quantised decoder: faster on
    a CPU, its tokens differ now and then)."""
    from moodlane.engine.audio.generator import AudioSampling, LaraGenerator

    folder = Path(folder)
    m = read_manifest(folder)
    check_source(m, folder, lm_sha, codec_sha, codec_bound)
    cfg = LMConfig.from_json(m["lm_config"])
    files = m.get("files") or {}
    for need in ("decoder", "memory", "codec_decoder"):
        if need not in files:
            raise OnnxExportError(f"{folder / 'manifest.json'} lists no {need} file")
    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    dec_key = "decoder_int8" if precision == "int8" else "decoder"
    if dec_key not in files:
        raise OnnxExportError(f"{folder / 'manifest.json'} lists no {dec_key} file (export again with onnxruntime installed)")
    available, chosen, notices = choose_providers(providers)
    dec_bytes, dec_path = _read_checked(folder, files[dec_key])
    decoder = _session(dec_bytes, dec_path, chosen, threads)
    used = decoder.get_providers()
    if chosen[0] != "CPUExecutionProvider" and used[0] != chosen[0]:
        notices.append(f"{chosen[0]} could not start (its libraries or the device are missing): running on {used[0]}")
    memory = _session(*_read_checked(folder, files["memory"]), used, threads)
    src = m.get("source") or {}
    codec_sess = _session(*_read_checked(folder, files["codec_decoder"]), used, threads)
    from moodlane.engine.audio.codec import config_from_json

    if codec_cfg is None:  # else the codec's own JSON, checked above to be these weights: its phase settings may be newer
        codec_cfg = config_from_json(m["codec_config"]) if m.get("codec_config") else None
    codec = OnnxCodec(codec_sess, int(m["sample_rate"]), float(m["frame_rate"]), {"weights_sha256": src.get("codec_sha256")}, codec_cfg)
    if "text_encoder" in files:
        _read_checked(folder, files["tokenizer"])
        text = OnnxText(_session(*_read_checked(folder, files["text_encoder"]), used, threads), folder / "tokenizer.json")
    elif text_encoder is not None:
        text = text_encoder
    elif cfg.text_encoder == "minilm":  # the package's encoder, in PyTorch
        from moodlane.engine.audio.text import MiniLM

        text = MiniLM()
    else:
        raise OnnxExportError(f"{folder / 'manifest.json'} lists no text encoder, and this LM's ({cfg.text_encoder}) needs its folder")
    for n in notices:
        log.warning(n)
    lm = OnnxLM(decoder, memory, cfg, available)
    meta = {"weights_sha256": src.get("lm_sha256"), "onnx": str(folder), "precision": precision, "notices": notices}
    return LaraGenerator(lm, codec, text, sampling or AudioSampling(), emotion_as_text=m.get("emotion") == "text", meta=meta)
