"""A generator with the real interface and no weights: bridge, render and session tests
run without a checkpoint, and its output follows the emotion in an obvious way
(valence -> major/minor and register, arousal -> notes per bar, loudness, tempo)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.chunk import Chunk
from engine.emotion import Emotion
from engine.symbolic.generator import bar_seed
from engine.symbolic.notes import NoteArray

_MAJOR = [(0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12)]  # I V vi IV in C
_MINOR = [(9, 12, 16), (5, 9, 12), (0, 4, 7), (7, 11, 14)]  # i VI III VII in A minor


@dataclass
class MockState:
    seed: int
    bar: int = 0

    def clone(self) -> MockState:
        return MockState(self.seed, self.bar)


class MockGenerator:
    name = "mock"

    def init_state(self, seed: int = 0) -> MockState:
        return MockState(int(seed))

    def default_tempo(self, emotion: Emotion) -> float:
        return 90.0 + 40.0 * emotion.arousal

    def generate_chunk(self, state: MockState, emotion: Emotion) -> tuple[Chunk, MockState]:
        rng = np.random.default_rng(bar_seed(state.seed, state.bar))
        chord = (_MAJOR if emotion.valence >= 0 else _MINOR)[state.bar % 4]
        n = int(round(4 + 6 * (emotion.arousal + 1)))  # 4..16 notes per bar
        root = 48 + int(round(6 * emotion.valence))
        step = 4.0 / n
        pitches = [root + chord[i % 3] + 12 * ((i // 3) % 2) for i in range(n)]
        vel = int(np.clip(60 + 40 * emotion.arousal + rng.integers(-4, 5), 1, 127))
        notes = NoteArray(
            np.arange(n) * step,
            np.full(n, step * 0.9),
            np.array(pitches),
            np.full(n, vel),
        )
        chunk = Chunk(state.bar, notes, emotion, 4.0)
        return chunk, MockState(state.seed, state.bar + 1)
