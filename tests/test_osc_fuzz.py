"""The OSC server under a flood of random and malformed datagrams from many source ports.

`fuzz_datagrams(rng, n)` yields the datagrams, so a benchmark can import it from here.
"""

import logging
import math
import os
import random
import socket
import struct
import time

import pytest

from moodlane.daw_bridge.control import LiveControl
from moodlane.daw_bridge.osc import Feedback, OscRouter, OscServer

KNOWN = (
    "/moodlane/valence",
    "/moodlane/arousal",
    "/moodlane/n/valence",
    "/moodlane/n/arousal",
    "/moodlane/fxparam/1/value",
    "/moodlane/fxparam/2/value",
    "/moodlane/va",
    "/moodlane/n/va",
    "/moodlane/tempo",
    "/moodlane/play",
    "/moodlane/stop",
    "/moodlane/mode",
    "/moodlane/preset",
    "/moodlane/prompt",
    "/moodlane/learn",
)
PATTERN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789/_-*?[]{},!"


def _s(b: bytes) -> bytes:
    """An OSC string: NUL-terminated, padded to 4 bytes."""
    b += b"\0"
    return b + b"\0" * (-len(b) % 4)


def _arg(rng: random.Random) -> tuple[str, bytes]:
    """One argument of any type OSC has, most of them wrong for this server."""
    kind = rng.randrange(14)
    if kind == 0:
        return "f", struct.pack(">f", rng.uniform(-5, 5))
    if kind == 1:
        return "f", struct.pack(">f", rng.choice((math.nan, math.inf, -math.inf, 3.4e38)))
    if kind == 2:
        return "d", struct.pack(">d", rng.choice((math.nan, math.inf, 1e308, -1e-308, rng.random())))
    if kind == 3:
        return "i", struct.pack(">i", rng.choice((0, 1, -1, 2**31 - 1, -(2**31), rng.randrange(-1000, 1000))))
    if kind == 4:
        return "h", struct.pack(">q", rng.choice((2**63 - 1, -(2**63), rng.getrandbits(62))))
    if kind == 5:
        return "s", _s(
            rng.choice((b"", b"midi", b"audio", b"disco", b"tender", b"valence", rng.randbytes(rng.randrange(40)).replace(b"\0", b"x")))
        )
    if kind == 6:
        blob = rng.randbytes(rng.randrange(64))
        return "b", struct.pack(">i", len(blob)) + blob + b"\0" * (-len(blob) % 4)
    if kind == 7:
        return "b", struct.pack(">i", rng.choice((-1, 2**31 - 1, 1000)))  # a blob's size that lies
    if kind == 8:
        return rng.choice("TFNI"), b""
    if kind == 9:
        return "[f]", struct.pack(">f", 0.5)
    if kind == 10:
        return rng.choice(("[", "]", "[[", "]]")), b""  # unbalanced arrays
    if kind == 11:
        return rng.choice("xqzSc\x01"), rng.randbytes(4)  # types python-osc does not know
    if kind == 12:
        return "m", rng.randbytes(4)
    return "t", rng.randbytes(8)


def _message(rng: random.Random, address: str | bytes, nargs: int | None = None) -> bytes:
    addr = address.encode() if isinstance(address, str) else address
    tags, payload = ",", b""
    for _ in range(rng.randrange(4) if nargs is None else nargs):
        t, p = _arg(rng)
        tags += t
        payload += p
    return _s(addr) + _s(tags.encode("latin-1")) + payload


def _valid(rng: random.Random) -> bytes:
    addr = rng.choice(KNOWN)
    if addr.endswith("va"):
        return _s(addr.encode()) + _s(b",ff") + struct.pack(">ff", rng.uniform(-1, 1), rng.uniform(-1, 1))
    if addr in ("/moodlane/mode", "/moodlane/preset", "/moodlane/prompt", "/moodlane/learn"):
        word = rng.choice((b"midi", b"audio", b"both", b"tender", b"valence", b"arousal")) + rng.choice(
            (b"", str(rng.randrange(10**6)).encode())
        )
        return _s(addr.encode()) + _s(b",s") + _s(word)
    if addr in ("/moodlane/play", "/moodlane/stop"):
        return _s(addr.encode()) + _s(b",i") + struct.pack(">i", rng.randrange(2))
    return _s(addr.encode()) + _s(b",f") + struct.pack(">f", rng.uniform(-2, 2))


