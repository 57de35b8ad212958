"""`moodlane serve` with real parts: OSC over UDP loopback, MIDI through virtual ports on a
JACK server (dummy driver), audio through sounddevice on the same server."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from moodlane.daw_bridge.bench import FLOOD_SCRIPT, count_notes_per_arousal, udp_drops
from moodlane.daw_bridge.bench import _rss_mb as rss_mb
from moodlane.daw_bridge.jack import JACK_MIDI as JACK
from moodlane.daw_bridge.jack import connect, connections, find_port, ports
from moodlane.daw_bridge.midi import MidiMonitor as Collector
from moodlane.daw_bridge.osc import free_udp_port
from moodlane.daw_bridge.serve import ServeOptions, Server
from moodlane.engine.emotion import Emotion
from moodlane.engine.mock import MockGenerator


@pytest.fixture
def backend(jack_server):
    import mido

    return mido.Backend(JACK, load=True)


free_port = free_udp_port


def wait_for(condition, seconds: float):
    """Polls `condition` until it is truthy or `seconds` pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


@pytest.fixture
def server(backend):
    opts = ServeOptions(
        osc_port=free_port(), midi_backend=JACK, mode="both", tempo=240.0, smooth_s=0.05, status_line=False, lookahead_beats=2.0
    )
    srv = Server(opts, MockGenerator()).start()
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    yield srv
    srv.stop()
    t.join(timeout=5)


def test_osc_sweep_changes_notes_on_a_connected_port(server, backend):
    assert not server.unavailable, server.unavailable
    col = Collector()
    mon = backend.open_input("Monitor A", virtual=True, callback=col)
    try:
        connect("MoodLane Out", "Monitor A")
        client = SimpleUDPClient("127.0.0.1", server.opts.osc_port)
        windows = {}
        for arousal in (-1.0, 1.0):
            client.send_message("/moodlane/arousal", arousal)
            time.sleep(1.2)  # let the change reach the next bars
            t0 = time.monotonic()
            time.sleep(2.0)
            windows[arousal] = [m for _, m in col.note_ons(t0, time.monotonic())]
        low, high = windows[-1.0], windows[1.0]
        assert len(high) > 1.5 * len(low) > 0  # denser
        assert np.mean([m.velocity for m in high]) > np.mean([m.velocity for m in low]) + 20  # louder
    finally:
        mon.close()


def test_cc_lane_on_moodlane_in(server, backend):
    import mido

    out = backend.open_output("CC Sender", virtual=True)
    col = Collector()
    mon = backend.open_input("Monitor E", virtual=True, callback=col)
    try:
        connect("CC Sender", "MoodLane In")
        connect("MoodLane Out", "Monitor E")
        time.sleep(0.2)
        out.send(mido.Message("control_change", control=17, value=127))
        out.send(mido.Message("control_change", control=16, value=0))
        t = time.monotonic() + 2
        while time.monotonic() < t and server.control.target() != Emotion(-1.0, 1.0):
            time.sleep(0.01)
        assert server.control.target() == Emotion(-1.0, 1.0)
        time.sleep(1.2)
        t0 = time.monotonic()
        time.sleep(2.0)
        high = [m for _, m in col.note_ons(t0, time.monotonic())]
        out.send(mido.Message("sysex", data=[0x7D] + [1] * 200))  # garbage for us: ignored
        out.send(mido.Message("control_change", control=17, value=0))
        time.sleep(0.3)
        assert server.control.target().arousal == -1.0
        time.sleep(0.9)
        t0 = time.monotonic()
        time.sleep(2.0)
        low = [m for _, m in col.note_ons(t0, time.monotonic())]
        # the CC lane steers the notes as the OSC sweep does: denser and louder when up
        assert len(high) > 1.5 * len(low) > 0
        assert np.mean([m.velocity for m in high]) > np.mean([m.velocity for m in low]) + 20
    finally:
        out.close()
        mon.close()


def graph_of() -> dict[str, list[str]]:
    """`jack_lsp -c` as port -> the ports it is connected to."""
    out: dict[str, list[str]] = {}
    port = ""
    for line in connections().splitlines():
        if line.startswith(" "):
            out[port].append(line.strip())
        else:
            port = line.strip()
            out[port] = []
    return out


