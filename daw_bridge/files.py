"""File sinks. Every write goes to a temporary file beside the target and is renamed into
place, so a failed run never leaves a partial output file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def _temp_beside(path: Path) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a rendered file is an ordinary file
    return fd, tmp


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    path = Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
