"""A JACK server for machines without sound hardware: its dummy driver gives real MIDI
ports and a real-time audio device. Used by tests and `moodlane bench live`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

JACK_MIDI = "mido.backends.rtmidi/UNIX_JACK"


class JackUnavailable(RuntimeError):
    """No JACK server runs and none could be started."""


def jack_running() -> bool:
    try:
        return subprocess.run(["jack_lsp"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to stop this process when its parent dies, so a
    server left by a crashed test run (segfault, kill -9) does not outlive it and hand the
    next run a graph with a dead client in it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def ensure_jack(rate: int = 48000, period: int = 512) -> Iterator[bool]:
    """Yields True if it started a server (and stops it after), False if one was running."""
    if jack_running():
        yield False
        return
    if shutil.which("jackd") is None:
        raise JackUnavailable("jackd is not installed (Debian: apt-get install jackd2)")
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    proc = subprocess.Popen(
        ["jackd", "-r", "-d", "dummy", "-r", str(rate), "-p", str(period)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        for _ in range(100):
            if jack_running():
                break
            if proc.poll() is not None:
                raise JackUnavailable(f"jackd exited with status {proc.returncode}")
            time.sleep(0.1)
        else:
            raise JackUnavailable("jackd did not come up within 10 s")
        yield True
    finally:
        _release_portaudio()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _release_portaudio() -> None:
    """PortAudio's JACK host API holds a client from initialisation until exit; if the server
    goes first, PortAudio's exit handler aborts the process (pa_jack.c `err == 0`). Close it
    while the server still runs; sounddevice reinitialises on next use."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        with contextlib.suppress(Exception):
            while sd._initialized:
                sd._terminate()


def ports() -> list[str]:
    return subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=5).stdout.splitlines()


def find_port(fragment: str, timeout: float = 5.0, exclude: Iterable[str] = ()) -> str:
    """The first JACK port whose name contains `fragment`, leaving out `exclude` (ports that
    existed before the program we wait for started)."""
    skip = set(exclude)
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        hits = [p for p in ports() if fragment in p and p not in skip]
        if hits:
            return hits[0]
        time.sleep(0.05)
    raise JackUnavailable(f"no JACK port matching {fragment!r}")


def connect(src: str, dst: str) -> None:
    subprocess.run(["jack_connect", find_port(src), find_port(dst)], check=True, timeout=5)


def connections() -> str:
    return subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=5).stdout
