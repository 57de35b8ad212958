"""ONNX export of LARA-Gen: the LM decoder step with its KV cache as inputs and outputs, the
conditioning memory (text projection + AV encoder -> cross-attention keys/values), the codec
decoder and the text encoder, plus a manifest. `engine.audio.onnx_runtime` runs them.

Graphs (names follow the PyTorch modules; `L` layers, `H` heads, `hd` head width):

* `decoder.onnx`, one call per step (or a block of steps: the cache refill):
  `input_ids` (B, K, S) int64 in the delay pattern;
  `past.layers.{i}.self_attn.key|value` (B, H, P, hd), P = 0 on the first step;
  `memory.*`, the outputs of `memory.onnx`, unchanged between calls of one conditioning
  -> `logits` (B, K, card) of the last step and `present.layers.{i}.self_attn.key|value`
  (B, H, P + S, hd), the next call's past. Positions come from P inside the graph.
* `memory.onnx`: `text_states` (B, M, text_dim), `text_mask` (B, M) bool, `va` (B, 1, 2),
  `av_on` (B,) bool -> `memory.layers.{i}.encoder_attn.text_key|text_value` (B, H, M, hd),
  `memory.text_bias` (B, 1, 1, M), and with AV tokens `memory.layers.{i}.encoder_attn.
  av_key|av_value` (B, H, 1, n, hd), `memory.av_bias` (B, 1, 1, 1), `memory.av_add` (B, 1, C).
  Valence/arousal change between chunks by running this again: no re-export.
* `codec_decoder.onnx`: `codes` (B, K, T) int64 -> `audio` (B, T * hop).
* `text_encoder.onnx` (MiniLM): `input_ids`, `attention_mask` (B, M) -> `text_states`,
  with `tokenizer.json` beside it.
* `manifest.json`: names, shapes, rates, opset, the source checkpoints' SHA-256, each file's
  SHA-256 and the parity measured at export.

The exporter is torch.onnx's TorchScript path (`dynamo=False`, needs `onnx`): the decoder is
traced once with a concatenating cache, so the same `LaraLM.forward` code is in the graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from moodlane.engine.audio.lm import LaraLM, Memory
from moodlane.engine.audio.onnx_runtime import MANIFEST_VERSION, past_names

log = logging.getLogger(__name__)

OPSET = 17
FILES = {
    "decoder": "decoder.onnx",
    "decoder_int8": "decoder.int8.onnx",
    "memory": "memory.onnx",
    "codec_decoder": "codec_decoder.onnx",
    "text_encoder": "text_encoder.onnx",
}


PARITY_TOLERANCE = 1e-3  # max abs difference from PyTorch an fp32 graph may show at export


class ExportError(ValueError):
    """A model this exporter cannot write (a MusicGen folder, no onnx package)."""


def memory_names(model: LaraLM) -> list[str]:
    n = model.cfg.n_layer
    names = [f"memory.layers.{i}.encoder_attn.text_{kv}" for i in range(n) for kv in ("key", "value")] + ["memory.text_bias"]
    if model.av is not None:
        names += [f"memory.layers.{i}.encoder_attn.av_{kv}" for i in range(n) for kv in ("key", "value")] + ["memory.av_bias"]
        if model.av.add is not None:
            names.append("memory.av_add")
    return names


def flatten_memory(mem: Memory) -> list[torch.Tensor]:
    """A `Memory` in the order of `memory_names`."""
    out = [t for kv in zip(mem.k_text, mem.v_text) for t in kv] + [mem.text_bias]
    if mem.k_av is not None:
        out += [t for kv in zip(mem.k_av, mem.v_av) for t in kv] + [mem.av_bias]
        if mem.av_add is not None:
            out.append(mem.av_add)
    return out


def unflatten_memory(model: LaraLM, flat: list[torch.Tensor]) -> Memory:
    n = model.cfg.n_layer
    text = flat[: 2 * n]
    mem = Memory(list(text[0::2]), list(text[1::2]), flat[2 * n])
    if model.av is not None:
        av = flat[2 * n + 1 : 4 * n + 1]
        mem.k_av, mem.v_av, mem.av_bias = list(av[0::2]), list(av[1::2]), flat[4 * n + 1]
        if model.av.add is not None:
            mem.av_add = flat[4 * n + 2]
    return mem


class ConcatCache:
    """A KV cache that takes the past as tensors and concatenates: traced, the past is a
    graph input and the concatenation its `present` output."""

    def __init__(self, past: list[torch.Tensor]) -> None:
        self.past = past
        self.present: list[torch.Tensor] = list(past)
        self.length = past[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.present[2 * layer] = torch.cat([self.past[2 * layer], k], dim=2)
        self.present[2 * layer + 1] = torch.cat([self.past[2 * layer + 1], v], dim=2)
        return self.present[2 * layer], self.present[2 * layer + 1]

    def advance(self, steps: int) -> None:
        pass


class DecoderStep(nn.Module):
    def __init__(self, model: LaraLM) -> None:
        super().__init__()
        self.model = model
        self.n_past = 2 * model.cfg.n_layer

    def forward(self, input_ids: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = ConcatCache(list(rest[: self.n_past]))
        logits, _ = self.model(input_ids, unflatten_memory(self.model, list(rest[self.n_past :])), cache)
        return (logits[:, :, -1], *cache.present)


class ConditionMemory(nn.Module):
    def __init__(self, model: LaraLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, text_states, text_mask, va, av_on) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_memory(self.model.memory(text_states, text_mask, va, av_on)))


class CodecDecoder(nn.Module):
    """codes -> audio (SEANet), or codes -> log magnitude (spectral: the phase is
    reconstructed by `spectral.griffin_lim` at run time, the same function PyTorch calls)."""

    def __init__(self, codec_model: nn.Module, spectral: bool) -> None:
        super().__init__()
        self.codec = codec_model
        self.spectral = spectral

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if self.spectral:
            return self.codec.decode_logmag(codes)
        emb = self.codec.quantizer.vq.decode(codes.transpose(0, 1))
        return self.codec.decoder(emb)[:, 0]


@contextlib.contextmanager
def _length_free_padding():
    """encodec's padding arithmetic mixes `x.shape[-1]` with `math.ceil` of it, which the
    tracer turns into `traced_length - length` (every call would then return the traced
    number of samples), and its unpad slices to `x.shape[-1] - n`. The decoder's
    convolutions have stride 1, so the extra padding is 0 at every length, and the slices
    can count from the end: the same arithmetic, length-free."""
    from moodlane.engine.audio.codec import _import_encodec

    conv = _import_encodec().modules.conv
    saved = conv.pad1d, conv.unpad1d, conv.get_extra_padding_for_conv1d

    def extra_padding(x, kernel_size, stride, padding_total=0):
        if stride != 1:
            raise ExportError(f"the codec decoder has a stride-{stride} convolution: its padding would not export length-free")
        return 0

    def pad1d(x, paddings, mode="zero", value=0.0):
        if mode == "reflect" and x.shape[-1] <= max(paddings):
            return saved[0](x, paddings, mode, value)  # short inputs only: not in the decoder
        return torch.nn.functional.pad(x, paddings, mode, value)

    def unpad1d(x, paddings):
        left, right = paddings
        return x[..., left:] if right == 0 else x[..., left:-right]

    conv.pad1d, conv.unpad1d, conv.get_extra_padding_for_conv1d = pad1d, unpad1d, extra_padding
    try:
        yield
    finally:
        conv.pad1d, conv.unpad1d, conv.get_extra_padding_for_conv1d = saved


class TextEncoder(nn.Module):
    def __init__(self, minilm: nn.Module) -> None:
        super().__init__()
        self.minilm = minilm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.minilm.encode(input_ids, attention_mask)


def _to_onnx(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], dynamic: dict, opset: int) -> bytes:
    try:
        import onnx  # noqa: F401  (the TorchScript exporter needs it)
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install onnx") from None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape arithmetic, the exporter's deprecation notice
        torch.onnx.export(
            module.eval(), args, buf, input_names=inputs, output_names=outputs, dynamic_axes=dynamic, opset_version=opset, dynamo=False
        )
    return buf.getvalue()


def _quantize(fp32: bytes) -> bytes | None:
    """The decoder with int8 weights, per output channel (onnxruntime's dynamic quantisation:
    activations are quantised at run time). For the CPU: measured here (bench onnx), its
    model call is about 1.6x as fast as fp32's. None without onnxruntime."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(fp32)
        was = logging.root.manager.disable
        logging.disable(logging.WARNING)  # its advice to pre-process (shape inference) is for vision models
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.disable(was)
        return dst.read_bytes()


