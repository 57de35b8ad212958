"""MIDI control input, clocks, the live scheduler and the MIDI sink, on in-memory ports."""

import time

import mido
import numpy as np
import pytest

from daw_bridge.clock import Clock, MidiClock
from daw_bridge.control import LiveControl
from daw_bridge.live import LiveConfig, LiveScheduler, MidiSink, chunk_events
from daw_bridge.midi import CCMapping, MemoryPort, MidiControlInput, MidiOut
from engine.automation import EmotionCurve
from engine.emotion import Emotion
from engine.mock import MockGenerator
from engine.session import render


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def cc(control, value, channel=0):
    return mido.Message("control_change", channel=channel, control=control, value=value)


def test_smoothing_has_no_zipper_steps():
    t = FakeTime()
    c = LiveControl(tau_s=0.1, clock=t)
    c.set_arousal(1.0)
    t.t += 0.1
    assert c.current().arousal == pytest.approx(1 - np.exp(-1), abs=1e-6)
    t.t += 1.0
    assert c.current().arousal == pytest.approx(1.0, abs=1e-4)
    c.set_emotion(Emotion(-1, -1), immediate=True)
    assert c.current() == Emotion(-1, -1)


def test_cc_7bit_14bit_nrpn_and_learn():
    ctl = LiveControl(tau_s=0.0)
    inp = MidiControlInput(ctl)
    inp(cc(16, 127))
    inp(cc(17, 0))
    assert ctl.target() == Emotion(1.0, -1.0)
    inp(cc(16, 64))
    inp(cc(48, 0))  # LSB of CC 16: 14-bit value 8192
    assert ctl.target().valence == pytest.approx(2 * 8192 / 16383 - 1)
    for m in (cc(99, 64), cc(98, 1), cc(6, 127), cc(38, 127)):  # NRPN 8193 = arousal, 16383
        inp(m)
    assert ctl.target().arousal == pytest.approx(1.0)
    inp.learn("valence")
    inp(cc(74, 0))  # the next CC becomes valence
    assert inp.mapping.valence_cc == 74 and ctl.target().valence == -1.0
    inp(cc(74, 127))
    assert ctl.target().valence == 1.0


def test_garbage_and_sysex_are_ignored():
    ctl = LiveControl(tau_s=0.0)
    inp = MidiControlInput(ctl, CCMapping(channel=2))
    inp(mido.Message("sysex", data=[1, 2, 3] * 100))
    inp(mido.Message("note_on", note=60))
    inp(cc(16, 127, channel=5))  # other channel
    inp(object())  # not even a message
    assert ctl.target() == Emotion(0, 0) and inp.ignored >= 3


def test_midi_clock_tempo_transport_and_song_position():
    t = FakeTime()
    clk = MidiClock(now=t)
    inp = MidiControlInput(LiveControl(), clock=clk)
    inp(mido.Message("start"))
    for _ in range(48):  # two beats at 100 BPM: a tick every 60/100/24 s
        t.t += 60 / 100 / 24
        inp(mido.Message("clock"))
    assert clk.tempo == pytest.approx(100, rel=1e-6) and clk.running
    assert clk.beat() == pytest.approx(2.0)
    t.t += 0.3  # between ticks the position runs on at the tempo
    assert clk.beat() == pytest.approx(2.5)
    inp(mido.Message("stop"))
    assert not clk.running
    inp(mido.Message("songpos", pos=16))  # 16 sixteenths = beat 4
    inp(mido.Message("continue"))
    assert clk.beat() == pytest.approx(4.0)


def test_internal_clock_tempo_change_keeps_position():
    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    t.t += 1.0
    assert clk.beat() == pytest.approx(2.0)
    clk.set_tempo(60)
    t.t += 1.0
    assert clk.beat() == pytest.approx(3.0)
    assert clk.time_of(4.0) == pytest.approx(t.t + 1.0)


def test_live_equals_offline_for_the_same_automation_and_seed():
    curve = EmotionCurve.from_points([(0.0, Emotion(-0.6, -0.6)), (24.0, Emotion(0.6, 0.6))])
    offline, chunks = render(MockGenerator(), curve, 6, seed=11, qpm=120)
    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    sched = LiveScheduler(MockGenerator(), curve, clk, [], seed=11, config=LiveConfig(lookahead_beats=4))
    while len(sched.generated) < 6:
        sched.step()
        t.t += 0.25
    live = list(sched.generated)[:6]
    assert [c.emotion for c in live] == [c.emotion for c in chunks]
    for a, b in zip(live, chunks):
        np.testing.assert_array_equal(a.notes.pitch, b.notes.pitch)
        np.testing.assert_array_equal(a.notes.start, b.notes.start)


