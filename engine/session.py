"""The session loop: one path for offline render and live serve.

The session asks an emotion source for the emotion at the start of the next bar and the
generator for that bar. Offline, the clock runs as fast as the generator allows; live
(`daw_bridge`), a scheduler calls `next_chunk()` ahead of the play head. Same generator,
same seed and same emotions give the same notes either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from engine.chunk import Chunk, Generator
from engine.emotion import Emotion
from engine.symbolic.notes import NoteArray


class EmotionSource(Protocol):
    def at(self, beat: float) -> Emotion: ...


class Session:
    def __init__(self, generator: Generator, source: EmotionSource, seed: int = 0, qpm: float | None = None) -> None:
        self.generator = generator
        self.source = source
        self.state = generator.init_state(seed)
        self.qpm = float(qpm) if qpm is not None else generator.default_tempo(source.at(0.0))
        self.beat = 0.0  # start of the next bar

    def next_chunk(self) -> Chunk:
        emotion = self.source.at(self.beat)
        chunk, self.state = self.generator.generate_chunk(self.state, emotion)
        self.beat += chunk.beats
        return chunk


def join_chunks(chunks: list[Chunk], qpm: float) -> NoteArray:
    """Concatenate bars into one piece (beats from the first bar's start)."""
    starts, durs, pitches, vels = [], [], [], []
    offset = 0.0
    for c in chunks:
        starts.append(c.notes.start + offset)
        durs.append(c.notes.duration)
        pitches.append(c.notes.pitch)
        vels.append(c.notes.velocity)
        offset += c.beats
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    out = NoteArray(cat(starts), cat(durs), cat(pitches).astype(np.int64), cat(vels).astype(np.int64), qpm, 4.0)
    out.meta["beats"] = offset
    return out


def render(
    generator: Generator,
    source: EmotionSource,
    bars: int,
    seed: int = 0,
    qpm: float | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> tuple[NoteArray, list[Chunk]]:
    """Offline bounce: `bars` bars as fast as the generator allows."""
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    session = Session(generator, source, seed, qpm)
    chunks = []
    for _ in range(bars):
        chunks.append(session.next_chunk())
        if on_chunk is not None:
            on_chunk(chunks[-1])
    return join_chunks(chunks, session.qpm), chunks
