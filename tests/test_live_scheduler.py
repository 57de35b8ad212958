"""The live scheduler with the shipped model: live equals offline through a rollback;
commands cross threads through a queue; a generator that falls behind skips instead of
bursting; sinks survive their own errors; queues stay bounded; the emotion map follows the
session's tempo."""

import numpy as np
import pytest

from moodlane.daw_bridge.clock import Clock
from moodlane.daw_bridge.control import LiveControl
from moodlane.daw_bridge.live import EventQueue, LiveConfig, LiveScheduler, MidiSink, NoteEvent
from moodlane.daw_bridge.midi import MemoryPort, MidiOut
from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.mock import MockGenerator
from moodlane.engine.session import render


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def shipped():
    import torch

    from moodlane.engine.symbolic.generator import SymbolicGenerator

    torch.set_num_threads(1)
    return SymbolicGenerator.load(precision="fp32")


def test_live_equals_offline_with_the_shipped_model_through_a_rollback(shipped):
    """Bars 0-1 made for (-0.6, -0.6); the lane jumps while bar 1 sounds; the queued bars
    are rolled back and remade. The result is the offline bounce of the same change."""
    sad, happy = Emotion(-0.6, -0.6), Emotion(0.6, 0.6)
    curve = EmotionCurve.from_points([(0.0, sad), (7.999, sad), (8.0, happy)])
    offline, chunks = render(shipped, curve, 5, seed=3, qpm=120)

    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    ctl = LiveControl(tau_s=0.0, clock=t)
    ctl.set_emotion(sad, immediate=True)
    sched = LiveScheduler(shipped, ctl, clk, [], seed=3, config=LiveConfig(lookahead_beats=10))
    sched.step()
    assert [c.emotion for c in sched.generated] == [sad, sad, sad]  # bars 0-2 ahead of the play head
    t.t += 2.5  # beat 5: bar 1 sounds, bar 2 is queued
    ctl.set_emotion(happy)
    t.t += 0.05  # the lane settles (debounce)
    sched.step()
    assert sched.regenerations == 1
    while sched.session.beat < 20:
        t.t += 0.5
        sched.step()
    live = {c.bar: c for c in sched.generated}  # the last version of each bar
    assert [live[b].emotion for b in range(5)] == [c.emotion for c in chunks]
    for b, c in enumerate(chunks):
        assert live[b].tokens == c.tokens, f"bar {b} differs"


def test_commands_run_on_the_scheduler_thread():
    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    sched = LiveScheduler(MockGenerator(), EmotionCurve.constant(Emotion(0, 0)), clk, [], config=LiveConfig(lookahead_beats=4))
    sched.step()
    assert sched.session.beat == 4
    sched.reset(16.0)  # posted from another thread: nothing changes until the scheduler's pass
    assert sched.session.beat == 4
    t.t += 8.0  # beat 16
    sched.step()
    assert sched.session.beat == 20 and sched.history[-1].start == 16 and sched.history[-1].bar == 0


def test_a_generator_that_falls_behind_skips_chunks():
    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    sched = LiveScheduler(MockGenerator(), EmotionCurve.constant(Emotion(0, 0)), clk, [], config=LiveConfig(lookahead_beats=2))
    sched.step()
    t.t += 4.5  # beat 9: bar 1 (beats 4-8) was never made in time
    sched.step()
    assert sched.skipped == 1
    assert [m.start for m in sched.history] == [8.0]  # bar 2 plays from where the play head is


def test_late_note_ons_are_dropped_not_burst():
    port = MemoryPort()
    t = FakeTime()
    clk = Clock(120, now=t)
    sink = MidiSink(MidiOut(port), clk, None, LiveConfig())
    sink.queue.push([NoteEvent(0.0, 1, 1, 60, 100, 0, 0.0), NoteEvent(0.5, 2, 0, 60, 0, 0, 0.0)])
    clk.start()
    t.t += 2.0  # both events are a second late
    stop = type("S", (), {"n": 0, "is_set": lambda self: setattr(self, "n", self.n + 1) or self.n > 3})()
    import moodlane.daw_bridge.live as live

    real = live.time.monotonic
    live.time.monotonic = t  # the sink's own clock
    try:
        sink._loop(stop)
    finally:
        live.time.monotonic = real
    assert sink.late_dropped == 1 and port.sent == []  # the note-on went, its off had nothing to close


