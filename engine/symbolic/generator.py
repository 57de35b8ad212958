"""Bar-by-bar generation with the attribute-conditioned decoder.

Each call maps the bar's emotion to attribute bins (`EmotionMap`), feeds a BAR token
carrying them, and samples under the token grammar until the model opens the next bar.
The KV cache makes each step one token's work; when the context fills, it is rebuilt from
the most recent whole bars.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moodlane.engine.chunk import Chunk, Conditions, bar_seed
from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic import dynamics, mode_rule
from moodlane.engine.symbolic.checkpoint import DEFAULT_SYMBOLIC, PACKAGE_WEIGHTS, CheckpointError, load_symbolic
from moodlane.engine.symbolic.emotion_map import MODES, TEXTURE, EmotionMap
from moodlane.engine.symbolic.model import KVCache, SymbolicLM, for_inference
from moodlane.engine.symbolic.tokens import BAR, BOS, POS0, Grammar, decode, encode

DEFAULT_MAP = PACKAGE_WEIGHTS / "emotion_map.json"


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens_per_bar: int = 240  # a dense bar of pop piano is ~150 tokens
    # engine/symbolic/emotion_map.py: "smooth"; "emogen", EmoGen's binarised quadrant
    # prototypes; "calibrated", density and durations at EMOPIA's per-quadrant medians
    mapping: str = "smooth"
    mode_rule: bool = True  # valence moves the mode (engine/symbolic/mode_rule.py)
    # the bar the rule moved replaces the decoder's own in its context, so the decoder goes on
    # in the mode it hears and writes that mode's harmony itself (the rule then corrects less)
    mode_context: bool = False
    # contrastive attribute guidance: each step is pushed away from what the decoder predicts
    # for the attributes of the emotion's valence mirror image (0: off; costs a second row)
    guidance: float = 1.0
    # the contrast mirrors texture attributes too (density, durations, polyphony). Off: guidance
    # moves harmony, register and dynamics and texture follows the map (measured: more real
    # textures, weaker judged emotion; README, issue 18)
    guide_texture: bool = True
    dynamics: float = dynamics.DEPTH  # arousal scales velocity by 2**(dynamics * arousal) (engine/symbolic/dynamics.py)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.dynamics <= 2:
            raise ValueError(f"dynamics must be in [0, 2], got {self.dynamics}")
        if not 0 <= self.guidance <= 10:
            raise ValueError(f"guidance must be in [0, 10], got {self.guidance}")
        if self.mapping not in MODES:
            raise ValueError(f"mapping must be one of {MODES}, got {self.mapping!r}")


@dataclass
class SymbolicState:
    """Streaming state: seed, next bar, the tokens in context (with their attribute bins:
    one row, or two with guidance: the asked-for and the contrast) and the KV cache over
    exactly those tokens."""

    seed: int
    bar: int = 0
    tokens: list[int] = field(default_factory=list)
    attrs: list[np.ndarray] = field(default_factory=list)
    cache: KVCache = field(default_factory=KVCache)
    pc_hist: np.ndarray = field(default_factory=lambda: np.zeros(12))  # the key so far (mode rule)

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.attrs):
            raise ValueError("SymbolicState needs one attribute row per token")

    def clone(self) -> SymbolicState:
        return SymbolicState(
            self.seed, self.bar, list(self.tokens), [a.copy() for a in self.attrs], self.cache.clone(), self.pc_hist.copy()
        )


class SymbolicGenerator:
    name = "symbolic"
    kind = "notes"

    def __init__(self, model: SymbolicLM, emotion_map: EmotionMap, sampling: SamplingConfig = SamplingConfig()) -> None:
        if tuple(emotion_map.attributes) != tuple(model.cfg.attributes):
            raise CheckpointError("emotion map and model disagree on the conditioning attributes")
        if sampling.mapping == "calibrated" and not emotion_map.calibrated:
            raise CheckpointError("mapping 'calibrated' needs an emotion map with its calibration (moodlane train map --calibrate)")
        self.model = model.eval()
        self.map = emotion_map
        self.sampling = sampling
        self.cfg = model.cfg
        self._texture = np.array([a in TEXTURE for a in self.cfg.attributes])

    @classmethod
    def load(
        cls,
        checkpoint: Path | str | None = None,
        emotion_map: Path | str | None = None,
        sampling: SamplingConfig = SamplingConfig(),
        precision: str = "auto",
    ) -> SymbolicGenerator:
        """The shipped (or given) checkpoint and its emotion map, ready to decode on a CPU;
        `precision` "auto" (the faster here, measured), "int8" or "fp32"
        (`engine.symbolic.model.for_inference`)."""
        model, _ = load_symbolic(checkpoint or DEFAULT_SYMBOLIC)
        model = for_inference(model, precision)
        map_path = Path(emotion_map) if emotion_map else (Path(checkpoint).with_name("emotion_map.json") if checkpoint else DEFAULT_MAP)
        if not map_path.is_file():
            raise CheckpointError(f"emotion map {map_path} is missing (expected beside the checkpoint)")
        try:
            emap = EmotionMap.load(map_path)
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{map_path} is not a MoodLane emotion map ({e})") from None
        return cls(model, emap, sampling)

    def init_state(self, seed: int = 0) -> SymbolicState:
        return SymbolicState(seed=int(seed))

    def default_tempo(self, emotion: Emotion) -> float:
        return self.map.tempo(emotion)

    def attribute_bins(self, emotion: Emotion, tempo: float | None = None) -> np.ndarray:
        """The emotion's attribute bins; at `tempo` (the session's), time-based attributes
        (notes per beat, durations in beats) are set so arousal is heard at any tempo."""
        return self.map.bins(emotion, self.cfg.n_bins, self.sampling.mapping, tempo)

    def _conditions(self, emotion: Emotion, tempo: float | None = None) -> np.ndarray:
        """Attribute bins to condition on, (rows, n_attr): the emotion's, and with guidance
        those of its valence mirror image, whose prediction the sampler steers away from
        (with its texture attributes the asked ones unless `guide_texture`)."""
        bins = self.attribute_bins(emotion, tempo)
        if not self.sampling.guidance:
            return bins[None]
        contrast = self.attribute_bins(Emotion(-emotion.valence, emotion.arousal), tempo)
        if not self.sampling.guide_texture:
            contrast = np.where(self._texture, bins, contrast)
        return np.stack([bins, contrast])

    @torch.no_grad()
    def _feed(self, state: SymbolicState, tokens: list[int], bins: np.ndarray, emb: torch.Tensor) -> torch.Tensor:
        """Append tokens (of one bar: attribute `bins` (rows, n_attr), embedded as `emb`
        (rows, 1, C)) to the context and return the logits after the last one, (rows, V)."""
        if state.cache.length + len(tokens) > self.cfg.block_size:
            self._refill(state, reserve=len(tokens) + self.sampling.max_tokens_per_bar)
        state.tokens += tokens
        state.attrs += [bins] * len(tokens)
        idx = torch.tensor([tokens]).expand(len(bins), -1)
        logits, _ = self.model(idx, cache=state.cache, attr_emb=emb)
        return logits[:, -1]

    @torch.no_grad()
    def _replace_last(self, state: SymbolicState, n: int, tokens: list[int], bins: np.ndarray, emb: torch.Tensor) -> None:
        """Put `tokens` in place of the context's last `n` (the bar just written)."""
        del state.tokens[-n:], state.attrs[-n:]
        state.cache.length -= n
        self._feed(state, tokens, bins, emb)

    @torch.no_grad()
    def _refill(self, state: SymbolicState, reserve: int) -> None:
        """Keep the most recent whole bars that leave `reserve` tokens free, re-encode them."""
        budget = self.cfg.block_size - reserve
        bars = [i for i, t in enumerate(state.tokens) if t == BAR]
        start = next((b for b in bars if len(state.tokens) - b <= budget), len(state.tokens))
        state.tokens, state.attrs = state.tokens[start:], state.attrs[start:]
        state.cache = KVCache()
        if state.tokens:
            a = torch.from_numpy(np.stack(state.attrs, axis=1))  # (rows, T, n_attr)
            idx = torch.tensor([state.tokens]).expand(a.shape[0], -1)
            self.model(idx, a, cache=state.cache)

    def _sample(self, logits: torch.Tensor, allowed: np.ndarray, gen: torch.Generator) -> int:
        """One token from (rows, V) logits: row 0 asked-for, row 1 (with guidance) the contrast,
        combined as in classifier-free guidance with a negative prompt."""
        s = self.sampling
        guided = logits[0] + s.guidance * (logits[0] - logits[1]) if len(logits) == 2 else logits[0]
        logits = guided / s.temperature
        logits[~torch.from_numpy(allowed)] = -float("inf")
        probs = torch.softmax(logits, -1)
        if s.top_p < 1.0:
            sp, si = torch.sort(probs, descending=True)
            keep = torch.cumsum(sp, 0) - sp < s.top_p
            probs = torch.zeros_like(probs).scatter_(0, si[keep], sp[keep])
        return int(torch.multinomial(probs, 1, generator=gen))

    def generate_chunk(self, state: SymbolicState, conditions: Conditions) -> tuple[Chunk, SymbolicState]:
        emotion = conditions.emotion
        bins = self._conditions(emotion, conditions.tempo)
        with torch.no_grad():
            emb = self.model.attribute_embedding(torch.from_numpy(bins))[:, None]  # (rows, 1, C)
        gen = torch.Generator().manual_seed(bar_seed(state.seed, state.bar))
        grammar = Grammar(self.cfg.vocab_size)
        grammar.reset_bar()
        first = [BOS, BAR] if not state.tokens else [BAR]
        logits = self._feed(state, first, bins, emb)
        out: list[int] = [BAR]
        for _ in range(self.sampling.max_tokens_per_bar):
            allowed = grammar.allowed()
            if len(out) == 1 and state.bar == 0:  # a piece starts on its first downbeat
                allowed[:] = False
                allowed[POS0] = True
            t = self._sample(logits, allowed, gen)
            if t == BAR:
                break
            grammar.update(t)
            out.append(t)
            logits = self._feed(state, [t], bins, emb)
        # a note cut off by the budget is dropped; a model with parts says which notes are the lead's
        notes = decode(np.array(out), qpm=120.0, parts=self.cfg.parts)
        if self.sampling.mode_rule:
            played = mode_rule.apply(notes, state.pc_hist, emotion.valence)
            state.pc_hist = mode_rule.update_histogram(state.pc_hist, notes)  # the model's own key
            if self.sampling.mode_context and played is not notes:
                moved = first[:-1] + encode(played, bos=False, eos=False, parts=self.cfg.parts).tolist()
                self._replace_last(state, len(first) + len(out) - 1, moved, bins, emb)
            notes = played
        notes = dynamics.apply(notes, emotion.arousal, self.sampling.dynamics)
        chunk = Chunk(state.bar, emotion, 4.0, notes=notes, tokens=tuple(out))
        state.bar += 1
        return chunk, state
