"""LARA-Gen's language model: a MusicGen decoder over codec tokens, conditioned by
cross-attention on text and on continuous valence/arousal, with the LARA proxy head.

The decoder is MusicGen's (transformers' `MusicgenForCausalLM`, AudioCraft's `LMModel`):
K codebooks in the delay pattern (codebook k runs k steps late), one embedding table and
one head per codebook, the embeddings summed, sinusoidal positions (cos | sin), pre-norm
blocks of self-attention, cross-attention and a GELU MLP, no biases. Its parameter names
map one-to-one onto MusicGen's (`engine.audio.musicgen`), so MusicGen's weights load.

Conditioning memory (LARA-Gen): the projected text-encoder states, concatenated with the
tokens of the AV encoder, which embeds (valence, arousal). MoodLane lets the emotion change
in time: the AV tokens are per position, so each step attends to the text and to the AV
tokens of its own time. A constant emotion is the paper's model exactly; a curve is the
same model with the AV part of the memory moving under the cursor. Dropped conditions (for
classifier-free guidance) are zeroed and masked, as in MusicGen.

The LARA loss: a small MLP (the proxy) maps the hidden states after block `lara_layer` to
the external music model's features of the real audio at the token rate; the loss is the
negative cosine (REPA's form), added to cross-entropy with weight lambda.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # target index skipped by the cross-entropy (delay-pattern padding)


@dataclass(frozen=True)
class LMConfig:
    n_q: int = 4  # codebooks (the codec's LM bandwidth)
    card: int = 1024  # codebook size; token `card` is MusicGen's special (BOS / pad) token
    dim: int = 256
    n_layer: int = 4
    n_head: int = 4
    ffn: int = 1024
    text_dim: int = 384  # width of the text encoder's states (MiniLM 384, T5-base 768)
    text_encoder: str = "minilm"  # "minilm" (the package's) or "t5" (from a MusicGen folder)
    av_tokens: int = 2  # AV encoder output tokens (0: a plain MusicGen, no emotion control)
    av_freqs: int = 2  # Fourier features per AV coordinate, an octave apart, the highest at av_max_freq
    av_max_freq: float = 1.0  # the highest, in half-turns per unit (pi * this, rad): 1.0 keeps the map smooth
    av_add: bool = True  # also add an AV embedding to every position's input (zero-initialised)
    lara_layer: int = 2  # the block whose output the proxy reads (1-based)
    feature_dim: int = 200  # the external model's feature width (musicnn's penultimate layer)
    proxy_hidden: int = 512
    dropout: float = 0.0
    context: int = 300  # self-attention window in steps (training crop): 4 s at 75 frames/s
    frame_rate: float = 75.0  # the codec's frames per second (informational, checked at load)
    text_proj_bias: bool = True  # MusicGen's enc_to_dec_proj has a bias

    def __post_init__(self) -> None:
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} is not a multiple of n_head {self.n_head}")
        if not 1 <= self.lara_layer <= self.n_layer:
            raise ValueError(f"lara_layer must be in [1, {self.n_layer}], got {self.lara_layer}")
        for name in ("n_q", "card", "n_layer", "ffn", "text_dim", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.text_encoder not in ("minilm", "t5"):
            raise ValueError(f"text_encoder must be 'minilm' or 't5', got {self.text_encoder!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> LMConfig:
        if "av_max_freq" not in d:  # written before the field: 8 octaves up to 64 pi (not smooth)
            d = {**d, "av_max_freq": 64.0}
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LM config keys {sorted(unknown)}")
        return cls(**d)


TINY_LM = LMConfig(
    n_q=2, card=64, dim=32, n_layer=2, n_head=2, ffn=64, text_dim=24, av_tokens=2, lara_layer=1, feature_dim=8, proxy_hidden=16, context=48
)


def sinusoids(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """MusicGen's positional table: [cos | sin] of position * 10000^(-i/(dim/2 - 1))."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    ang = positions.float()[:, None] * freq[None]
    emb = torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)
    return F.pad(emb, (0, dim % 2))


