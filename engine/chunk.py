"""What every generator is asked for, what it returns, and what every sink consumes.

A chunk is the unit of the session loop: one bar of notes (the symbolic engine) or one
block of audio (audio generators: PCM). Sinks take either kind: MIDI sinks play notes, an
audio sink synthesises notes or mixes PCM, file sinks write MIDI or WAV.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.notes import NoteArray

KINDS = ("notes", "audio")
MAX_PROMPT = 500
AUDIO_CHUNK_BEATS = 1.0  # audio engines' chunk, offline and live alike: a lane change waits at most one


@dataclass(frozen=True)
class Conditions:
    """What a generator is asked for at one chunk. The tempo is the session's (a DAW, a
    preset or the emotion sets it), so a generator must carry arousal at any tempo; the
    text prompt is for text-conditioned generators and ignored by the others. `beats`: the
    chunk length the session asks for, for generators that can make any (audio; live serve
    asks for short chunks, so a lane change is heard sooner); None, or a notes generator:
    one bar."""

    emotion: Emotion
    tempo: float = 120.0
    prompt: str = ""
    beats: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tempo, (int, float)) or not math.isfinite(self.tempo) or not 10.0 <= self.tempo <= 1000.0:
            raise ValueError(f"tempo must be a finite BPM in [10, 1000], got {self.tempo!r}")
        if not isinstance(self.prompt, str) or len(self.prompt) > MAX_PROMPT:
            raise ValueError(f"prompt must be text of at most {MAX_PROMPT} characters")
        if self.beats is not None and not (isinstance(self.beats, (int, float)) and 0.25 <= self.beats <= 16.0):
            raise ValueError(f"chunk beats must be in [0.25, 16], got {self.beats!r}")

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.tempo


@dataclass(frozen=True)
class Audio:
    """PCM of one chunk, (frames, channels) float32 in [-1, 1] at `sample_rate`. It covers
    the chunk's beats at the session tempo and then `tail` frames more, which overlap the
    next chunk's head and are crossfaded there (engine.mixer), so joins never click."""

    pcm: np.ndarray
    sample_rate: int
    tail: int = 0

    def __post_init__(self) -> None:
        pcm = np.asarray(self.pcm, dtype=np.float32)
        if pcm.ndim == 1:
            pcm = pcm[:, None]
        if pcm.ndim != 2 or pcm.shape[1] not in (1, 2):
            raise ValueError(f"audio must be (frames, 1 or 2 channels), got shape {pcm.shape}")
        if not isinstance(self.sample_rate, int) or not 8000 <= self.sample_rate <= 192000:
            raise ValueError(f"sample_rate must be an integer in [8000, 192000], got {self.sample_rate!r}")
        if not 0 <= self.tail < max(1, pcm.shape[0]):
            raise ValueError(f"tail must be in [0, frames), got {self.tail} for {pcm.shape[0]} frames")
        object.__setattr__(self, "pcm", pcm)

    @property
    def frames(self) -> int:
        """Frames of the chunk itself, without the overlapping tail."""
        return self.pcm.shape[0] - self.tail

    @property
    def channels(self) -> int:
        return self.pcm.shape[1]


@dataclass(frozen=True)
class Chunk:
    """One chunk of music: `notes` (times in beats from the chunk's start) or `audio`.
    `bar` is the chunk's running index in its piece (a bar for the symbolic engine)."""

    bar: int
    emotion: Emotion
    beats: float = 4.0
    notes: NoteArray | None = None
    audio: Audio | None = None
    tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if (self.notes is None) == (self.audio is None):
            raise ValueError("a chunk holds either notes or audio")
        if not self.beats > 0:
            raise ValueError(f"a chunk lasts > 0 beats, got {self.beats}")

    @property
    def kind(self) -> str:
        return "notes" if self.notes is not None else "audio"


def bar_seed(seed: int, bar: int) -> int:
    """Each chunk samples from its own stream, so a chunk does not depend on how the
    previous ones were scheduled (live, with rollbacks, or offline)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{bar}".encode(), digest_size=8).digest(), "little") >> 1


class Generator(Protocol):
    """The one call every generator implements (Magenta RealTime's shape):
    `chunk, state = generator.generate_chunk(state, conditions)`. The state is explicit:
    it holds the seed, the chunk counter and the model context, so saving it and restoring
    it continues bit-identically. `kind` says whether its chunks hold notes or audio."""

    name: str
    kind: str

    def init_state(self, seed: int = 0) -> object: ...

    def generate_chunk(self, state: object, conditions: Conditions) -> tuple[Chunk, object]: ...

    def default_tempo(self, emotion: Emotion) -> float: ...
