"""MusicGen folders (transformers format: a snapshot of facebook/musicgen-small, or anything
`save_pretrained` wrote): the decoder's weights into `LaraLM`, the T5 text encoder, and the
EnCodec 32 kHz codec behind MoodLane's codec interface.

The decoder is read straight from the safetensors (no transformers needed); T5 and EnCodec
come through transformers, an optional dependency (`pip install .[musicgen]`). A user with
the real weights can then fine-tune MusicGen with emotion control as the paper did
(`moodlane train audio --init DIR`) or render with it (`--lm-checkpoint DIR`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moodlane.engine.audio.lm import LaraLM, LMConfig
from moodlane.engine.audio.text import T5Text, TextEncoderError

PREFIXES = (("decoder.model.decoder.", ""), ("decoder.", ""), ("enc_to_dec_proj.", "text_proj."))


class MusicGenFolderError(ValueError):
    """A MusicGen folder with missing or unreadable files."""


def _config(folder: Path) -> dict:
    f = folder / "config.json"
    if not f.is_file():
        raise MusicGenFolderError(f"{folder} is not a MusicGen folder: config.json is missing")
    try:
        cfg = json.loads(f.read_text())
        cfg["decoder"], cfg["text_encoder"], cfg["audio_encoder"]  # noqa: B018
    except (ValueError, KeyError) as e:
        raise MusicGenFolderError(f"{f}: not a MusicGen config ({type(e).__name__}: {e})") from None
    return cfg


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = sorted({folder / v for v in json.loads(index.read_text())["weight_map"].values()})
    else:
        raise MusicGenFolderError(f"{folder}: model.safetensors (or its index) is missing")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise MusicGenFolderError(f"{folder}: weight shard {f.name} is missing")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise MusicGenFolderError(f"{f}: not a readable safetensors file ({e})") from None
    return state


def lm_config(cfg: dict, **overrides) -> LMConfig:
    """MoodLane's LM config for a MusicGen decoder (AV tokens and proxy as `overrides` say)."""
    d, t = cfg["decoder"], cfg["text_encoder"]
    if d.get("activation_function", "gelu") != "gelu" or d.get("scale_embedding", False):
        raise MusicGenFolderError("only GELU decoders without embedding scaling are supported (MusicGen's)")
    if d.get("audio_channels", 1) != 1:
        raise MusicGenFolderError("stereo MusicGen is not supported")
    a = cfg["audio_encoder"]
    rate = a.get("frame_rate") or a.get("sampling_rate", 32000) / float(np.prod(a.get("upsampling_ratios", [8, 5, 4, 4])))
    base = dict(
        n_q=d["num_codebooks"],
        card=d["vocab_size"],
        dim=d["hidden_size"],
        n_layer=d["num_hidden_layers"],
        n_head=d["num_attention_heads"],
        ffn=d["ffn_dim"],
        text_dim=t.get("d_model", t.get("hidden_size")),
        text_encoder="t5",
        frame_rate=float(rate),
        context=min(d.get("max_position_embeddings", 2048), 1500),
    )
    base.update(overrides)
    return LMConfig(**base)


def load_decoder(folder: str | os.PathLike, **overrides) -> tuple[LaraLM, dict]:
    """A `LaraLM` with MusicGen's decoder, heads and text projection; the AV encoder and
    the proxy (not in MusicGen) keep their fresh initialisation. Returns the model and the
    folder's config."""
    folder = Path(folder)
    cfg = _config(folder)
    lm_cfg = lm_config(cfg, **overrides)
    model = LaraLM(lm_cfg)
    theirs = _state(folder)
    mine: dict[str, torch.Tensor] = {}
    for k, v in theirs.items():
        for src, dst in PREFIXES:
            if k.startswith(src):
                mine[dst + k[len(src) :]] = v.float()
                break
    own = model.state_dict()
    wanted = [k for k in own if not k.startswith(("av.", "proxy."))]
    missing = [k for k in wanted if k not in mine]
    if missing:
        raise MusicGenFolderError(f"{folder}: the decoder weights lack {len(missing)} tensors, e.g. {missing[0]}")
    bad = [k for k in wanted if mine[k].shape != own[k].shape]
    if bad:
        raise MusicGenFolderError(f"{folder}: {bad[0]} has shape {tuple(mine[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: mine[k] for k in wanted}, strict=False)
    return model.eval(), cfg


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MusicGenFolderError("MusicGen folders need transformers: pip install 'moodlane[musicgen]'") from None
    return transformers


def load_t5(folder: str | os.PathLike) -> T5Text:
    folder = Path(folder)
    tr = _transformers()
    cfg = _config(folder)
    tcfg = tr.T5Config(**{k: v for k, v in cfg["text_encoder"].items() if k not in ("architectures", "model_type")})
    model = tr.T5EncoderModel(tcfg)
    state = {k[len("text_encoder.") :]: v for k, v in _state(folder).items() if k.startswith("text_encoder.")}
    missing, _ = model.load_state_dict(state, strict=False)
    if [k for k in missing if "embed_tokens" not in k]:
        raise MusicGenFolderError(f"{folder}: the T5 text encoder weights are incomplete (e.g. {missing[0]})")
    try:
        tok = tr.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise TextEncoderError(
            f"{folder}: the T5 tokenizer files are missing (spiece.model or tokenizer.json): {type(e).__name__}"
        ) from None
    return T5Text(model, tok)


@dataclass
class HFCodec:
    """Transformers' EnCodec (MusicGen's 32 kHz codec) behind the interface of
    `engine.audio.codec.Codec` that generation uses: decode, encode, rates."""

    model: torch.nn.Module
    sample_rate: int
    frame_rate: float
    n_q: int
    bins: int
    meta: dict = field(default_factory=dict)

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def sha256(self) -> str | None:
        return None  # a MusicGen folder's EnCodec: the folder is the provenance

    @torch.inference_mode()
    def encode(self, pcm, kbps: float | None = None, n_q: int | None = None) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(pcm, dtype=np.float32))
        x = x[None, None] if x.dim() == 1 else x[:, None]
        codes = self.model.encode(x, bandwidth=None).audio_codes  # (1, B, K, F)
        return codes[0][:, : n_q or self.n_q]

    context_frames = 2  # frames decoded past a chunk (the decoder's right context)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, length: int | None = None, first_frame: int = 0) -> np.ndarray:
        codes = torch.as_tensor(codes)
        codes = codes[None] if codes.dim() == 2 else codes
        y = self.model.decode(codes[None], [None])[0][:, 0]
        return (y[:, :length] if length is not None else y).numpy()


def load_hf_codec(folder: str | os.PathLike) -> HFCodec:
    folder = Path(folder)
    tr = _transformers()
    cfg = _config(folder)
    a = {k: v for k, v in cfg["audio_encoder"].items() if k not in ("architectures", "model_type")}
    model = tr.EncodecModel(tr.EncodecConfig(**a))
    state = {k[len("audio_encoder.") :]: v for k, v in _state(folder).items() if k.startswith("audio_encoder.")}
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise MusicGenFolderError(f"{folder}: the EnCodec weights are incomplete (e.g. {missing[0]})")
    rate = model.config.frame_rate
    return HFCodec(
        model.eval(),
        model.config.sampling_rate,
        float(rate),
        cfg["decoder"]["num_codebooks"],
        model.config.codebook_size,
        {"source": str(folder)},
    )
