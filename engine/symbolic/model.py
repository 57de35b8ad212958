"""The attribute-conditioned decoder (EmoGen, arXiv 2307.01229, section 3.3), nanoGPT-style.

EmoGen adds one embedding per attribute to every token embedding, so the decoder learns
music given its attributes without any emotion labels. Here each token carries the
attributes of the bar it belongs to (`engine.symbolic.tokens.bar_index`), so attribute
values may change at every bar line and an emotion can move within a piece. Index
`n_bins` of each attribute table means "unspecified" (used for attribute dropout).

Streaming: `forward(..., cache=...)` appends to an explicit `KVCache`, so generation costs
one token's work per step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F

from moodlane.engine.symbolic.tokens import LEAD, VOCAB_SIZE


@dataclass(frozen=True)
class SymbolicConfig:
    vocab_size: int = VOCAB_SIZE
    block_size: int = 512  # tokens of context; about 8-12 bars of pop piano
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    attributes: tuple[str, ...] = ()
    n_bins: int = 8  # quantile bins per attribute (edges live with the weights)
    bin_edges: tuple[tuple[float, ...], ...] = field(default=())  # (n_attr, n_bins - 1)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.bin_edges and len(self.bin_edges) != len(self.attributes):
            raise ValueError("bin_edges needs one row per attribute")

    @property
    def n_attr(self) -> int:
        return len(self.attributes)

    @property
    def parts(self) -> bool:
        """Whether the vocabulary has LEAD: the model says which notes are the lead's."""
        return self.vocab_size > LEAD

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SymbolicConfig:
        d = dict(d)
        d["attributes"] = tuple(d.get("attributes", ()))
        d["bin_edges"] = tuple(tuple(r) for r in d.get("bin_edges", ()))
        return cls(**d)


TINY = SymbolicConfig(block_size=64, n_layer=1, n_head=2, n_embd=32, dropout=0.0)


@dataclass
class KVCache:
    """Keys/values per layer in buffers allocated once, batch-first: each
    (B, n_head, block_size, head_dim), of which the first `length` positions are filled.
    Appending writes in place, so a decoding step copies nothing that is already cached."""

    k: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)
    length: int = 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values for `layer` after the filled part; return all of them.
        `length` moves on once every layer has written (`advance`)."""
        if len(self.k) == layer:
            B, nh, _, hd = k.shape
            self.k.append(k.new_zeros(B, nh, capacity, hd))
            self.v.append(v.new_zeros(B, nh, capacity, hd))
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def clone(self) -> KVCache:
        return KVCache([t.clone() for t in self.k], [t.clone() for t in self.v], self.length)


class SelfAttention(nn.Module):
    def __init__(self, cfg: SymbolicConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.block_size = cfg.block_size

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        shape = (B, T, self.n_head, C // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hd)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.extend(layer, k, v, self.block_size)
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # several new tokens after a cached prefix
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.c_proj(y), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, cfg: SymbolicConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), layer, cache)
        return x + self.mlp(self.ln_2(x))


class SymbolicLM(nn.Module):
    def __init__(self, cfg: SymbolicConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        # one table per attribute, n_bins values + "unspecified"; summed into every token
        self.attr = nn.ModuleList(nn.Embedding(cfg.n_bins + 1, cfg.n_embd) for _ in range(cfg.n_attr))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as GPT-2
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def attribute_embedding(self, attrs: torch.Tensor) -> torch.Tensor:
        """(..., n_attr) bin ids -> (..., C): the sum of one embedding per attribute. A bar's
        value is the same for all its tokens, so generation computes it once per bar."""
        x = torch.zeros(*attrs.shape[:-1], self.cfg.n_embd, device=attrs.device)
        for i, table in enumerate(self.attr):
            x = x + table(attrs[..., i])
        return x

    def forward(
        self,
        idx: torch.Tensor,  # (B, T) token ids
        attrs: torch.Tensor | None = None,  # (B, T, n_attr) bin ids, n_bins = unspecified
        targets: torch.Tensor | None = None,  # (B, T), PAD ignored
        cache: KVCache | None = None,
        attr_emb: torch.Tensor | None = None,  # instead of attrs: their summed embedding, (C,) or (B, T, C)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.cfg.block_size:
            raise ValueError(f"sequence of {past + T} exceeds block_size {self.cfg.block_size}")
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        x = self.drop(x + (self.attribute_embedding(attrs) if attr_emb is None else attr_emb))
        for layer, block in enumerate(self.blocks):
            x = block(x, layer, cache)
        if cache is not None:
            cache.advance(T)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None  # (B, 1, V)
        logits = self.lm_head(x)  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=0)
        return logits, loss


PRECISIONS = ("auto", "int8", "fp32")


@torch.no_grad()
def decode_step_ms(model: SymbolicLM, rows: int = 2, steps: int = 24, prompt: int = 32) -> float:
    """Median time of one cached decoding step at batch `rows` (2: with guidance)."""
    import time

    idx = torch.full((rows, prompt), 5, dtype=torch.long)
    attrs = torch.zeros(rows, prompt, model.cfg.n_attr, dtype=torch.long)
    emb = model.attribute_embedding(attrs[:, :1])  # (rows, 1, C)
    cache = KVCache()
    model(idx, attrs, cache=cache)
    one = idx[:, :1]
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model(one, cache=cache, attr_emb=emb)
        times.append(time.perf_counter() - t)
    times.sort()
    return 1000.0 * times[len(times) // 2]


def for_inference(model: SymbolicLM, precision: str = "auto") -> SymbolicLM:
    """The model in eval mode for CPU decoding: as it is ("fp32"), or a copy whose linear
    layers hold int8 weights ("int8", dynamic quantization, activations quantized on the
    fly; validation loss 1.750 vs 1.749). Which is faster depends on the CPU: on an AMD EPYC
    int8 decoded 2x faster, on an Intel Xeon with AVX-512 it was no faster and an int8
    `Linear(256, 256)` 2.3x slower at batch 1. "auto" times a few steps of each here and
    keeps the faster (about 0.3 s); `model.precision` says which was chosen."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model = model.eval()
    model.precision = "fp32"
    if precision == "fp32":
        return model
    import warnings

    with warnings.catch_warnings():  # torch.ao's eager quantization announces its move to torchao
        warnings.simplefilter("ignore")
        try:
            quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        except (RuntimeError, AttributeError):  # a build without a quantized engine
            return model
    quantized.precision = "int8"
    if precision == "int8":
        return quantized
    decode_step_ms(model, steps=4)  # warm both up before timing
    decode_step_ms(quantized, steps=4)
    return quantized if decode_step_ms(quantized) < 0.95 * decode_step_ms(model) else model
