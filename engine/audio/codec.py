"""The audio codecs, one interface (`Codec`: arrays in, arrays out) over two families:

* **spectral** (`engine.audio.spectral`, the default): MoodLane's codec of the STFT
  magnitude with a deterministic phase reconstruction, trained here; it carries the notes.
  24 kHz, 75 frames/s, 8 codebooks of 1024 trained with bandwidth dropout (1.5, 3, 6 kbps),
  of which the language model uses the first 4.
* **seanet**: EnCodec's model classes (SEANet encoder/decoder + residual vector quantiser)
  from the `encodec` package: the codec the first LARA-Gen LM was trained on (`codec`, kept
  for it: it loses the notes, see docs/audio/codec.md), or the official EnCodec 24 kHz
  weights, only when asked for by path (`encodec_24khz-d7cc33bc.th`).

Every MoodLane codec file records its weights' SHA-256; token files and LMs record the SHA-256
of the codec that made them, so tokens are never decoded by another codec (`check_codec`).
The engine does no I/O beyond reading weights; audio arrives and leaves as arrays.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from moodlane.engine.atomic import PACKAGE_WEIGHTS, stem_files


class CodecError(ValueError):
    """A codec checkpoint that is missing, unreadable or of another architecture."""


@functools.cache
def _import_encodec():
    """Import the `encodec` package without torchaudio.

    encodec 0.1.1 imports torchaudio at import time, but uses it only for resampling, file
    saving, its CLI and the discriminator, none of which MoodLane calls. PyPI's torchaudio
    does not import beside the CPU build of torch (libc10_cuda.so is missing), so when the
    real one fails to import, an empty module stands in for it. This is the only place in
    MoodLane that knows torchaudio exists. The stand-in is removed again once encodec is
    imported, so other libraries (transformers) still see that torchaudio is absent.
    """
    stub = None
    if "torchaudio" not in sys.modules:
        try:
            import torchaudio  # noqa: F401
        except Exception:  # ImportError or OSError from a CUDA-only build
            stub = sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        import encodec
    except ImportError as e:
        raise CodecError(f"the encodec package is missing ({e}): pip install --no-deps encodec einops") from None
    finally:
        if stub is not None and sys.modules.get("torchaudio") is stub:
            del sys.modules["torchaudio"]
    return encodec


class CodecRates:
    """What both codec families' configs derive from `sample_rate`, `hop`, `bins`, `n_q` and
    `bandwidths`: rates, bit rates and the bandwidth check."""

    def __post_init__(self) -> None:
        for b in self.bandwidths:
            k = b / self.kbps_per_codebook
            if abs(k - round(k)) > 1e-6 or not 1 <= round(k) <= self.n_q:
                raise CodecError(
                    f"bandwidth {b} kbps is not a whole number of codebooks (1..{self.n_q}) at {self.kbps_per_codebook:g} kbps each"
                )

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def kbps_per_codebook(self) -> float:
        return math.log2(self.bins) * self.frame_rate / 1000

    def codebooks_for(self, kbps: float) -> int:
        if kbps not in self.bandwidths:
            raise CodecError(f"bandwidth {kbps} kbps is not one of this codec's {list(self.bandwidths)}")
        return int(round(kbps / self.kbps_per_codebook))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CodecConfig(CodecRates):
    sample_rate: int = 24000
    channels: int = 1
    n_filters: int = 16
    dimension: int = 128
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    lstm: int = 2
    causal: bool = True
    n_q: int = 8  # codebooks trained (bandwidth dropout picks 2, 4 or 8 per batch)
    bins: int = 1024
    bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0)  # kbps: 2, 4, 8 codebooks at 75 frames/s
    lm_codebooks: int = 4  # what the language model uses (3 kbps)
    name: str = "moodlane-codec"
    kind: str = "seanet"

    @property
    def hop(self) -> int:
        return int(np.prod(self.ratios))

    @property
    def context_frames(self) -> int:
        return 2  # the decoder's right context (its left context settles in `left_context_s`)


def config_from_json(d: dict):
    """A codec config of either family (files without `kind` are SEANet: written before it)."""
    from moodlane.engine.audio.spectral import SpectralCodecConfig

    cls = SpectralCodecConfig if d.get("kind") == "spectral" else CodecConfig
    known = set(cls.__dataclass_fields__)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


# 8 kHz, 250 frames/s, 6-bit codebooks: 1.5 kbps per codebook.
TINY = CodecConfig(
    n_filters=4, dimension=16, ratios=(4, 4, 2), lstm=0, n_q=4, bins=64, bandwidths=(3.0, 6.0), lm_codebooks=2, sample_rate=8000
)
# The official EnCodec 24 kHz model (Défossez et al., 2022), when its weights are given by path.
OFFICIAL_24K = CodecConfig(n_filters=32, n_q=32, bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0), name="encodec_24khz")
OFFICIAL_FILE = "encodec_24khz-d7cc33bc.th"  # the torch hub cache's name; used only when given by path
DEFAULT_CODEC = PACKAGE_WEIGHTS / "codec_spectral"  # what codec commands use unless told
LEGACY_CODEC = PACKAGE_WEIGHTS / "codec"  # SEANet, 8,000 steps: the first LARA-Gen LM's


def build_model(cfg) -> torch.nn.Module:
    import warnings

    if cfg.kind == "spectral":
        from moodlane.engine.audio.spectral import SpectralCodecModel

        return SpectralCodecModel(cfg)

    enc = _import_encodec()
    m = enc.modules
    warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
    common = dict(
        channels=cfg.channels, dimension=cfg.dimension, n_filters=cfg.n_filters, ratios=list(cfg.ratios), causal=cfg.causal, lstm=cfg.lstm
    )
    encoder = m.SEANetEncoder(norm="weight_norm", **common)
    decoder = m.SEANetDecoder(norm="weight_norm", **common)
    quantizer = enc.quantization.ResidualVectorQuantizer(dimension=cfg.dimension, n_q=cfg.n_q, bins=cfg.bins)
    return enc.EncodecModel(encoder, decoder, quantizer, list(cfg.bandwidths), cfg.sample_rate, cfg.channels, name=cfg.name)


@dataclass
class Codec:
    """Arrays in, arrays out. `encode` (B, T) or (T,) float audio at `cfg.sample_rate` ->
    (B, K, F) int64 codes; `decode` codes -> (B, T) float32. Frame f starts (SEANet) or is
    centred (spectral) at sample f * hop, so decoded sample i of frames [first, ...) is sample
    first * hop + i of the piece either way."""

    cfg: CodecConfig
    model: torch.nn.Module
    meta: dict = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def context_frames(self) -> int:
        return self.cfg.context_frames

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the weights file (None: an in-memory model)."""
        return self.meta.get("weights_sha256")

    @property
    def label(self) -> str:
        return f"{self.cfg.name} ({self.sha256[:12]})" if self.sha256 else self.cfg.name

    def _to_tensor(self, pcm) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(pcm, dtype=np.float32)) if not isinstance(pcm, torch.Tensor) else pcm.float()
        if x.dim() == 1:
            x = x[None]
        return x[:, None, :]

    @torch.inference_mode()
    def encode(self, pcm, kbps: float | None = None, n_q: int | None = None) -> torch.Tensor:
        n_q = n_q or (self.cfg.codebooks_for(kbps) if kbps else self.cfg.lm_codebooks)
        x = self._to_tensor(pcm)
        if self.cfg.kind == "spectral":
            return self.model.encode(x[:, 0], n_q).transpose(0, 1).contiguous()
        emb = self.model.encoder(x)
        codes = self.model.quantizer.vq.encode(emb, n_q=n_q)  # (K, B, F)
        return codes.transpose(0, 1).contiguous()

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, length: int | None = None, first_frame: int = 0) -> np.ndarray:
        """`first_frame`: the absolute index of the first frame (the spectral codec's phase
        start depends on it, so chunks decoded apart agree where they overlap)."""
        codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes[None]
        if self.cfg.kind == "spectral":
            from moodlane.engine.audio.spectral import griffin_lim

            y = griffin_lim(self.model.decode_logmag(codes), self.cfg, first_frame)
        else:
            emb = self.model.quantizer.vq.decode(codes.transpose(0, 1))
            y = self.model.decoder(emb)[:, 0]
        return fit_length(y.numpy(), length)

    def roundtrip(self, pcm: np.ndarray, kbps: float | None = None) -> np.ndarray:
        return self.decode(self.encode(pcm, kbps=kbps), length=np.asarray(pcm).shape[-1])