def _shapes(names: list[str], tensors: list[torch.Tensor], dynamic: dict) -> dict:
    """Name -> {shape with symbolic axes as names, dtype}, for the manifest."""
    out = {}
    for n, t in zip(names, tensors):
        dims = dynamic.get(n, {})
        out[n] = {"shape": [dims.get(i, int(s)) for i, s in enumerate(t.shape)], "dtype": str(t.dtype).removeprefix("torch.")}
    return out


def _example_memory(model: LaraLM, batch: int, m: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    text = torch.randn(batch, m, model.cfg.text_dim, generator=g)
    mask = torch.ones(batch, m, dtype=torch.bool)
    mask[-1, m // 2 :] = False
    va = torch.rand(batch, 1, 2, generator=g) * 2 - 1
    av_on = torch.tensor([True] + [False] * (batch - 1))
    return text, mask, va, av_on


@torch.no_grad()
def export_lara(gen, out: str | Path, opset: int = OPSET, progress=None) -> dict:
    """Write the ONNX files of a torch-backed `LaraGenerator` (a MoodLane LM stem) to `out`,
    all or none, and return the manifest. Parity against PyTorch is measured and recorded."""
    from moodlane.engine.atomic import commit
    from moodlane.engine.audio.codec import ceiling_sha

    model: LaraLM | None = gen.model
    if model is None:
        raise ExportError("export needs the PyTorch model (this generator runs on ONNX already)")
    if not hasattr(gen.codec, "model") or not hasattr(gen.codec, "cfg"):
        raise ExportError("ONNX export covers MoodLane LM stems and codecs; a MusicGen folder runs on PyTorch")
    want = (gen.meta.get("codec") or {}).get("sha256")
    if want and want != gen.codec.sha256:  # load_lara checks this too; an export must never pair them either
        raise ExportError(f"the LM was trained with codec {want[:12]}, but the codec given is {gen.codec.label}: export them as trained")
    text_enc = gen.text if hasattr(gen.text, "encode") else None  # MiniLM; others stay in PyTorch at run time
    step = progress or (lambda what: None)
    cfg = model.cfg
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files: dict[str, bytes] = {}
    graphs: dict[str, dict] = {}

    # memory: text states + VA -> cross-attention keys/values
    step("memory")
    mem_in = ["text_states", "text_mask", "va", "av_on"]
    example = _example_memory(model, 2, 5)
    mem_out_names = memory_names(model)
    mem_dyn = {"text_states": {0: "batch", 1: "text_len"}, "text_mask": {0: "batch", 1: "text_len"}, "va": {0: "batch"}}
    mem_dyn["av_on"] = {0: "batch"}
    for n in mem_out_names:
        mem_dyn[n] = {0: "batch", 2: "text_len"} if n.endswith(("text_key", "text_value")) else {0: "batch"}
    mem_dyn["memory.text_bias"] = {0: "batch", 3: "text_len"}
    files[FILES["memory"]] = _to_onnx(ConditionMemory(model), example, mem_in, mem_out_names, mem_dyn, opset)
    flat_mem = flatten_memory(model.memory(*example))
    graphs["memory"] = {"inputs": _shapes(mem_in, list(example), mem_dyn), "outputs": _shapes(mem_out_names, flat_mem, mem_dyn)}
    checks = {"memory": ("memory", dict(zip(mem_in, example)), flat_mem)}  # parity: graph, feeds, PyTorch's outputs

    # decoder step: traced with 2 new steps after 3 cached ones (the general case: S = 1 and P = 0 run the same graph)
    step("decoder")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.card + 1, (2, cfg.n_q, 2), generator=g)
    past = [torch.randn(2, cfg.n_head, 3, cfg.head_dim, generator=g) for _ in range(2 * cfg.n_layer)]
    pnames, qnames = past_names(cfg.n_layer), past_names(cfg.n_layer, "present")
    dec_in = ["input_ids", *pnames, *mem_out_names]
    dec_out = ["logits", *qnames]
    dec_dyn = {"input_ids": {0: "batch", 2: "steps"}, "logits": {0: "batch"}}
    dec_dyn.update({n: {0: "batch", 2: "past"} for n in pnames})
    dec_dyn.update({n: {0: "batch", 2: "past + steps"} for n in qnames})
    dec_dyn.update({n: d for n, d in mem_dyn.items() if n.startswith("memory.")})
    files[FILES["decoder"]] = _to_onnx(DecoderStep(model), (ids, *past, *flat_mem), dec_in, dec_out, dec_dyn, opset)
    int8 = _quantize(files[FILES["decoder"]])
    if int8 is not None:
        files[FILES["decoder_int8"]] = int8
    dec_example = DecoderStep(model)(ids, *past, *flat_mem)
    dec_feeds = dict(zip(dec_in, [ids, *past, *flat_mem]))
    checks["decoder"] = ("decoder", dec_feeds, list(dec_example))
    if int8 is not None:
        checks["decoder_int8_logits"] = ("decoder_int8", dec_feeds, [dec_example[0]])
    graphs["decoder"] = {
        "inputs": _shapes(dec_in, [ids, *past, *flat_mem], dec_dyn),
        "outputs": _shapes(dec_out, list(dec_example), dec_dyn),
    }

    # codec decoder
    step("codec decoder")
    codes = torch.randint(0, cfg.card, (1, cfg.n_q, 30), generator=g)
    spectral = gen.codec.cfg.kind == "spectral"
    out_name = "logmag" if spectral else "audio"
    codec_dyn = {"codes": {0: "batch", 2: "frames"}, out_name: {0: "batch", (2 if spectral else 1): "frames" if spectral else "samples"}}
    codec_mod = CodecDecoder(gen.codec.model, spectral)
    with _length_free_padding():
        files[FILES["codec_decoder"]] = _to_onnx(codec_mod, (codes,), ["codes"], [out_name], codec_dyn, opset)
    audio = codec_mod(codes)
    checks["codec_decoder"] = ("codec_decoder", {"codes": codes}, [audio])
    graphs["codec_decoder"] = {"inputs": _shapes(["codes"], [codes], codec_dyn), "outputs": _shapes([out_name], [audio], codec_dyn)}

    text = None
    if text_enc is not None:
        step("text encoder")
        text = text_enc.tokenize(["solo acoustic piano", "strings"])
        text_dyn = {n: {0: "batch", 1: "text_len"} for n in ("input_ids", "attention_mask", "text_states")}
        t_in = ["input_ids", "attention_mask"]
        files[FILES["text_encoder"]] = _to_onnx(TextEncoder(text_enc), text, t_in, ["text_states"], text_dyn, opset)
        states = text_enc.encode(*text)
        graphs["text_encoder"] = {"inputs": _shapes(t_in, list(text), text_dyn), "outputs": _shapes(["text_states"], [states], text_dyn)}
        checks["text_encoder"] = ("text_encoder", dict(zip(t_in, text)), [states])
        files["tokenizer.json"] = (Path(text_enc.folder) / "tokenizer.json").read_bytes()

    manifest = {
        "format_version": MANIFEST_VERSION,
        "kind": "lara-onnx",
        "opset": opset,
        "exporter": f"torch {torch.__version__} (TorchScript)",
        "lm_config": cfg.to_json(),
        "sample_rate": int(gen.codec.sample_rate),
        "frame_rate": float(gen.codec.frame_rate),
        "codec_config": json.loads(json.dumps(gen.codec.cfg.to_json())),  # as read back (lists, not tuples)
        "codebooks": cfg.n_q,
        "card": cfg.card,
        "special_token": cfg.card,
        "emotion": "text" if gen.emotion_as_text else "av",
        "source": {
            "lm_sha256": gen.meta.get("weights_sha256"),
            "codec_sha256": gen.codec.meta.get("weights_sha256"),
            "codec_bound_sha256": ceiling_sha(gen.codec.meta or {}),  # the decoder bound in codec_decoder.onnx
            "lm_version": gen.meta.get("format_version"),
            "lm_training": (gen.meta.get("training") or {}).get("command"),
        },
        "files": {k: {"file": f, "sha256": hashlib.sha256(files[f]).hexdigest()} for k, f in FILES.items() if f in files},
        "graphs": graphs,
    }
    step("parity")
    if text is not None:
        manifest["files"]["tokenizer"] = {"file": "tokenizer.json", "sha256": hashlib.sha256(files["tokenizer.json"]).hexdigest()}
    manifest["parity"] = parity = measure_parity(files, checks)
    over = {k: v for k, v in parity.items() if "int8" not in k and v > PARITY_TOLERANCE}
    if over:  # int8 differs by design: reported, not enforced
        raise ExportError(
            f"the export does not match PyTorch (max abs over {PARITY_TOLERANCE:g}: "
            + ", ".join(f"{k.removesuffix('_max_abs')} {v:.2e}" for k, v in over.items())
            + "); nothing was written"
        )
    manifest["export_seconds"] = round(time.perf_counter() - t0, 1)
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    commit({out / name: data for name, data in files.items()})
    return manifest


def measure_parity(files: dict[str, bytes], checks: dict[str, tuple[str, dict, list[torch.Tensor]]]) -> dict:
    """Max abs difference between onnxruntime (CPU) and PyTorch on the export's examples:
    per check, the graph's first outputs against PyTorch's (`checks`: name -> graph, feeds,
    PyTorch outputs)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("cannot check the export against PyTorch: onnxruntime is not installed (pip install onnxruntime)") from None
    out = {}
    for name, (graph, feeds, want) in checks.items():
        sess = ort.InferenceSession(files[FILES[graph]], providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.numpy() for k, v in feeds.items()})
        out[f"{name}_max_abs"] = float(max(np.abs(g - w.numpy()).max() for g, w in zip(got, want)))
    return out