def test_control_change_regenerates_queued_bars():
    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    ctl = LiveControl(tau_s=0.0, clock=t)
    ctl.set_emotion(Emotion(0, -1), immediate=True)
    sched = LiveScheduler(MockGenerator(), ctl, clk, [], config=LiveConfig(lookahead_beats=8))
    sched.step()
    assert len(sched.generated) == 2 and sched.session.beat == 8
    t.t += 0.5  # one beat in: bar 0 sounds, bar 1 is queued
    ctl.set_arousal(1.0)
    sched.step()
    assert sched.regenerations == 1
    remade = [c for c in list(sched.generated)[2:] if c.bar == 1]
    assert len(remade) == 1 and remade[0].emotion.arousal == 1.0
    assert sched.generated[0].emotion.arousal == -1.0  # the sounding bar is kept


def test_midi_sink_plays_on_time_closes_every_note_and_panics():
    port = MemoryPort()
    clk = Clock(480)  # fast, so a second holds 8 bars
    ctl = LiveControl(tau_s=0.0)
    sink = MidiSink(MidiOut(port), clk, ctl, LiveConfig(lookahead_beats=4)).start()
    sched = LiveScheduler(MockGenerator(), ctl, clk, [sink.queue], config=LiveConfig(lookahead_beats=4)).start()
    clk.start()
    time.sleep(1.0)
    sched.stop()
    sink.stop()
    ons = [m for m in port.sent if m.type == "note_on"]
    offs = [m for m in port.sent if m.type == "note_off"]
    assert len(ons) >= 15  # 2 bars of 10 notes at 480 BPM
    assert len(offs) == len(ons)  # every note-on got its note-off (the last via panic)
    assert port.sent[-1].type == "control_change" and port.sent[-1].control == 123
    err = np.array(sink.timing_error_ms)
    assert np.percentile(err, 50) < 5.0


def test_expression_scales_velocity_at_once():
    port = MemoryPort()
    t = FakeTime()
    ctl = LiveControl(tau_s=0.0, clock=t)
    out = MidiOut(port)
    sink = MidiSink(out, Clock(120, now=t), ctl)
    chunk, _ = MockGenerator().generate_chunk(MockGenerator().init_state(0), Emotion(0, 0))
    ev = [e for e in chunk_events(chunk, 0.0) if e.kind][0]
    base = sink._expression(ev)
    ctl.set_arousal(1.0)
    assert sink._expression(ev) > base * 1.5
    ctl.set_arousal(-1.0)
    assert sink._expression(ev) < base / 1.5


def test_link_clock_follows_the_link_session(monkeypatch):
    """LinkClock against a stand-in for aalink (a real Link session would multicast on
    the network, which tests must not do)."""
    import sys
    import types

    from daw_bridge.clock import LinkClock

    class FakeLink:
        def __init__(self, bpm, loop):
            self.tempo, self.quantum, self.enabled, self.num_peers = bpm, 4, False, 1
            self.t0 = time.monotonic()

        @property
        def beat(self):
            return (time.monotonic() - self.t0) * self.tempo / 60.0

    monkeypatch.setitem(sys.modules, "aalink", types.SimpleNamespace(Link=FakeLink))
    clk = LinkClock(100.0)
    try:
        assert clk.link.enabled and clk.peers == 1
        clk.start()
        time.sleep(0.1)
        b = clk.beat()
        assert b == pytest.approx(clk.link.beat, abs=0.05)
        clk.set_tempo(150.0)
        time.sleep(0.05)
        assert clk.tempo == 150.0
        assert clk.time_of(clk.beat() + 1.0) - time.monotonic() == pytest.approx(0.4, abs=0.05)
    finally:
        clk.close()


def test_link_clock_says_what_is_missing(monkeypatch):
    import sys

    from daw_bridge.clock import ClockUnavailable, LinkClock

    monkeypatch.setitem(sys.modules, "aalink", None)
    with pytest.raises(ClockUnavailable, match="pip install aalink"):
        LinkClock()