def fit_length(y: np.ndarray, length: int | None) -> np.ndarray:
    if length is None:
        return y
    return y[:, :length] if y.shape[1] >= length else np.pad(y, ((0, 0), (0, length - y.shape[1])))


def check_codec(expected_sha: str | None, expected_name: str | None, codec, what: str, missing_ok: bool = False) -> None:
    """`what` (tokens, an LM) was made with the codec of SHA-256 `expected_sha`; decoding it
    with `codec` is an error that names both. None: made before codecs were recorded (an
    error, unless `missing_ok`: the caller has checked names and shapes instead)."""
    if not expected_sha:
        if missing_ok:
            return
        raise CodecError(
            f"{what} does not record which codec made its tokens (written before codec provenance): "
            f"encode again with `moodlane data encode`, or name the codec it was made with"
        )
    if codec.sha256 != expected_sha:
        raise CodecError(
            f"{what} was made with codec {expected_name or '?'} ({expected_sha[:12]}), "
            f"but the codec given is {codec.label}: tokens of one codec are not another's"
        )


def _load_state(model: torch.nn.Module, state: dict, where: Path, cfg: CodecConfig) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CodecError(f"{where}: not a codec of this architecture ({cfg.name}): {first}") from None
    missing = [k for k in missing if not k.endswith(("inited", "cluster_size", "embed_avg"))]
    if missing or unexpected:
        bad = f"{len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {(missing + unexpected)[0]}"
        raise CodecError(f"{where}: not a codec of this architecture ({bad})")