def test_a_failing_port_does_not_kill_the_sink():
    class Flaky(MemoryPort):
        fails = 1

        def send(self, msg):
            if msg.type == "note_on" and self.fails:
                self.fails -= 1
                raise OSError("port went away")
            super().send(msg)

    from tests.test_midi_live import play_live

    port = Flaky()
    sink = play_live(port)
    assert sink.errors == 1 and "port went away" in sink.worker.last_error
    assert sum(m.type == "note_on" for m in port.sent) >= 10  # it restarted and went on


def test_event_queue_is_bounded():
    q = EventQueue(maxlen=10)
    q.push([NoteEvent(float(i), i, 1, 60, 100, 0, 0.0) for i in range(25)])
    assert len(q) == 10 and q.overflow == 15
    assert q.peek().beat == 15.0  # the oldest went


def test_emotion_map_keeps_notes_per_second_at_any_tempo():
    from moodlane.engine.symbolic.attributes import rank_to_value
    from moodlane.engine.symbolic.emotion_map import EmotionMap
    from moodlane.engine.symbolic.generator import DEFAULT_MAP

    m = EmotionMap.load(DEFAULT_MAP)
    j = m.attributes.index("note_density")
    edges = m.timed["note_density"]["edges"]
    e = Emotion(0.3, 0.0)  # a point whose density sits inside the distribution at both tempos
    at = {bpm: rank_to_value(m.ranks(e, tempo=bpm)[j], edges) for bpm in (100.0, 120.0)}
    assert at[100.0] / at[120.0] == pytest.approx(1.2, rel=0.02)  # notes per beat x tempo = notes per second, kept
    own = m.ranks(e)
    np.testing.assert_array_equal(m.ranks(e, tempo=m.tempo(e)), own)  # at its own tempo: EmoGen's map unchanged
    for v in (-0.8, 0.0, 0.8):  # at a fixed tempo, density asked for rises with arousal
        asked = [m.ranks(Emotion(v, a), tempo=120.0)[j] for a in (-1, -0.5, 0, 0.5, 1)]
        assert np.all(np.diff(asked) >= 0), (v, asked)


def test_shipped_model_plays_denser_with_arousal_at_a_fixed_tempo(shipped):
    """The issue's complaint, offline: at 120 BPM, arousal +1 must play at least 1.6x the
    notes of arousal -1 (the eval's density sweep measures every step; this is the ends)."""
    count = {
        a: sum(len(render(shipped, EmotionCurve.constant(Emotion(0.3, a)), 4, seed=s, qpm=120)[0]) for s in (1, 2)) for a in (-1.0, 1.0)
    }
    assert count[1.0] >= 1.6 * count[-1.0], count


def test_a_position_jump_while_running_replaces_the_music():
    """Slaved to MIDI clock, a Song Position Pointer while running (a DAW loop) moves the
    play head; serve resets the scheduler to the bar the play head is in."""
    import time

    from moodlane.daw_bridge.serve import ServeOptions, Server

    opts = ServeOptions(osc_port=0, midi=False, mode="midi", clock="midi", status_line=False, lookahead_beats=2.0)
    srv = Server(opts, MockGenerator()).start()
    try:
        clk = srv.clock
        t = time.monotonic() - 100 * 0.025
        clk.on_message("start", t=t)
        for i in range(100):  # 4 beats and a bit at 100 BPM, ending now
            clk.on_message("clock", t=t + i * 0.025)
        srv._transport()
        wait = time.monotonic() + 2.0
        while time.monotonic() < wait and not srv.scheduler.history:
            time.sleep(0.01)
        assert srv.scheduler.history[0].start == 4.0  # the bar the play head is in
        clk.on_message("songpos", pos=32)  # jump to beat 8 (SPP counts 16ths)
        clk.on_message("clock")
        srv._transport()
        wait = time.monotonic() + 2.0
        while time.monotonic() < wait and (not srv.scheduler.history or srv.scheduler.history[0].start != 8.0):
            time.sleep(0.01)
        assert srv.scheduler.history[0].start == 8.0
    finally:
        srv.stop()


