"""File sinks: MIDI and WAV bytes, committed together (`engine.atomic`): a failed run never
leaves a partial output file, nor the MIDI of a bounce without its WAV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from moodlane.engine.atomic import commit, write_atomic

__all__ = ["commit", "write_atomic", "wav_bytes", "write_wav_atomic"]


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of (frames, channels) float audio in [-1, 1]."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    commit({Path(path): wav_bytes(audio, sample_rate)})
