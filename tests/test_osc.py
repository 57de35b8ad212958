"""OSC over real UDP loopback with a real python-osc client."""

import logging
import math
import os
import socket
import struct
import threading
import time

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from moodlane.daw_bridge.control import LiveControl
from moodlane.daw_bridge.osc import COUNTERS, Feedback, OscRouter, OscServer, OscStats
from moodlane.engine.emotion import Emotion


def wait_for(pred, timeout=2.0):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if pred():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def osc():
    control = LiveControl(tau_s=0.0)
    presets = []
    router = OscRouter(control, on_preset=lambda n: presets.append(n) or n == "tender")
    server = OscServer(router, "127.0.0.1", 0).start()
    client = SimpleUDPClient(*server.address)
    yield control, router, server, client, presets
    server.stop()


def test_binds_loopback_by_default(osc):
    assert osc[2].address[0] == "127.0.0.1"


def test_bipolar_and_normalised_addresses(osc):
    control, router, _, client, _ = osc
    client.send_message("/moodlane/valence", 0.5)
    client.send_message("/moodlane/n/arousal", 1.0)  # Reaper n/: 0..1
    assert wait_for(lambda: control.target() == Emotion(0.5, 1.0))
    client.send_message("/moodlane/n/va", [0.25, 0.5])
    assert wait_for(lambda: control.target() == Emotion(-0.5, 0.0))
    client.send_message("/moodlane/va", [-1, 1])  # ints are numbers too
    assert wait_for(lambda: control.target() == Emotion(-1.0, 1.0))


def test_transport_tempo_mode_prompt_preset(osc):
    control, router, _, client, presets = osc
    client.send_message("/moodlane/tempo", 96.5)
    client.send_message("/moodlane/play", [])
    client.send_message("/moodlane/mode", "audio")
    client.send_message("/moodlane/prompt", "lofi piano")
    client.send_message("/moodlane/preset", "tender")
    assert wait_for(
        lambda: control.playing and control.tempo == 96.5 and control.mode == "audio" and control.prompt == "lofi piano" and presets
    )
    client.send_message("/moodlane/stop", 0)  # a button release is not a stop
    client.send_message("/moodlane/status", [])
    time.sleep(0.05)
    assert control.playing
    client.send_message("/moodlane/stop", [])
    assert wait_for(lambda: not control.playing)


def test_bad_values_are_clamped_or_dropped_and_warned_once(osc, caplog):
    control, router, _, client, _ = osc
    caplog.set_level(logging.WARNING)
    client.send_message("/moodlane/valence", 0.1)
    assert wait_for(lambda: abs(control.target().valence - 0.1) < 1e-6)
    for bad in (math.nan, math.inf, "high", True):
        client.send_message("/moodlane/valence", bad)
    for x in (3.0, 5.0, 7.0):
        client.send_message("/moodlane/arousal", x)
    client.send_message("/moodlane/nowhere", 1.0)
    client.send_message("/moodlane/mode", "disco")
    client.send_message("/moodlane/preset", "unknown-name")
    assert wait_for(lambda: router.stats.clamped == 3 and router.stats.unknown == 1)
    assert wait_for(lambda: router.stats.dropped >= 6)
    assert control.target().valence == pytest.approx(0.1) and control.target().arousal == 1.0
    clamp_warnings = [r for r in caplog.records if "clamped" in r.getMessage()]
    assert len(clamp_warnings) == 1


def test_garbage_datagrams_never_stop_the_server(osc):
    control, router, server, client, _ = osc
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for junk in (b"", b"\x00" * 7, b"/moodlane/valence\x00\x00\x00,f\x00\x00\x01", b"#bundle\x00garbage", bytes(range(256))):
        s.sendto(junk, server.address)
    # a bundle timed far in the future must not stall the server (strict timing off)
    b = OscBundleBuilder(time.time() + 3600)
    m = OscMessageBuilder("/moodlane/valence")
    m.add_arg(-0.3)
    b.add_content(m.build())
    s.sendto(b.build().dgram, server.address)
    client.send_message("/moodlane/arousal", -0.7)
    assert wait_for(lambda: abs(control.target().arousal + 0.7) < 1e-6)
    assert control.target().valence == pytest.approx(-0.3)
    assert router.stats.dropped >= 2


