"""Helpers for tests on a real JACK server: find and connect ports, collect MIDI."""

import subprocess
import threading
import time


def jack_ports() -> list[str]:
    return subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=5).stdout.splitlines()


def find_port(fragment: str, timeout: float = 5.0) -> str:
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        hits = [p for p in jack_ports() if p.endswith(fragment) or fragment in p]
        if hits:
            return hits[0]
        time.sleep(0.05)
    raise AssertionError(f"no JACK port matching {fragment!r} in {jack_ports()}")


def connect(src: str, dst: str) -> None:
    subprocess.run(["jack_connect", find_port(src), find_port(dst)], check=True, timeout=5)


def connections() -> str:
    return subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=5).stdout


class Collector:
    """Timestamps every message arriving on a port."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, object]] = []
        self.lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), msg))

    def notes_between(self, t0: float, t1: float) -> list:
        with self.lock:
            return [m for t, m in self.messages if t0 <= t < t1 and m.type == "note_on" and m.velocity > 0]
