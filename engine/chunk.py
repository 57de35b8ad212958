"""What every generator returns and what every sink consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.emotion import Emotion
from engine.symbolic.notes import NoteArray


@dataclass(frozen=True)
class Chunk:
    """One bar of music. Note times are beats from the start of this bar."""

    bar: int
    notes: NoteArray
    emotion: Emotion
    beats: float = 4.0
    tokens: tuple[int, ...] = ()


class Generator(Protocol):
    """The one call every generator implements (Magenta RealTime's shape):
    `chunk, state = generator.generate_chunk(state, emotion)`. The state is explicit:
    it holds the seed, the bar counter and the model context, so saving it and restoring
    it continues bit-identically."""

    name: str

    def init_state(self, seed: int = 0) -> object: ...

    def generate_chunk(self, state: object, emotion: Emotion) -> tuple[Chunk, object]: ...

    def default_tempo(self, emotion: Emotion) -> float: ...