def test_feedback_goes_to_sender_port_plus_one(osc):
    control, router, server, _, _ = osc
    got = []
    d = Dispatcher()
    d.map("/moodlane/status/*", lambda addr, *a: got.append((addr, a)))
    listener = BlockingOSCUDPServer(("127.0.0.1", 0), d)
    port = listener.server_address[1]
    threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", port - 1))
    m = OscMessageBuilder("/moodlane/valence")
    m.add_arg(0.25)
    sender.sendto(m.build().dgram, server.address)
    assert wait_for(lambda: router.last_sender is not None)
    fb = Feedback(router, rate_hz=5)
    assert fb.destination() == ("127.0.0.1", port)
    assert fb.send({"va": [0.25, 0.0], "tempo": 120.0})
    assert not fb.send({"va": [0.25, 0.0]})  # rate-limited
    assert wait_for(lambda: len(got) == 2)
    listener.shutdown()
    listener.server_close()
    sender.close()
    assert ("/moodlane/status/va", (0.25, 0.0)) in got
    assert fb.sent == router.stats.feedback_sent == 1
    fb.close()
    assert not fb.send({"va": [0.25, 0.0]}, force=True)  # closed: nothing more goes out


def fd_count():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_feedback_uses_one_socket_for_every_destination():
    router = OscRouter(LiveControl(tau_s=0.0))
    listeners = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    for s in listeners:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
    try:
        before = fd_count()
        fb = Feedback(router, rate_hz=1e6, burst=1e6)
        for i in range(200):
            port = listeners[i % 20].getsockname()[1]
            router.last_sender = ("127.0.0.1", port - 1)  # feedback goes to port + 1: each listener in turn
            assert fb.send({"n": i}, force=True)
        assert fd_count() - before == 1
        assert listeners[3].recvfrom(64)[0].startswith(b"/moodlane/status/n")
        fb.close()
        fb.close()  # twice is fine
        assert fd_count() == before
    finally:
        for s in listeners:
            s.close()


def test_forced_feedback_is_rate_limited_too():
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    router = OscRouter(LiveControl(tau_s=0.0))
    with Feedback(router, target=listener.getsockname(), rate_hz=20, burst=3) as fb:
        t0 = time.monotonic()
        tries = 0
        while time.monotonic() - t0 < 0.5:  # a flood of /moodlane/status requests
            fb.send({"tempo": 120.0}, force=True)
            tries += 1
        elapsed = time.monotonic() - t0
        assert fb.sent <= 3 + 20 * elapsed + 1
        assert fb.sent >= 5 and tries > 10 * fb.sent
        assert router.stats.feedback_limited == tries - fb.sent
        time.sleep(0.06)
        assert fb.send({"tempo": 120.0}, force=True)  # a token came back
    listener.close()


def test_feedback_errors_are_counted_never_raised(caplog):
    caplog.set_level(logging.WARNING)
    router = OscRouter(LiveControl(tau_s=0.0))
    stats = router.stats
    with pytest.raises(ValueError):
        Feedback(router, rate_hz=0)
    router.last_sender = ("127.0.0.1", 65535)  # AbletonOSC's port + 1 does not exist
    fb = Feedback(router, rate_hz=1000, burst=1000)
    assert fb.destination() is None
    assert not fb.send({"va": [0.0, 0.0]}, force=True)
    assert stats.port_overflow == 1 and stats.feedback_errors == 0
    for target in (("127.0.0.1", 70000), ("127.0.0.1", 0), ("bad\x00host", 9000)):
        fb.target = target
        assert not fb.send({"va": [0.0, 0.0]}, force=True)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    fb.target = listener.getsockname()
    assert not fb.send({"va": object()}, force=True)  # not an OSC type
    assert not fb.send({"big": 2**70}, force=True)
    assert stats.feedback_errors == 5 and fb.sent == 0
    assert fb.send({"va": [0.5, -0.5]}, force=True)
    fb.close()
    listener.close()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("OSC feedback to" in m for m in lines) == 1  # one line for five failures
    assert sum("has no port + 1" in m for m in lines) == 1


