"""OSC over real UDP loopback with a real python-osc client."""

import logging
import math
import socket
import threading
import time

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from daw_bridge.control import LiveControl
from daw_bridge.osc import Feedback, OscRouter, OscServer
from engine.emotion import Emotion


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
    assert ("/moodlane/status/va", (0.25, 0.0)) in got
