"""LARA-Gen as a MoodLane generator: chunks of audio whose valence/arousal may change
from one chunk to the next.

Each chunk covers one bar at the session tempo (2 s at 120 BPM), or the beats the session
asks for (live serve asks for one beat: a lane change is heard sooner). The LM keeps stepping
with its KV cache across chunks; only the conditioning memory changes, so an automation
lane moves the music mid-piece without a restart. Classifier-free guidance runs the
conditioned row beside a null one (batch 2; a third, text-only row adds AV guidance).

Audio: the codec decodes the chunk's frames with half a second of the frames before them
(the decoder's convolutions and LSTM settle), plus a few frames of lookahead, so each
chunk ends with a short `tail` that the next chunk's head re-decodes and the mixer
crossfades: joins do not click. When the self-attention window fills, the cache is
rebuilt from its most recent half (AudioCraft's extension: the model continues itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from moodlane.engine.audio.lm import KVCache, LaraLM, LMConfig, Memory
from moodlane.engine.chunk import Audio, Chunk, Conditions, bar_seed
from moodlane.engine.emotion import Emotion

DEFAULT_PROMPT = "solo acoustic piano"
CFG = 3.0  # guidance on the full condition (text and emotion): chosen by `eval audio --cfg 1.5,2,3` (README, stop 31)
AV_CFG = 0.0  # extra guidance on the emotion alone: chosen by `moodlane eval audio --av-cfg 0,1,2` (README)


@dataclass(frozen=True)
class AudioSampling:
    cfg: float = CFG  # classifier-free guidance on the full condition (1: off, batch 1)
    av_cfg: float = AV_CFG  # extra guidance on the emotion alone (> 0 adds a text-only row)
    top_k: int = 250
    temperature: float = 1.0
    tail_s: float = 0.02
    lookahead: int = 2  # frames decoded past the tail (at least the codec's `context_frames`)
    left_context_s: float = 0.5  # frames decoded before the chunk (the decoder settles)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cfg) and 0.0 <= self.cfg <= 20.0):
            raise ValueError(f"cfg must be in [0, 20], got {self.cfg}")
        if not (math.isfinite(self.av_cfg) and 0.0 <= self.av_cfg <= 20.0):
            raise ValueError(f"av_cfg must be in [0, 20], got {self.av_cfg}")
        if not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def rows(self) -> int:
        return 1 + (self.cfg != 1.0 or self.av_cfg > 0) + (self.av_cfg > 0)


@dataclass
class LaraState:
    """Streaming state: seed, next bar, the absolute sample where the next chunk starts,
    the delay-pattern tokens generated so far (K, n) from step `offset` on, and the KV
    cache over the current window. `clone()` snapshots all of it."""

    seed: int
    bar: int = 0
    sample: int = 0
    tokens: torch.Tensor | None = None
    offset: int = 0  # absolute step of tokens[:, 0]
    cache: object | None = None  # the backend's KV cache (KVCache, or onnx_runtime.OrtCache)

    @property
    def steps(self) -> int:
        return self.offset + (0 if self.tokens is None else self.tokens.shape[1])

    def clone(self) -> LaraState:
        return LaraState(
            self.seed,
            self.bar,
            self.sample,
            None if self.tokens is None else self.tokens.clone(),
            self.offset,
            None if self.cache is None else self.cache.clone(),
        )


def emotion_words(e: Emotion) -> str:
    """The text-prompting baseline's words for an emotion (the paper's comparison)."""
    v = "happy" if e.valence > 0.25 else "sad" if e.valence < -0.25 else "neutral"
    a = "energetic" if e.arousal > 0.25 else "calm" if e.arousal < -0.25 else "moderate"
    return f"{v}, {a}"


class TorchLM:
    """The PyTorch backend of the LM: conditioning memory, a cache, one step's logits.
    `engine.audio.onnx_runtime.OnnxLM` is the other; the generation loop below drives either."""

    name = "torch"

    def __init__(self, model: LaraLM) -> None:
        self.model = model.eval()
        self.cfg: LMConfig = model.cfg

    def memory(self, text: torch.Tensor, mask: torch.Tensor, va: torch.Tensor, av_on: torch.Tensor) -> Memory:
        return self.model.memory(text, mask, va, av_on)

    def new_cache(self, batch: int) -> KVCache:
        return KVCache(self.cfg, batch, self.cfg.context)

    def logits(self, tokens: torch.Tensor, mem: Memory, cache: KVCache) -> torch.Tensor:
        """tokens (B, K, S) after the cached steps -> the last step's logits (B, K, card)."""
        return self.model(tokens, mem, cache)[0][:, :, -1]

    def describe(self) -> dict:
        return {"backend": "torch", "version": torch.__version__, "threads": torch.get_num_threads()}