def _random_address(rng: random.Random) -> str:
    body = "".join(rng.choice(PATTERN_CHARS) for _ in range(rng.randrange(1, 40)))
    if rng.random() < 0.1:
        body = "*" * rng.randrange(5, 60) + "x"  # a pattern that backtracks in a naive matcher
    return rng.choice(("/", "/moodlane/", "/moodlane/status/", "/live/")) + body


def _bundle(rng: random.Random, depth: int = 0) -> bytes:
    timetag = rng.choice((b"\0\0\0\0\0\0\0\1", struct.pack(">II", int(time.time()) + 2208988800 + 3600, 0), rng.randbytes(8)))
    out = b"#bundle\0" + timetag
    for _ in range(rng.randrange(4)):
        kind = rng.randrange(6)
        if kind == 0:
            content = rng.randbytes(rng.randrange(0, 40))  # garbage: python-osc warns "Could not identify content type"
        elif kind == 1:
            content = _valid(rng)
        elif kind == 2:
            content = _message(rng, rng.choice(KNOWN))
        elif kind == 3 and depth < 3:
            content = _bundle(rng, depth + 1)
        elif kind == 4:
            out += struct.pack(">i", rng.choice((-4, -1, 2**31 - 1, 10**6)))  # a size that lies
            continue
        else:
            content = _s(b"/moodlane/status") + _s(b",")
        out += struct.pack(">i", len(content)) + content
    if rng.random() < 0.2:
        out = out[: rng.randrange(8, len(out) + 1)]  # cut short
    return out


def fuzz_datagrams(rng: random.Random, n: int):
    """Yield `n` datagrams for an OSC server under /moodlane: random bytes of random lengths
    (a few over 8 KiB), truncated messages, known addresses with wrong, broken or unknown
    type tags (strings, blobs, NaN, inf, huge ints), bundles with garbage inside,
    `/moodlane/status` requests, unknown and wildcard addresses, and some valid messages."""
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            size = rng.choice(
                (
                    rng.randrange(0, 64),
                    rng.randrange(0, 1500),
                    rng.randrange(0, 1500),
                    rng.randrange(8000, 20000) if rng.random() < 0.05 else 16,
                )
            )
            junk = rng.randbytes(size)
            yield rng.choice((b"", b"", b"/", b"#bundle\0")) + junk
        elif r < 0.30:
            m = _message(rng, rng.choice(KNOWN), rng.randrange(1, 4)) if rng.random() < 0.7 else _bundle(rng)
            yield m[: rng.randrange(1, len(m))] if len(m) > 1 else m
        elif r < 0.55:
            yield _message(rng, rng.choice(KNOWN))
        elif r < 0.70:
            yield _bundle(rng)
        elif r < 0.77:
            tags = rng.choice((b",", b",", b",", b",i", b",s", b",x"))
            yield _s(b"/moodlane/status") + _s(tags) + rng.randbytes(rng.choice((0, 0, 4)))
        elif r < 0.90:
            yield _message(rng, _random_address(rng))
        else:
            yield _valid(rng)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def _wait(pred, timeout: float = 5.0) -> bool:
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def _bind_65535() -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 65535))
    except OSError:
        s.close()
        return None
    return s


def _normal_message(address: str, x: float) -> bytes:
    return _s(address.encode()) + _s(b",f") + struct.pack(">f", x)


@pytest.fixture
def served():
    control = LiveControl(tau_s=0.0)
    box = {}

    def on_status(sender):
        t = control.target()
        box["feedback"].send({"va": [t.valence, t.arousal], "tempo": control.tempo, "playing": int(control.playing)}, force=True)

    router = OscRouter(control, on_preset=lambda name: name == "tender", on_status=on_status)
    server = OscServer(router, "127.0.0.1", 0).start()
    feedback = box["feedback"] = Feedback(router)
    yield control, router, server, feedback
    server.stop()
    feedback.close()