class RecordingSink:
    read_ahead_s = 0.01

    def __init__(self):
        self.scheduled, self.cancelled = [], []

    def schedule(self, chunk, start_beat, version=0):
        self.scheduled.append((chunk.bar, chunk.emotion, chunk.beats))

    def cancel_from(self, chunk):
        self.cancelled.append(chunk)

    def clear(self):
        pass


def test_audio_engines_get_short_chunks_and_a_lane_change_remakes_the_one_playing():
    """Audio: one-beat chunks (LiveConfig.audio_chunk_beats); a lane change remakes even the
    chunk that sounds (the audio sink splices it in), and nothing is cancelled first, so the
    sink never falls silent while the remake is made."""
    from moodlane.engine.mock import MockAudioGenerator

    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    ctl = LiveControl(tau_s=0.0, clock=t)
    calm, wild = Emotion(0, -0.8), Emotion(0, 0.8)
    ctl.set_emotion(calm, immediate=True)
    sink = RecordingSink()
    sched = LiveScheduler(MockAudioGenerator(), ctl, clk, [sink], config=LiveConfig(lookahead_beats=2))
    sched.step()
    assert [(b, e, beats) for b, e, beats in sink.scheduled] == [(0, calm, 1.0), (1, calm, 1.0)]
    t.t += 0.8  # beat 1.6: chunk 1 (beats 1-2) sounds; chunks 2 and 3 are made
    sched.step()
    made = len(sink.scheduled)
    ctl.set_emotion(wild)
    t.t += 0.05  # the lane settles (debounce); chunk 1 still has ~0.15 s to play
    sched.step()
    assert sched.regenerations == 1 and sink.cancelled == []
    remade = [(b, e) for b, e, _ in sink.scheduled[made:]]
    assert remade == [(1, wild), (2, wild), (3, wild)]  # the chunk that plays is remade first, then the ones after it


def test_serve_starts_with_the_prompt_it_was_given_and_makes_chunks_with_it():
    from moodlane.daw_bridge.serve import ServeOptions, Server
    from moodlane.engine.mock import MockAudioGenerator

    srv = Server(ServeOptions(prompt="warm strings", mode="audio", midi=False), MockAudioGenerator())
    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    sink = RecordingSink()
    seen = []
    gen = MockAudioGenerator()
    make = gen.generate_chunk
    gen.generate_chunk = lambda state, c: (seen.append(c.prompt), make(state, c))[1]
    LiveScheduler(gen, srv.control, clk, [sink]).step()
    assert srv.control.prompt == "warm strings" and seen and set(seen) == {"warm strings"}


def test_live_audio_chunks_equal_the_offline_ones():
    """An audio engine makes the same chunks live as offline for the same seed and lanes:
    both use one chunk length (engine.chunk.AUDIO_CHUNK_BEATS), so chunk k has the same
    start, conditions and seed either way."""
    from moodlane.engine.chunk import AUDIO_CHUNK_BEATS
    from moodlane.engine.session import render_chunks
    from tests.test_lara import tiny_generator

    gen = tiny_generator(seed=1)
    calm, up = Emotion(-0.5, -0.5), Emotion(0.5, 0.8)
    curve = EmotionCurve.from_points([(0.0, calm), (2.999, calm), (3.0, up)])
    offline, _ = render_chunks(gen, curve, 6.0, seed=4, qpm=120)
    assert [c.beats for c in offline] == [AUDIO_CHUNK_BEATS] * 6

    t = FakeTime()
    clk = Clock(120, now=t)
    clk.start()
    sched = LiveScheduler(gen, curve, clk, [], seed=4, config=LiveConfig(lookahead_beats=8))
    sched.step()
    live = {c.bar: c for c in sched.generated}
    assert len(live) >= 6
    for k, c in enumerate(offline):
        assert live[k].emotion == c.emotion and live[k].beats == c.beats
        assert np.array_equal(live[k].audio.pcm, c.audio.pcm), f"chunk {k} differs"
