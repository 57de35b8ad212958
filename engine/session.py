"""The session loop: one path for offline render and live serve, notes or audio.

The session asks an emotion source for the emotion at the start of the next chunk and the
generator for that chunk, with the session's tempo and text prompt. Offline, the clock runs
as fast as the generator allows; live (`daw_bridge.live`), a scheduler calls
`next_chunk()` ahead of the play head. Same generator, same seed and same emotions give the
same chunks either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from moodlane.engine.chunk import AUDIO_CHUNK_BEATS, Audio, Chunk, Conditions, Generator
from moodlane.engine.emotion import Emotion
from moodlane.engine.mixer import join_audio
from moodlane.engine.symbolic.notes import NoteArray

MAX_BEATS = 4 * 20_000  # 20,000 bars: over 11 hours at 120 BPM


class EmotionSource(Protocol):
    def at(self, beat: float) -> Emotion: ...


class Session:
    def __init__(
        self,
        generator: Generator,
        source: EmotionSource,
        seed: int = 0,
        qpm: float | None = None,
        prompt: str = "",
        chunk_beats: float | None = None,
    ) -> None:
        self.generator = generator
        self.source = source
        self.state = generator.init_state(seed)
        self.qpm = float(qpm) if qpm is not None else generator.default_tempo(source.at(0.0))
        self.prompt = prompt
        if chunk_beats is None and getattr(generator, "kind", "notes") == "audio":
            chunk_beats = AUDIO_CHUNK_BEATS  # as live: the same chunks, so the same seeds, offline and live
        self.chunk_beats = chunk_beats  # None: the generator's own (a bar)
        self.beat = 0.0  # start of the next chunk

    def conditions(self) -> Conditions:
        return Conditions(self.source.at(self.beat), self.qpm, self.prompt, self.chunk_beats)

    def next_chunk(self) -> Chunk:
        chunk, self.state = self.generator.generate_chunk(self.state, self.conditions())
        self.beat += chunk.beats
        return chunk


def join_notes(chunks: list[Chunk], qpm: float) -> NoteArray:
    """Concatenate bars of notes into one piece (beats from the first chunk's start)."""
    starts, durs, pitches, vels, parts = [], [], [], [], []
    offset = 0.0
    for c in chunks:
        if c.notes is None:
            raise ValueError("join_notes needs chunks of notes (this generator makes audio)")
        starts.append(c.notes.start + offset)
        durs.append(c.notes.duration)
        pitches.append(c.notes.pitch)
        vels.append(c.notes.velocity)
        parts.append(c.notes.part)
        offset += c.beats
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    part = cat(parts) if parts and all(p is not None for p in parts) else None  # parts known for every bar, or none
    out = NoteArray(cat(starts), cat(durs), cat(pitches).astype(np.int64), cat(vels).astype(np.int64), qpm, 4.0, part=part)
    out.meta["beats"] = offset
    return out


def join(chunks: list[Chunk], qpm: float) -> NoteArray | Audio:
    """The piece the chunks make: notes, or crossfaded audio."""
    return join_notes(chunks, qpm) if chunks and chunks[0].kind == "notes" else join_audio(chunks, qpm)


def render_chunks(
    generator: Generator,
    source: EmotionSource,
    beats: float,
    seed: int = 0,
    qpm: float | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    prompt: str = "",
) -> tuple[list[Chunk], float]:
    """Offline bounce: chunks until `beats` are covered, as fast as the generator allows.
    Returns the chunks and the tempo they were made at."""
    if not 0 < beats <= MAX_BEATS:
        raise ValueError(f"a render covers 0 < beats <= {MAX_BEATS}, got {beats}")
    session = Session(generator, source, seed, qpm, prompt)
    chunks = []
    while session.beat < beats - 1e-9:
        chunks.append(session.next_chunk())
        if on_chunk is not None:
            on_chunk(chunks[-1])
    return chunks, session.qpm


def render(
    generator: Generator,
    source: EmotionSource,
    bars: int,
    seed: int = 0,
    qpm: float | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> tuple[NoteArray, list[Chunk]]:
    """Offline bounce of a notes generator: `bars` 4/4 bars, joined into one piece."""
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    chunks, tempo = render_chunks(generator, source, 4.0 * bars, seed, qpm, on_chunk)
    return join_notes(chunks, tempo), chunks
