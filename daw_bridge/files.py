"""File sinks: WAV bytes for the bounce. The render command commits MIDI and WAV together
(`engine.atomic.commit`), so a failed run never leaves a partial file, nor the MIDI of a
bounce without its WAV."""

from __future__ import annotations

import io

import numpy as np


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of (frames, channels) float audio in [-1, 1]."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()