def test_sender_on_port_65535_then_status_does_not_raise(served):
    control, router, server, feedback = served
    s = _bind_65535()
    if s is None:
        pytest.skip("cannot bind 127.0.0.1:65535 here")
    with s:
        s.sendto(_normal_message("/moodlane/valence", 0.25), server.address)
        assert _wait(lambda: router.last_sender == ("127.0.0.1", 65535))
        s.sendto(_s(b"/moodlane/status") + _s(b","), server.address)  # on_status -> feedback, in the OSC thread
        assert _wait(lambda: router.stats.port_overflow >= 1)
    assert feedback.destination() is None
    assert feedback.send({"va": [0.25, 0.0]}, force=True) is False  # and from the caller's loop: no OverflowError
    assert router.stats.port_overflow == 2 and router.stats.feedback_errors == 0 and router.stats.dropped == 0
    assert server._thread.is_alive()
    assert control.target().valence == pytest.approx(0.25)


@pytest.mark.slow
def test_fuzz_flood_from_many_ports(served, caplog, capsys):
    control, router, server, feedback = served
    caplog.set_level(logging.WARNING)
    n = 100_000
    rng = random.Random(20240611)
    senders = []
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        senders.append(s)
    high = _bind_65535()
    note = "" if high is not None else " (127.0.0.1:65535 could not be bound: that part skipped)"
    try:
        # feedback's one socket exists before the baseline, from a single sender
        senders[0].sendto(_s(b"/moodlane/status") + _s(b","), server.address)
        assert _wait(lambda: feedback.sent == 1)
        stats = router.stats
        fds0, rss0 = _fds(), _rss_mb()
        base = stats.datagrams
        t0 = time.monotonic()
        window = 400  # datagrams in flight: loopback drops what overflows the server's buffer
        for i, dgram in enumerate(fuzz_datagrams(rng, n)):
            if high is not None and i % 97 == 0:
                sock = high  # the sender whose port + 1 does not exist, asking for status too
                if i % 2:
                    dgram = _s(b"/moodlane/status") + _s(b",")
            else:
                sock = senders[i % len(senders)]
            try:
                sock.sendto(dgram, server.address)
            except OSError:  # a datagram over the loopback's limit, or a full send buffer
                pass
            if i % 50 == 0:
                deadline = time.monotonic() + 0.05
                while i + 1 - (stats.datagrams - base) > window and time.monotonic() < deadline:
                    time.sleep(0.0005)
        sent_s = time.monotonic() - t0
        _wait(lambda: stats.datagrams - base >= n, timeout=3.0)
        last = -1
        while last != stats.datagrams:  # until the server's queue is empty
            last = stats.datagrams
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        arrived = stats.datagrams - base
        fds1, rss1 = _fds(), _rss_mb()

        assert server._thread.is_alive()
        senders[1].sendto(_normal_message("/moodlane/arousal", 0.3), server.address)
        assert _wait(lambda: abs(control.target().arousal - 0.3) < 1e-6)

        lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        fb_bound = feedback.burst + feedback.rate_hz * (time.monotonic() - t0) + 1
        with capsys.disabled():
            print(
                f"\nOSC fuzz: {n} datagrams sent in {sent_s:.1f} s, {arrived} arrived ({arrived / n:.1%}), "
                f"handled {arrived / elapsed:.0f}/s over {elapsed:.1f} s{note}\n"
                f"  fds {fds0} -> {fds1}, RSS {rss0:.1f} -> {rss1:.1f} MB, log lines {len(lines)}, "
                f"feedback sent {feedback.sent} (bound {fb_bound:.0f}), warned keys {len(stats.warned)}\n"
                f"  {stats.counters()}"
            )
        assert arrived > 0.5 * n  # what arrives is measured; most must
        assert fds1 - fds0 <= 5
        assert rss1 - rss0 <= 20
        assert len(stats.warned) <= stats.max_warned
        assert len(lines) < 100, [r.getMessage() for r in lines[:20]]
        assert feedback.sent <= fb_bound
        assert stats.feedback_limited > 0  # status requests were refused by the limit, not answered
        if high is not None:
            assert stats.port_overflow > 0
        assert stats.oversized > 0 and stats.malformed > 0 and stats.unknown > 0 and stats.lib_warnings > 0
    finally:
        for s in senders:
            s.close()
        if high is not None:
            high.close()