class LaraGenerator:
    name = "audio"
    kind = "audio"

    def __init__(
        self,
        model: LaraLM | TorchLM,
        codec,
        text_encoder,
        sampling: AudioSampling = AudioSampling(),
        emotion_as_text: bool = False,
        meta: dict | None = None,
    ) -> None:
        self.lm = TorchLM(model) if isinstance(model, LaraLM) else model  # the backend
        self.model = getattr(self.lm, "model", None)  # the torch module, when the backend has one
        self.codec = codec
        self.text = text_encoder
        self.sampling = sampling
        self.cfg = self.lm.cfg
        self.emotion_as_text = emotion_as_text  # the text-prompting baseline: words, no AV tokens
        self.av_dropped = False  # the emotion switched off (as trained with AV dropout): the paired-seed test's third arm
        self.meta = meta or {}
        self.sample_rate = int(codec.sample_rate)
        self.hop = int(round(codec.sample_rate / codec.frame_rate))
        self.tail = int(round(sampling.tail_s * self.sample_rate))
        self._special = torch.full((self.cfg.n_q,), self.cfg.card, dtype=torch.long)  # BOS / not-yet-started codebooks
        self._delays = torch.arange(self.cfg.n_q)  # codebook k runs k steps late
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mem_key: tuple | None = None
        self._mem: Memory | None = None

    def init_state(self, seed: int = 0) -> LaraState:
        return LaraState(int(seed))

    def default_tempo(self, emotion: Emotion) -> float:
        return 120.0  # the audio LM keeps its own time; a bar at 120 BPM is a 2 s chunk

    # conditioning -------------------------------------------------------------------
    def _text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if prompt not in self._text_cache:
            if len(self._text_cache) > 64:
                self._text_cache.clear()
            self._text_cache[prompt] = self.text([prompt])
        return self._text_cache[prompt]

    @torch.no_grad()
    def memory(self, prompt: str, emotion: Emotion) -> Memory:
        """Rows: conditioned, null (with guidance), text-only (with AV guidance)."""
        prompt = prompt or DEFAULT_PROMPT
        if self.emotion_as_text:
            prompt = f"{prompt}, {emotion_words(emotion)}"
        key = (prompt, emotion, self.av_dropped)
        if key == self._mem_key:
            return self._mem
        states, mask = self._text(prompt)
        rows = self.sampling.rows
        text_on = torch.tensor([True, False, True][:rows])
        av_on = torch.tensor([not (self.emotion_as_text or self.av_dropped), False, False][:rows])
        mem = self.lm.memory(
            states.expand(rows, -1, -1),
            mask.expand(rows, -1) & text_on[:, None],
            torch.tensor([[emotion.valence, emotion.arousal]], dtype=torch.float32).expand(rows, 1, 2),
            av_on,
        )
        self._mem_key, self._mem = key, mem
        return mem

    # stepping -----------------------------------------------------------------------
    def _logits(self, inputs: torch.Tensor, mem, cache) -> torch.Tensor:
        """One step: inputs (K,) -> guided logits (K, card)."""
        rows = self.sampling.rows
        lg = self.lm.logits(inputs.view(1, -1, 1).expand(rows, -1, -1), mem, cache)  # (rows, K, card)
        s = self.sampling
        if rows == 1:
            return lg[0]
        out = lg[1] + s.cfg * (lg[0] - lg[1])
        if rows == 3:
            out = out + s.av_cfg * (lg[0] - lg[2])
        return out

    def _sample(self, logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        k = min(self.sampling.top_k, logits.shape[-1])
        v, i = torch.topk(logits / self.sampling.temperature, k, dim=-1)
        probs = torch.softmax(v, dim=-1)
        pick = torch.multinomial(probs, 1, generator=gen)
        return i.gather(-1, pick)[:, 0]

    def _refill(self, state: LaraState, mem) -> None:
        """A fresh cache over the most recent half window: a special token at position 0,
        then the inputs of the steps since (so the next input lands where training put it)."""
        keep = self.cfg.context // 2
        s = state.steps
        cols = state.tokens[:, max(0, s - keep - state.offset) : s - 1 - state.offset]
        prefix = torch.cat([self._special[:, None], cols], dim=1)
        state.cache = self.lm.new_cache(self.sampling.rows)
        self.lm.logits(prefix[None].expand(self.sampling.rows, -1, -1), mem, state.cache)

    @torch.no_grad()
    def step(self, state: LaraState, mem, gen: torch.Generator) -> None:
        """Generate one delay-pattern step (one token per codebook)."""
        s = state.steps
        if state.cache is None or state.cache.capacity != self.cfg.context or state.cache.batch != self.sampling.rows:
            state.cache = self.lm.new_cache(self.sampling.rows)
            if s > 0:
                self._refill(state, mem)
        elif state.cache.length >= state.cache.capacity:
            self._refill(state, mem)
        inputs = self._special if s == 0 else state.tokens[:, s - 1 - state.offset]
        tok = self._sample(self._logits(inputs, mem, state.cache), gen)
        tok = torch.where(s - self._delays >= 0, tok, self._special)
        state.tokens = tok[:, None] if state.tokens is None else torch.cat([state.tokens, tok[:, None]], dim=1)

    def frames_done(self, state: LaraState) -> int:
        return max(0, state.steps - self.cfg.n_q + 1)

    def frames(self, state: LaraState, first: int, last: int) -> torch.Tensor:
        """Complete frames [first, last) as (K, n) codes."""
        k = self.cfg.n_q
        rows = [state.tokens[i, first + i - state.offset : last + i - state.offset] for i in range(k)]
        return torch.stack(rows)

    def generate_chunk(self, state: LaraState, conditions: Conditions) -> tuple[Chunk, LaraState]:
        e, sr, hop = conditions.emotion, self.sample_rate, self.hop
        mem = self.memory(conditions.prompt, e)
        start = state.sample
        beats = conditions.beats or 4.0
        end = start + int(round(beats * conditions.seconds_per_beat * sr))
        need = -(-(end + self.tail) // hop) + max(self.sampling.lookahead, self.codec.context_frames)
        gen = torch.Generator().manual_seed(bar_seed(state.seed, state.bar))
        while self.frames_done(state) < need:
            self.step(state, mem, gen)
        left = max(int(round(self.sampling.left_context_s * self.codec.frame_rate)), self.codec.context_frames)
        first = max(0, start // hop - left)
        pcm = self.codec.decode(self.frames(state, first, need)[None], first_frame=first)[0]
        seg = pcm[start - first * hop : end + self.tail - first * hop]
        seg = np.clip(seg, -1.0, 1.0).astype(np.float32)
        # keep what the next chunk can need: its left context and the cache refill's tokens
        keep_from = min(first, state.steps - self.cfg.context - 1)
        if keep_from > state.offset:
            state.tokens = state.tokens[:, keep_from - state.offset :]
            state.offset = keep_from
        chunk = Chunk(state.bar, e, beats, audio=Audio(seg, sr, self.tail))
        state.bar += 1
        state.sample = end
        return chunk, state