def test_warnings_stay_bounded(caplog):
    caplog.set_level(logging.WARNING)
    router = OscRouter(LiveControl(tau_s=0.0), on_preset=lambda name: False)
    for i in range(2000):
        m = OscMessageBuilder(f"/nowhere/{i}")
        router.dispatcher.call_handlers_for_packet(m.build().dgram, ("127.0.0.1", 5000))
        m = OscMessageBuilder("/moodlane/preset")
        m.add_arg(f"name-{i}")
        router.dispatcher.call_handlers_for_packet(m.build().dgram, ("127.0.0.1", 5000))
    stats = router.stats
    assert stats.unknown == 2000 and stats.dropped == 2000
    assert len(stats.warned) <= stats.warn_burst <= stats.max_warned
    lines = [r.getMessage() for r in caplog.records]
    assert sum("unknown address" in m for m in lines) == 1  # one key for all unknown addresses
    assert sum("unknown preset" in m for m in lines) == stats.warn_burst
    assert len(lines) == stats.warn_burst + 1
    assert stats.suppressed_warnings == 4000 - len(lines)


def test_warn_once_set_has_a_fixed_size(caplog):
    caplog.set_level(logging.WARNING)
    stats = OscStats(max_warned=5, warn_burst=1000)
    for i in range(100):
        stats.warn_once(("/moodlane/preset", f"p{i}"), "preset %s", i)
        stats.warn_once(("/moodlane/preset", f"p{i}"), "preset %s", i)
    assert len(stats.warned) == 5
    assert len(caplog.records) == 6  # five keys, then one shared, rate-limited line
    assert stats.suppressed_warnings == 200 - 6
    assert set(stats.counters()) == set(COUNTERS)


def test_python_osc_warnings_are_rate_limited_and_counted(osc, caplog):
    control, router, server, client, _ = osc
    caplog.set_level(logging.WARNING)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bad_tag = b"/moodlane/valence\x00\x00\x00,xf\x00" + struct.pack(">f", 0.25)  # 'x' is no OSC type
    bad_content = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"\x00\x00\x00\x04junk"
    for i in range(200):
        s.sendto(bad_tag if i % 2 else bad_content, server.address)
        if i % 50 == 49:
            wait_for(lambda n=i - 10: router.stats.datagrams > n)
    assert wait_for(lambda: router.stats.datagrams == 200)
    s.close()
    assert router.stats.lib_warnings == 200
    assert router.stats.received == 100  # python-osc skips the unknown type and reads the float
    assert control.target().valence == pytest.approx(0.25)
    lines = [r.getMessage() for r in caplog.records if r.name == "root"]
    assert len(lines) <= 2 and all(m.startswith("OSC (python-osc): ") for m in lines)


def test_datagrams_that_would_stall_python_osc_are_refused(osc):
    control, router, server, client, _ = osc
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # a bundle element of size -4: python-osc's parser steps back to the same size forever
    s.sendto(b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", -4), server.address)
    # an address pattern whose regex backtracks for hours
    s.sendto(b"/" + b"*" * 60 + b"x\x00\x00,\x00\x00\x00", server.address)
    nested = b"/moodlane/tempo\x00,f\x00\x00" + struct.pack(">f", 99.0)
    for _ in range(12):  # nested deeper than MAX_BUNDLE_DEPTH
        nested = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", len(nested)) + nested
    s.sendto(nested, server.address)
    s.sendto(b"/moodlane/valence\x00\x00\x00" + b"x" * 9000, server.address)  # over max_datagram
    s.close()
    client.send_message("/moodlane/arousal", 0.4)
    assert wait_for(lambda: abs(control.target().arousal - 0.4) < 1e-6, timeout=2.0)
    stats = router.stats
    assert stats.malformed == 2 and stats.unknown == 1 and stats.oversized == 1
    assert control.tempo == 120.0 and server._thread.is_alive()
    client.send_message("/moodlane/v*", 0.5)  # a simple pattern still matches
    assert wait_for(lambda: control.target().valence == 0.5)