def load_codec(path: str | os.PathLike | None = None) -> Codec:
    """`path`: a MoodLane codec (`.safetensors` with a `.json` beside it, or their stem), an
    official EnCodec `.th` file, or None: the shipped default codec (never another one
    silently; the official EnCodec weights only by path)."""
    p = Path(path) if path else DEFAULT_CODEC
    if p.suffix == ".th":
        if not p.is_file():
            raise CodecError(f"codec checkpoint {p} does not exist")
        cfg = OFFICIAL_24K
        model = build_model(cfg)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CodecError(f"{p}: not a readable EnCodec checkpoint ({type(e).__name__})") from None
        _load_state(model, state, p, cfg)
        return Codec(cfg, model.eval(), {"source": str(p), "path": str(p), "weights_sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    st, js = stem_files(p, "codec", CodecError)
    try:
        meta = json.loads(js.read_text())
        cfg = config_from_json(meta["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise CodecError(f"{js}: not a codec config ({type(e).__name__}: {e})") from None
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        raw = st.read_bytes()
        state = {k: v.float() for k, v in load(raw).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CodecError(f"{st}: not a readable safetensors file ({e})") from None
    sha = hashlib.sha256(raw).hexdigest()
    if meta.get("weights_sha256") and meta["weights_sha256"] != sha:
        raise CodecError(f"{st} does not match {js} (checksum differs: written by another run?)")
    model = build_model(cfg)
    _load_state(model, state, st, cfg)
    if meta.get("logmag_ceiling"):
        set_ceiling(model, meta["logmag_ceiling"], js)
    return Codec(cfg, model.eval(), {**meta, "weights_sha256": sha, "path": str(st.with_suffix(""))})


def ceiling_record(values, **how) -> dict:
    """The JSON record of a spectral codec's decoder bound (`spectral.logmag_ceiling`):
    its values, their SHA-256 (an ONNX export records it, so an export without the bound is
    never paired with a codec that has one) and how they were measured."""
    vals = [round(float(v), 4) for v in values]
    return {"sha256": hashlib.sha256(json.dumps(vals).encode()).hexdigest(), **how, "values": vals}


def ceiling_sha(meta: dict) -> str | None:
    """The SHA-256 of a codec's decoder bound (None: unbounded)."""
    return (meta.get("logmag_ceiling") or {}).get("sha256")


def set_ceiling(model: torch.nn.Module, record: dict, where) -> None:
    vals = record.get("values") or []
    bins = model.ceiling.numel() if hasattr(model, "ceiling") else 0
    if len(vals) != bins:
        raise CodecError(f"{where}: logmag_ceiling has {len(vals)} values; this codec decodes {bins} bins (a bound is for spectral codecs)")
    model.ceiling.copy_(torch.tensor(vals, dtype=torch.float32))


def export_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights to ship, in fp16 (half the bytes; loaded back as fp32). Weight norm is
    kept as (g, v) pairs so the file loads into the same classes."""
    return {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
