import os
from pathlib import Path

import numpy as np
import pytest

from engine.symbolic.notes import NoteArray

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MOODLANE_DATA", ROOT.parent / "shared" / "data"))


def make_notes(rows, qpm=120.0, bpb=4.0):
    """rows: (start_beats, dur_beats, pitch, velocity)."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return NoteArray(a[:, 0], a[:, 1], a[:, 2].astype(np.int64), a[:, 3].astype(np.int64), qpm, bpb)


@pytest.fixture
def data_dir():
    if not (DATA / "emopia").is_dir():
        pytest.skip(f"needs the emotion-labelled data at {DATA} (set MOODLANE_DATA); absent on this machine")
    return DATA


def _jack_running() -> bool:
    import subprocess

    try:
        return subprocess.run(["jack_lsp"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def jack_server():
    """A JACK server with its dummy driver: real MIDI ports and a real-time audio device
    on a machine without sound hardware. Started here and stopped after the session,
    unless one is already running."""
    import shutil
    import subprocess
    import time

    if _jack_running():
        yield None
        return
    if shutil.which("jackd") is None:
        pytest.skip("needs jackd (Debian package jackd2) for real MIDI ports and audio; not installed")
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    proc = subprocess.Popen(
        ["jackd", "-r", "-d", "dummy", "-r", "48000", "-p", "512"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(50):
        if _jack_running():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.skip("jackd did not start")
    os.environ.setdefault("MOODLANE_MIDI_BACKEND", "mido.backends.rtmidi/UNIX_JACK")
    yield proc
    proc.terminate()
    proc.wait(timeout=10)
