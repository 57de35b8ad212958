"""Generators with the real interface and no weights, so the bridge, render, session and
sink tests run without a checkpoint. Their output follows the emotion in obvious,
measurable ways:

* `MockGenerator` (notes): valence -> major/minor and register, arousal -> notes per bar,
  velocity and tempo;
* `MockAudioGenerator` (audio): a chord tone, major or minor by valence, pulsed on the
  beat grid; arousal raises the pulse rate (1 to 4 pulses a beat) and the loudness
  (x4 from the calmest to the most excited). Its signal is a function of absolute time,
  so consecutive chunks continue each other and join seamlessly in their crossfade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moodlane.engine.chunk import Audio, Chunk, Conditions, bar_seed
from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.notes import NoteArray

_MAJOR = [(0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12)]  # I V vi IV in C
_MINOR = [(9, 12, 16), (5, 9, 12), (0, 4, 7), (7, 11, 14)]  # i VI III VII in A minor


@dataclass
class MockState:
    seed: int
    bar: int = 0
    frame: int = 0  # audio: the absolute sample position of the next chunk
    beat: float = 0.0  # audio: the absolute beat position of the next chunk

    def clone(self) -> MockState:
        return MockState(self.seed, self.bar, self.frame, self.beat)


def mock_tempo(emotion: Emotion) -> float:
    return 90.0 + 40.0 * emotion.arousal


def pulses_per_beat(arousal: float) -> float:
    return 2.0 ** (1.0 + arousal)  # 1 at the calmest, 2 at neutral, 4 at the most excited


class MockGenerator:
    name = "mock"
    kind = "notes"

    def init_state(self, seed: int = 0) -> MockState:
        return MockState(int(seed))

    def default_tempo(self, emotion: Emotion) -> float:
        return mock_tempo(emotion)

    def generate_chunk(self, state: MockState, conditions: Conditions) -> tuple[Chunk, MockState]:
        emotion = conditions.emotion
        rng = np.random.default_rng(bar_seed(state.seed, state.bar))
        chord = (_MAJOR if emotion.valence >= 0 else _MINOR)[state.bar % 4]
        n = int(round(4 + 6 * (emotion.arousal + 1)))  # 4..16 notes per bar
        root = 48 + int(round(6 * emotion.valence))
        step = 4.0 / n
        pitches = [root + chord[i % 3] + 12 * ((i // 3) % 2) for i in range(n)]
        vel = int(np.clip(60 + 40 * emotion.arousal + rng.integers(-4, 5), 1, 127))
        notes = NoteArray(np.arange(n) * step, np.full(n, step * 0.9), np.array(pitches), np.full(n, vel))
        chunk = Chunk(state.bar, emotion, 4.0, notes=notes)
        return chunk, MockState(state.seed, state.bar + 1)


class MockAudioGenerator:
    """One bar of audio per chunk at the session tempo, plus a 20 ms tail for the crossfade."""

    name = "mock-audio"
    kind = "audio"

    def __init__(self, sample_rate: int = 32000, tail_s: float = 0.02) -> None:
        self.sample_rate = int(sample_rate)
        self.tail = int(round(tail_s * sample_rate))

    def init_state(self, seed: int = 0) -> MockState:
        return MockState(int(seed))

    def default_tempo(self, emotion: Emotion) -> float:
        return mock_tempo(emotion)

    def generate_chunk(self, state: MockState, conditions: Conditions) -> tuple[Chunk, MockState]:
        e, sr = conditions.emotion, self.sample_rate
        beats = conditions.beats or 4.0
        frames = int(round(beats * conditions.seconds_per_beat * sr))
        n = np.arange(frames + self.tail)
        t = (state.frame + n) / sr  # absolute time: the tail equals the next chunk's head
        pos = state.beat + n / sr / conditions.seconds_per_beat  # absolute beats
        third = 4 if e.valence >= 0 else 3
        root = 220.0 * 2.0 ** (round(3 * e.valence) / 12.0)  # a few semitones up when happy
        tone = sum(np.sin(2 * np.pi * root * 2.0 ** (k / 12.0) * t) for k in (0, third, 7)) / 3.0
        rate = pulses_per_beat(e.arousal)
        env = np.exp(-5.0 * np.mod(pos * rate, 1.0))  # a struck pulse on every 1/rate beat
        jitter = 1.0 + 0.05 * np.random.default_rng(bar_seed(state.seed, state.bar)).uniform(-1, 1)  # seeds differ
        gain = 0.25 * 2.0**e.arousal * jitter  # x4 (12 dB) from arousal -1 to +1
        pcm = (gain * env * tone).astype(np.float32)[:, None]
        chunk = Chunk(state.bar, e, beats, audio=Audio(pcm, sr, self.tail))
        return chunk, MockState(state.seed, state.bar + 1, state.frame + frames, state.beat + beats)