class KVCache:
    """Self-attention keys and values of every layer, preallocated to `capacity` steps;
    `length` steps are filled. `clone()` snapshots it (the live scheduler rolls back).
    A cache is anything with `length`, `update` and `advance`: the ONNX export traces the
    model with one that concatenates (`export.onnx`), so the graph takes the past as input."""

    def __init__(self, cfg: LMConfig, batch: int, capacity: int, dtype: torch.dtype = torch.float32) -> None:
        shape = (batch, cfg.n_head, capacity, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.length = 0
        self.capacity = capacity
        self.batch = batch

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new steps' keys/values after the cached ones; all of them, past and new."""
        p, t = self.length, k.shape[2]
        if p + t > self.capacity:
            raise RuntimeError(f"KV cache full ({self.capacity} steps)")
        self.k[layer][:, :, p : p + t] = k
        self.v[layer][:, :, p : p + t] = v
        return self.k[layer][:, :, : p + t], self.v[layer][:, :, : p + t]

    def advance(self, steps: int) -> None:
        self.length += steps

    def clone(self) -> KVCache:
        c = KVCache.__new__(KVCache)
        c.k = [t.clone() for t in self.k]
        c.v = [t.clone() for t in self.v]
        c.length, c.capacity, c.batch = self.length, self.capacity, self.batch
        return c


@dataclass
class Memory:
    """Cross-attention keys and values of one conditioning, per layer, computed once
    (`LaraLM.memory`) and reused by every step until the conditioning changes.
    Text: (B, H, M, hd) with an additive mask (B, 1, 1, M); AV: (B, H, T or 1, n, hd),
    one set per position (T) or one for all (1), with an additive mask (B, 1, 1, 1), and the
    input-side AV embedding (B, T or 1, C)."""

    k_text: list[torch.Tensor]
    v_text: list[torch.Tensor]
    text_bias: torch.Tensor
    k_av: list[torch.Tensor] | None = None
    v_av: list[torch.Tensor] | None = None
    av_bias: torch.Tensor | None = None
    av_add: torch.Tensor | None = None


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.out_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, C) -> (..., H, T, hd)."""
        *lead, t, _ = x.shape
        return x.view(*lead, t, self.cfg.n_head, self.cfg.head_dim).transpose(-2, -3)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, self.cfg.dim))

    def self_attend(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        t = x.shape[1]
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.merge(y)
        p = cache.length
        k, v = cache.update(layer, k, v)
        if t == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # a block of new steps after p cached ones: causal within, all of the past
            mask = torch.arange(k.shape[2])[None] <= torch.arange(p, p + t)[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.merge(y)

    def cross_attend(self, x: torch.Tensor, mem: Memory, layer: int, start: int) -> torch.Tensor:
        """Attend to the text states and to the AV tokens of each position's own time.
        `start`: the position of x[:, 0] within a per-position AV memory."""
        q = self.heads(self.q_proj(x))  # (B, H, T, hd)
        scale = self.cfg.head_dim**-0.5
        s_text = (q @ mem.k_text[layer].transpose(-1, -2)) * scale + mem.text_bias  # (B, H, T, M)
        if mem.k_av is None:
            w = torch.softmax(s_text, dim=-1)
            return self.merge(w @ mem.v_text[layer])
        k_av, v_av = mem.k_av[layer], mem.v_av[layer]  # (B, H, T or 1, n, hd)
        if k_av.shape[2] > 1:
            k_av, v_av = k_av[:, :, start : start + x.shape[1]], v_av[:, :, start : start + x.shape[1]]
        s_av = torch.einsum("bhtd,bhtnd->bhtn", q, k_av.expand(-1, -1, q.shape[2], -1, -1)) * scale + mem.av_bias
        w = torch.softmax(torch.cat([s_text, s_av], dim=-1), dim=-1)
        m = s_text.shape[-1]
        y = w[..., :m] @ mem.v_text[layer] + torch.einsum("bhtn,bhtnd->bhtd", w[..., m:], v_av.expand(-1, -1, q.shape[2], -1, -1))
        return self.merge(y)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(cfg.dim)
        self.self_attn = Attention(cfg)
        self.encoder_attn_layer_norm = nn.LayerNorm(cfg.dim)
        self.encoder_attn = Attention(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.dim)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.fc2 = nn.Linear(cfg.ffn, cfg.dim, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mem: Memory, cache: KVCache | None, layer: int, start: int) -> torch.Tensor:
        x = x + self.drop(self.self_attn.self_attend(self.self_attn_layer_norm(x), cache, layer))
        x = x + self.drop(self.encoder_attn.cross_attend(self.encoder_attn_layer_norm(x), mem, layer, start))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.final_layer_norm(x)))))


class AVEncoder(nn.Module):
    """(valence, arousal) in [-1, 1]^2 -> `n` conditioning tokens: the raw values and a few
    low Fourier features (`av_freqs` octaves up to pi * `av_max_freq`), then a two-layer
    MLP, so nearby emotions get nearby tokens. The first LM's encoder ran to 64 pi: its token
    for (0.8, 0.8) had cosine 0.37 with (0.6, 0.6) and 0.64 with (-0.6, 0.6). With
    `av_add`, also one embedding that is added to the input of every position (a linear map
    of the same features, zero at the start, so a loaded MusicGen is unchanged): measured
    here, a 4-block LM trained 1,250 steps with the cross-attention tokens alone did not use
    them at all (validation cross-entropy 4.7548 with the true emotion, 4.7556 with arousal
    flipped, 4.7525 with the tokens dropped)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.n = cfg.av_tokens
        octaves = torch.arange(cfg.av_freqs, dtype=torch.float32) - (cfg.av_freqs - 1)
        self.register_buffer("freqs", math.pi * cfg.av_max_freq * 2.0**octaves, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 + 4 * cfg.av_freqs, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.av_tokens * cfg.dim))
        self.add = nn.Linear(2 + 4 * cfg.av_freqs, cfg.dim) if cfg.av_add else None

    def forward(self, va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """va (..., 2) -> tokens (..., n, C) and the input embedding (..., C) or None."""
        ang = va[..., None] * self.freqs  # (..., 2, f)
        feats = torch.cat([va, torch.sin(ang).flatten(-2), torch.cos(ang).flatten(-2)], dim=-1)
        tokens = self.mlp(feats).view(*va.shape[:-1], self.n, -1)
        return tokens, None if self.add is None else self.add(feats)


class LaraLM(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.ModuleList([nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q)])
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.layer_norm = nn.LayerNorm(cfg.dim)
        self.lm_heads = nn.ModuleList([nn.Linear(cfg.dim, cfg.card, bias=False) for _ in range(cfg.n_q)])
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim, bias=cfg.text_proj_bias)
        self.av = AVEncoder(cfg) if cfg.av_tokens else None
        self.proxy = nn.Sequential(nn.Linear(cfg.dim, cfg.proxy_hidden), nn.SiLU(), nn.Linear(cfg.proxy_hidden, cfg.feature_dim))
        self.drop = nn.Dropout(cfg.dropout)
        self.register_buffer("pos_table", sinusoids(torch.arange(cfg.context), cfg.dim), persistent=False)
        self.apply(self._init)
        if self.av is not None and self.av.add is not None:
            nn.init.zeros_(self.av.add.weight)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @property
    def special(self) -> int:
        return self.cfg.card

    def memory(
        self, text: torch.Tensor, text_mask: torch.Tensor, va: torch.Tensor | None = None, av_on: torch.Tensor | None = None
    ) -> Memory:
        """Cross-attention keys/values for one conditioning. `text` (B, M, text_dim) encoder
        states, `text_mask` (B, M) bool (all False: text dropped); `va` (B, T or 1, 2) or None
        (no AV tokens: MusicGen), `av_on` (B,) bool (False: AV dropped)."""
        b = text.shape[0]
        neg = torch.finfo(torch.float32).min
        mem_text = self.text_proj(text) * text_mask[..., None].to(text.dtype)  # MusicGen zeroes masked states
        text_bias = torch.where(text_mask, 0.0, neg)[:, None, None, :]
        ks, vs, kas, vas, av_bias, av_add = [], [], None, None, None, None
        for blk in self.layers:
            a = blk.encoder_attn
            ks.append(a.heads(a.k_proj(mem_text)))
            vs.append(a.heads(a.v_proj(mem_text)))
        if va is not None and self.av is not None:
            on = torch.ones(b, dtype=torch.bool) if av_on is None else av_on
            tok, add = self.av(va)
            tok = tok * on[:, None, None, None].to(va.dtype)  # (B, T, n, C)
            av_add = None if add is None else add * on[:, None, None].to(va.dtype)  # (B, T, C)
            av_bias = torch.where(on, 0.0, neg)[:, None, None, None]
            kas, vas = [], []
            for blk in self.layers:
                a = blk.encoder_attn
                kas.append(a.heads(a.k_proj(tok)).transpose(1, 2))  # (B, T, H, n, hd) -> (B, H, T, n, hd)
                vas.append(a.heads(a.v_proj(tok)).transpose(1, 2))
        return Memory(ks, vs, text_bias, kas, vas, av_bias, av_add)

    def forward(
        self, tokens: torch.Tensor, mem: Memory, cache: KVCache | None = None, hidden_layer: int | None = None, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`tokens` (B, K, S) in the delay pattern -> logits (B, K, S, card), and the hidden
        states after block `hidden_layer` (B, S, C) when asked (the LARA proxy's input).
        With a cache, the steps continue after the cached ones; `start` indexes a
        per-position AV memory."""
        b, k, s = tokens.shape
        past = cache.length if cache is not None else 0
        x = sum(self.embed_tokens[i](tokens[:, i]) for i in range(k))
        pos = self.pos_table[past : past + s] if past + s <= len(self.pos_table) else sinusoids(torch.arange(past, past + s), self.cfg.dim)
        x = x + pos
        if mem.av_add is not None:
            x = x + (mem.av_add[:, start : start + s] if mem.av_add.shape[1] > 1 else mem.av_add)
        x = self.drop(x)
        hidden = None
        for i, blk in enumerate(self.layers):
            x = blk(x, mem, cache, i, start)
            if hidden_layer == i + 1:
                hidden = x
        if cache is not None:
            cache.advance(s)
        x = self.layer_norm(x)
        logits = torch.stack([h(x) for h in self.lm_heads], dim=1)
        return logits, hidden


def delay(codes: torch.Tensor, special: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (B, K, T) -> delay-pattern inputs and targets, (B, K, T + K - 1) each.
    Step s predicts codebook k of frame s - k; its input holds codebook k of frame s - 1 - k.
    Steps outside the frames are the special token (inputs) or IGNORE (targets)."""
    b, k, t = codes.shape
    s = t + k - 1
    grid = torch.full((b, k, s), special, dtype=torch.long)
    for i in range(k):
        grid[:, i, i : i + t] = codes[:, i]
    inputs = torch.cat([torch.full((b, k, 1), special, dtype=torch.long), grid[:, :, :-1]], dim=2)
    targets = grid.masked_fill(grid == special, IGNORE)
    return inputs, targets


def undelay(steps: torch.Tensor) -> torch.Tensor:
    """Delay-pattern tokens (B, K, S) -> the complete frames (B, K, S - K + 1)."""
    b, k, s = steps.shape
    t = s - k + 1
    return torch.stack([steps[:, i, i : i + t] for i in range(k)], dim=1)


def lara_loss(proxy: nn.Module, hidden: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """REPA's alignment: minus the cosine between proxy(hidden) and the external model's
    features, averaged over the valid steps. hidden (B, S, C), target (B, S, D), valid (B, S)."""
    cos = F.cosine_similarity(proxy(hidden), target, dim=-1)
    return -(cos * valid).sum() / valid.sum().clamp(min=1)


def ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all codebooks and valid steps, nats."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


def ce_per_crop(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each crop over its codebooks and valid steps, nats: (B,)."""
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    n = (targets != IGNORE).flatten(1).sum(1).clamp(min=1)
    return nll.view(targets.shape[0], -1).sum(1) / n