MONITOR_SCRIPT = """
import sys, time, mido
port = mido.Backend(sys.argv[2], load=True).open_input(sys.argv[1], virtual=True)
print("ready", flush=True)
for msg in port:
    if msg.type == "note_on" and msg.velocity > 0:
        print(time.monotonic(), msg.velocity, flush=True)
"""


class ProcessMonitor:
    """A MIDI input port in a process of its own that reports each note-on (monotonic time,
    velocity): the listener is a fresh JACK client, as a DAW's would be, not one of the many
    this test process opens and closes."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", MONITOR_SCRIPT, name, JACK], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.notes: list[tuple[float, int]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t, v = line.split()
            self.notes.append((float(t), int(v)))

    def note_ons(self, t0: float = 0.0, t1: float = float("inf")) -> list[tuple[float, int]]:
        return [n for n in list(self.notes) if t0 <= n[0] < t1]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


class PortRecorder:
    """Records what arrives at a JACK audio input of this process (PortAudio's in_0/in_1),
    wired to our own output ports instead of the dummy capture: the test hears the stream
    where a DAW would, on the JACK graph."""

    def __init__(self, sample_rate: int = 48000) -> None:
        import sounddevice as sd

        self.blocks: list[tuple[float, np.ndarray]] = []
        before = set(ports())
        self.stream = sd.InputStream(samplerate=sample_rate, channels=2, blocksize=512, callback=self._cb)
        self.stream.start()
        self.sample_rate = sample_rate
        ins = sorted(p for p in wait_for(lambda: set(ports()) - before, 5.0) if ":in_" in p)
        client = ins[0].split(":")[0]  # this process's PortAudio client (others may run beside it)
        outs = sorted(p for p in ports() if p.startswith(f"{client}:out_"))  # numbered on from earlier streams
        assert len(outs) == 2 and len(ins) == 2, (outs, ins)
        for o, i in zip(outs, ins):
            for other in graph_of().get(i, []):  # the dummy capture PortAudio connects by default
                subprocess.run(["jack_disconnect", other, i], capture_output=True)
            ok = wait_for(lambda o=o, i=i: subprocess.run(["jack_connect", o, i], capture_output=True).returncode == 0, 5.0)
            assert ok, f"cannot connect {o} to {i}: {ports()}"
        self.link = (outs[0], ins[0])
        self.client = client

    def _cb(self, indata, frames, time_info, status) -> None:
        self.blocks.append((time.monotonic(), indata[:, 0].copy()))

    def between(self, t0: float, t1: float) -> np.ndarray:
        parts = [b for t, b in list(self.blocks) if t0 <= t < t1]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


def rms(x: np.ndarray) -> float:
    return float(np.sqrt((x**2).mean())) if len(x) else 0.0


def test_audio_flows_to_a_jack_port_without_underruns(server):
    assert server.audio is not None, server.unavailable
    rec = PortRecorder()
    try:
        time.sleep(1.0)
        under0, blocks0, t0 = server.audio.underruns, server.audio.blocks, time.monotonic()
        time.sleep(2.0)
        heard = rec.between(t0, time.monotonic())
        graph = graph_of()
    finally:
        rec.close()
    blocks = server.audio.blocks - blocks0
    assert blocks > 150  # 48000/512 blocks a second
    # a lone underrun in ~190 callbacks happens when the 2 cores are busy elsewhere (seen once
    # in a clean-clone run); a stream that cannot keep up misses many
    assert server.audio.underruns - under0 <= 1 and server.audio.errors == 0, (server.audio.underruns - under0, blocks)
    assert len(heard) > 48000 and rms(heard) > 0.001  # real, non-silent audio at a JACK port
    assert rec.link[0] in graph[rec.link[1]]  # heard through the JACK graph
    # what the web page shows of it: the notes played and the stream's level and spectrum
    since: dict = {}
    first = server.activity(since)
    assert first["notes"] and 0 < since["midi"] <= server.midi_sink.played.seq
    assert -60 < first["audio"]["rms_db"] <= first["audio"]["peak_db"] <= 0.0
    assert len(first["audio"]["bands"]) == 48 and max(first["audio"]["bands"]) > -80
    time.sleep(0.5)
    second = server.activity(since)
    assert second["notes"] and all(n[0] > first["notes"][-1][0] for n in second["notes"])  # only what is new


@pytest.mark.slow
def test_mock_audio_engine_streams_to_a_jack_port(backend):
    """`serve --engine mock-audio --mode audio`: audio chunks through the same Session,
    scheduler and audio sink; arousal is heard in loudness and pulse rate."""
    from moodlane.engine.mock import MockAudioGenerator
    from tests.test_audio_chunks import pulse_rate_hz

    opts = ServeOptions(
        osc_port=free_port(), midi=False, mode="audio", tempo=120.0, smooth_s=0.05, status_line=False, emotion=Emotion(0, -1)
    )
    srv = Server(opts, MockAudioGenerator()).start()
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    rec = PortRecorder()
    try:
        client = SimpleUDPClient("127.0.0.1", opts.osc_port)
        heard = {}
        time.sleep(0.5)  # the streams' own start (PortAudio reports an underflow there)
        under0 = srv.audio.underruns
        for a in (-1.0, 1.0):
            client.send_message("/moodlane/arousal", a)
            time.sleep(2.5)  # the next chunk boundary (a bar is 2 s) and a margin
            t0 = time.monotonic()
            time.sleep(2.0)
            heard[a] = rec.between(t0, time.monotonic())
        under = srv.audio.underruns - under0
    finally:
        rec.close()
        srv.stop()
        t.join(timeout=5)
    assert srv.audio is not None and srv.audio.synth is None  # PCM only, no SoundFont needed
    assert rms(heard[1.0]) > 3 * rms(heard[-1.0]) > 0
    calm, wild = pulse_rate_hz(heard[-1.0], 48000), pulse_rate_hz(heard[1.0], 48000)
    assert calm == pytest.approx(2.0, abs=0.6) and wild == pytest.approx(8.0, abs=1.0), (calm, wild)  # 1 and 4 pulses a beat at 120 BPM
    assert srv.counters()["sink_errors"] == 0, srv.counters()
    assert under <= 1, under  # while measuring (2 cores shared with the test's own recorder)


@pytest.mark.slow
@pytest.mark.parametrize("lm_backend", ["onnx", "torch"])
def test_lara_gen_streams_to_a_jack_port_and_follows_lanes_and_prompt(backend, lm_backend, request):
    """`serve --engine audio`: the shipped LARA-Gen through the same Session, scheduler and
    audio sink as every engine, on 2 cores at the default settings, on onnxruntime (what
    the set-up makes the default) and on PyTorch (the fallback). After the start, no
    underrun; an arousal change and a /moodlane/prompt reach the next chunk made."""
    from moodlane.engine.registry import GeneratorOptions, load_generator

    onnx_dir = str(request.getfixturevalue("shipped_onnx")) if lm_backend == "onnx" else None
    gen = load_generator(GeneratorOptions(engine="audio", backend=lm_backend, onnx_dir=onnx_dir))
    assert gen.lm.name == lm_backend
    made: list[tuple[float, object]] = []  # (when the generator was asked, its conditions)
    generate = gen.generate_chunk
    gen.generate_chunk = lambda state, c: (made.append((time.monotonic(), c)), generate(state, c))[1]
    opts = ServeOptions(osc_port=free_port(), midi=False, mode="audio", tempo=120.0, status_line=False, emotion=Emotion(-0.5, -0.8))
    srv = Server(opts, gen).start()
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    rec = PortRecorder()
    try:
        client = SimpleUDPClient("127.0.0.1", opts.osc_port)
        assert wait_for(lambda: srv.scheduler.generated, 10.0)  # the first chunk (time to first audio)
        time.sleep(1.0)  # the streams' own start (PortAudio reports an underflow there)
        under0, t0 = srv.audio.underruns, time.monotonic()
        t_arousal = time.monotonic()
        client.send_message("/moodlane/arousal", 0.9)
        time.sleep(2.5)
        t_prompt = time.monotonic()
        client.send_message("/moodlane/prompt", "strings ensemble")
        time.sleep(3.0)
        heard = rec.between(t0, time.monotonic())
        under = srv.audio.underruns - under0
    finally:
        rec.close()
        srv.stop()
        t.join(timeout=5)
    assert srv.scheduler.error is None and srv.counters()["sink_errors"] == 0 and srv.audio.errors == 0
    assert under <= 1, f"{under} underruns after the start"  # a lone one: the 2 cores were busy elsewhere (seen in a loop of runs)
    assert len(heard) > 5 * 48000 and rms(heard) > 0.001  # ~6 s of real, non-silent audio at a JACK port
    after = [c for when, c in made if when > t_arousal + 0.1]
    assert after and after[0].emotion.arousal > -0.6  # the next chunk made (the remake of the one playing) moves ...
    assert all(c.emotion.arousal > 0.8 for when, c in made if when > t_arousal + 1.5)  # ... as the smoothed lane does
    after = [c for when, c in made if when > t_prompt + 0.1]
    assert after and all(c.prompt == "strings ensemble" for c in after)
    assert all(c.prompt != "strings ensemble" for when, c in made if when < t_prompt)


def test_stop_silences_everything(server, backend):
    col = Collector()
    mon = backend.open_input("Monitor B", virtual=True, callback=col)
    try:
        connect("MoodLane Out", "Monitor B")
        time.sleep(1.0)
        SimpleUDPClient("127.0.0.1", server.opts.osc_port).send_message("/moodlane/stop", [])
        time.sleep(0.5)
        msgs = [m for _, m in col.messages]
        assert any(m.type == "control_change" and m.control == 123 for m in msgs)
        on = sum(1 for m in msgs if m.type == "note_on" and m.velocity > 0)
        off = sum(1 for m in msgs if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0))
        assert on > 0 and off >= on
        n = len(col.messages)
        time.sleep(0.5)
        assert all(m.type != "note_on" for _, m in col.messages[n:])
    finally:
        mon.close()


def test_mode_switches_the_outputs_live(server, backend):
    col = Collector()
    mon = backend.open_input("Monitor M", virtual=True, callback=col)
    try:
        connect("MoodLane Out", "Monitor M")
        client = SimpleUDPClient("127.0.0.1", server.opts.osc_port)
        assert wait_for(col.note_ons, 3.0), "notes before the switch"
        client.send_message("/moodlane/mode", "audio")
        assert wait_for(lambda: server.scheduler.sinks == [server.audio], 2.0), server.scheduler.sinks
        rec = PortRecorder()
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            time.sleep(1.0)
            heard = rec.between(t0, time.monotonic())
        finally:
            rec.close()
        assert col.note_ons(t0) == [] and rms(heard) > 0.001  # MIDI silent, notes heard on the audio port
        client.send_message("/moodlane/mode", "midi")
        assert wait_for(lambda: server.scheduler.sinks == [server.midi_sink], 2.0)
        assert wait_for(lambda: col.note_ons(time.monotonic() - 0.5), 3.0), "notes again"
        assert server.status()["mode"] == "midi"
    finally:
        mon.close()


@pytest.mark.slow
def test_flood_of_10k_messages_per_second_for_30s(server, backend):
    col = Collector()
    mon = backend.open_input("Monitor C", virtual=True, callback=col)
    try:
        connect("MoodLane Out", "Monitor C")
        seconds = float(os.environ.get("MOODLANE_FLOOD_SECONDS", "30"))
        time.sleep(1.0)
        rss0 = rss_mb()
        received0, drops0 = server.osc.router.stats.received, udp_drops(server.opts.osc_port)
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-c", FLOOD_SCRIPT, str(server.opts.osc_port), "10000", str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        t1 = time.monotonic()
        sent = int(r.stdout.strip())
        time.sleep(0.5)  # what is still in the socket buffer
        rss1 = rss_mb()
        received = server.osc.router.stats.received - received0
        dropped = udp_drops(server.opts.osc_port) - drops0
        notes = col.note_ons(t0, t1)
        # output keeps going: notes arrive in every second of the flood
        per_second = np.bincount([int(t - t0) for t, m in col.messages if t0 <= t < t1 and m.type == "note_on"], minlength=int(seconds))
        assert sent >= 0.9 * 10000 * seconds
        # every datagram that reached the socket was handled; the kernel counts the rest
        assert received + dropped == sent, (sent, received, dropped)
        assert received > 0.25 * sent
        assert rss1 - rss0 < 30, (rss0, rss1)
        assert len(notes) > 10 * seconds and per_second[: int(seconds)].min() > 0, per_second
        assert server.scheduler.error is None
    finally:
        mon.close()


@pytest.mark.slow
def test_moodlane_serve_command_with_the_shipped_model(jack_server, backend):
    """The Done-when: `moodlane serve` starts, an OSC sweep changes the notes on a port
    connected to MoodLane Out, and status comes back over OSC."""
    port, fb_port = free_port(), free_port()
    status = []
    d = Dispatcher()
    d.map("/moodlane/status/va", lambda addr, *a: status.append(a))
    last: dict = {}
    d.map("/moodlane/status/*", lambda addr, *a: last.__setitem__(addr.rsplit("/", 1)[1], a))
    listener = BlockingOSCUDPServer(("127.0.0.1", fb_port), d)
    threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    env = dict(os.environ, MOODLANE_MIDI_BACKEND=JACK)
    before = ports()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moodlane.daw_bridge.cli",
            "serve",
            "--port",
            str(port),
            "--feedback",
            f"127.0.0.1:{fb_port}",
            "--tempo",
            "150",
            "--arousal",
            "-1",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    col = ProcessMonitor("Monitor D")  # a fresh JACK client in its own process, like a DAW's
    try:
        out_port = find_port("MoodLane Out", timeout=30, exclude=before)
        connect(out_port, find_port("Monitor D", timeout=10))
        first_note = bool(wait_for(col.note_ons, 15.0))  # the model loads, then plays
        if not first_note:  # a JACK flake seen about 1 run in 4 here: the connected monitor hears nothing; a fresh one, once
            col.close()
            col = ProcessMonitor("Monitor F")
            connect(out_port, find_port("Monitor F", timeout=10))
            first_note = bool(wait_for(col.note_ons, 15.0))
        client = SimpleUDPClient("127.0.0.1", port)
        # the sequence at a fixed tempo: valence 0.5, arousal 0, +1, -1
        counts = count_notes_per_arousal(client, col, 150.0, 0.5, (0.0, 1.0, -1.0), 6.4)
        jack_state = connections()
    finally:
        col.close()
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        listener.shutdown()
        listener.server_close()
    if not (first_note and counts[0.0] > 0):
        pytest.fail(f"notes: first {first_note}, counts {counts}\nout port {out_port}\n{jack_state}\nfeedback {last}\nserve said:\n{err}")
    # arousal is heard in the notes at a fixed tempo: denser when up, sparser when down
    assert counts[1.0] >= 1.3 * counts[0.0] and counts[-1.0] < counts[0.0], counts
    assert status and status[-1][1] < -0.9  # feedback reports the last arousal sent
    assert proc.returncode == 0, err
    assert "all notes off" in err and "MIDI out: MoodLane Out" in err


def test_named_port_that_disappears_is_reconnected(backend):
    col = Collector()
    synth = backend.open_input("Synth Y", virtual=True, callback=col)
    opts = ServeOptions(osc_port=free_port(), midi_backend=JACK, midi_out="Synth Y", tempo=480.0, status_line=False, autoplay=True)
    srv = Server(opts, MockGenerator()).start()
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        assert wait_for(col.note_ons, 5.0), "notes reach the named port"
        synth.close()  # the synth quits
        time.sleep(1.5)
        sent_while_gone = srv.midi_sink.sent_on
        time.sleep(1.0)
        assert srv.midi_sink.sent_on > sent_while_gone  # output goes on
        col2 = Collector()
        synth = backend.open_input("Synth Y", virtual=True, callback=col2)  # it comes back
        assert wait_for(col2.note_ons, 6.0), "reconnected"
        assert srv.watchers[0].reconnects == 2
    finally:
        srv.stop()
        t.join(timeout=5)
        synth.close()


def test_a_server_we_start_dies_with_a_crashed_parent(monkeypatch):
    """A crashed test run (segfault, kill -9) must not leave its JACK server behind for the
    next run: `ensure_jack` asks Linux to stop the server with its parent."""
    import shutil
    import signal

    from moodlane.daw_bridge.jack import jack_running

    if shutil.which("jackd") is None or not sys.platform.startswith("linux"):
        pytest.skip("needs jackd on Linux")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"moodlane-test-{os.getpid()}")  # a server beside the session's
    code = "import time\nfrom moodlane.daw_bridge.jack import ensure_jack\nwith ensure_jack() as s:\n print(s, flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "True"  # it started one
        assert jack_running()
        child.send_signal(signal.SIGKILL)  # no `finally` runs in the child
        child.wait(5)
        assert wait_for(lambda: not jack_running(), 5)
    finally:
        child.kill()
