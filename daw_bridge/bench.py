"""`moodlane bench symbolic|live`: generation and render speed, peak memory, live latency,
timing and robustness. Reports figures with the CPU they were taken on; never fails."""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.registry import GeneratorOptions, load_generator
from moodlane.engine.session import render


def cpu_name() -> str:
    """The CPU model, as figures must name it (machines of one kind differ)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class LiveBenchConfig:
    tempo: float = 120.0
    trials: int = 10  # control changes timed
    cpu_seconds: float = 5.0
    flood_rate: int = 10_000  # OSC messages per second
    flood_seconds: float = 30.0
    clock_seconds: float = 20.0  # the MIDI clock slave run (0: skip)


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (per address space, so a child started from a big
    parent reports its own), else getrusage's (inherited across fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Timed:
    """A function that adds up the seconds spent in it, and its calls."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *a, **k):
        self.calls += 1
        t = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t


def bench_audio(opts: GeneratorOptions, seconds: float = 10.0, repeats: int = 3, threads: tuple[int, ...] = (1, 2)) -> dict:
    """LARA-Gen on this CPU: LM steps per second and real-time factor with guidance (batch 2)
    and without (batch 1), the codec's share of the time, peak RSS; at 1 and 2 torch threads."""
    from moodlane.engine.session import render_chunks

    rows = {}
    gen = None
    for n_threads in threads:
        for label, cfg in (("cfg 3 (batch 2)", 3.0), ("no cfg (batch 1)", 1.0)):
            gen = load_generator(replace(opts, engine="audio", cfg=cfg))
            torch.set_num_threads(n_threads)
            decode = gen.codec.decode
            gen.codec.decode = timed = _Timed(decode)
            curve = EmotionCurve.from_points([(0.0, Emotion(-0.5, -0.5)), (seconds * 2.0, Emotion(0.5, 0.5))])
            render_chunks(gen, curve, 4.0, seed=99, qpm=120.0, prompt="solo acoustic piano")  # warm-up
            walls, shares, steps = [], [], []
            for r in range(repeats):
                timed.seconds = 0.0
                t0 = time.perf_counter()
                chunks, _ = render_chunks(gen, curve, seconds * 2.0, seed=r, qpm=120.0, prompt="solo acoustic piano")
                wall = time.perf_counter() - t0
                walls.append(wall)
                shares.append(timed.seconds / wall)
                steps.append(seconds * gen.codec.frame_rate / (wall - timed.seconds))
            gen.codec.decode = decode
            audio_s = sum(c.audio.frames for c in chunks) / gen.sample_rate
            rows[f"{n_threads} thread{'s' if n_threads > 1 else ''}, {label}"] = {
                "x_realtime": round(audio_s / float(np.median(walls)), 2),
                "lm_steps_per_s": round(float(np.median(steps)), 1),
                "codec_decode_share": round(float(np.median(shares)), 3),
            }
    return {
        "cpu": cpu_name(),
        "lm": gen.meta.get("training", {}).get("command", "") if gen else "",
        "lm_parameters_m": round(sum(p.numel() for p in gen.model.parameters()) / 1e6, 2),
        "frame_rate": gen.codec.frame_rate,
        "codebooks": gen.cfg.n_q,
        "seconds": seconds,
        "repeats": repeats,
        "speed": rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def bench_symbolic(opts: GeneratorOptions, bars: int = 32, repeats: int = 3) -> dict:
    from moodlane.engine.synth import render_notes

    rss0 = peak_rss_mb()
    gen = load_generator(opts)
    qpm = 120.0
    curve = EmotionCurve.constant(Emotion(0.3, 0.3))
    render(gen, curve, 2, seed=99, qpm=qpm)  # warm-up
    gen_s, syn_s, toks, notes_n = [], [], [], []
    for rep in range(repeats):
        t = time.perf_counter()
        notes, chunks = render(gen, curve, bars, seed=rep, qpm=qpm)
        gen_s.append(time.perf_counter() - t)
        toks.append(sum(len(c.tokens) for c in chunks))
        notes_n.append(len(notes))
        t = time.perf_counter()
        render_notes(notes, tail_s=0.0)
        syn_s.append(time.perf_counter() - t)
    audio_s = bars * 4 * 60.0 / qpm
    g, s = float(np.median(gen_s)), float(np.median(syn_s))
    return {
        "cpu": cpu_name(),
        **asdict(opts),
        "precision_used": getattr(getattr(gen, "model", None), "precision", None),
        "bars": bars,
        "tempo_bpm": qpm,
        "audio_seconds": audio_s,
        "repeats": repeats,
        "tokens_per_bar": round(float(np.mean(toks)) / bars, 1),
        "notes_per_bar": round(float(np.mean(notes_n)) / bars, 1),
        "generate_tokens_per_s": round(float(np.mean(toks)) / g, 1),
        "generate_bars_per_s": round(bars / g, 2),
        "generate_x_realtime": round(audio_s / g, 1),
        "synth_x_realtime": round(audio_s / s, 1),
        "render_x_realtime": round(audio_s / (g + s), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_model_mb": round(rss0, 1),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


FLOOD_SCRIPT = """
import sys, time
from pythonosc.udp_client import SimpleUDPClient
c = SimpleUDPClient("127.0.0.1", int(sys.argv[1]))
rate, seconds = float(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic(); n = 0
while time.monotonic() - t0 < seconds:
    target = int((time.monotonic() - t0) * rate)
    while n < target:
        if n % 1000 == 999:
            c.send_message("/moodlane/garbage", "x")  # unknown addresses in the mix
        else:
            c.send_message("/moodlane/arousal" if n % 3 else "/moodlane/n/valence", (n % 100) / 100.0)
        n += 1  # every datagram sent is counted
    time.sleep(0.001)
print(n)
"""


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _cpu_percent(seconds: float) -> float:
    t0, c0 = time.monotonic(), time.process_time()
    time.sleep(seconds)
    return round(100.0 * (time.process_time() - c0) / (time.monotonic() - t0), 1)


def _pcts(xs, nd: int = 1) -> dict:
    if not len(xs):
        return {"p50": None, "p99": None, "n": 0}
    a = np.asarray(xs, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), nd), "p99": round(float(np.percentile(a, 99)), nd), "n": int(a.size)}


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to `port` (its receive buffer
    was full): /proc/net/udp's last column. 0 where that file is not there."""
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port:
                        total += int(cols[-1])
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return total


def count_notes_per_arousal(client, mon, tempo: float, valence: float, levels: tuple[float, ...], window_s: float) -> dict:
    """The issue's OSC sequence: at `valence`, for each arousal, wait two bars, then count
    note-ons on the monitor for `window_s`."""
    client.send_message("/moodlane/valence", valence)
    counts = {}
    for a in levels:
        client.send_message("/moodlane/arousal", a)
        time.sleep(2 * 4 * 60.0 / tempo)
        t0 = time.monotonic()
        time.sleep(window_s)
        counts[a] = len(mon.note_ons(t0, time.monotonic()))
    return counts


def control_to_output(send, server, mon, cfg: LiveBenchConfig) -> tuple[list[float], list[float], list[float]]:
    """`cfg.trials` times: arousal to -1, then to +1 through `send`; milliseconds from the
    send to the first note louder than the calm level on the monitor, to the start of the
    first bar made for it, and to the first audio block that reflects it (the audio sink's
    control-to-output time plus the transport's own: send to the control's change)."""
    note, bar, audio = [], [], []
    for _ in range(cfg.trials):
        send(-1.0)
        time.sleep(2.5)
        calm = [m.velocity for _, m in mon.note_ons(time.monotonic() - 1.5)]
        level = np.median(calm) if calm else 40
        heard0 = len(server.audio.latency_ms) if server.audio else 0
        t0 = time.monotonic()
        send(1.0)
        deadline = t0 + 4 * 60.0 / cfg.tempo * 4
        hit = None
        while time.monotonic() < deadline and hit is None:
            loud = [t for t, m in mon.note_ons(t0) if m.velocity >= level * 1.3]
            hit = loud[0] if loud else None
            time.sleep(0.005)
        if hit is not None:
            note.append((hit - t0) * 1000.0)
        starts = [m.start for m in list(server.scheduler.history) if m.chunk.emotion.arousal > 0]
        if starts:
            bar.append(max(0.0, (server.clock.time_of(min(starts)) - t0) * 1000.0))
        event = server.control.last_event
        if server.audio is not None and len(server.audio.latency_ms) > heard0 and event is not None:
            audio.append((event.t - t0) * 1000.0 + server.audio.latency_ms[-1])
    return note, bar, audio


def bench_live(opts: GeneratorOptions, cfg: LiveBenchConfig = LiveBenchConfig()) -> dict:
    """Starts (or joins) a JACK server, runs `serve` in-process with MIDI and audio out,
    and measures it from outside: an OSC client changes arousal, a MIDI port connected to
    MoodLane Out listens. Then a MIDI clock slave run against jack_midi_clock."""
    import subprocess
    import sys
    import threading

    import mido
    from pythonosc.udp_client import SimpleUDPClient

    from moodlane.daw_bridge.jack import JACK_MIDI, connect, ensure_jack
    from moodlane.daw_bridge.midi import MidiMonitor
    from moodlane.daw_bridge.osc import free_udp_port
    from moodlane.daw_bridge.serve import ServeOptions, Server
    from moodlane.daw_bridge.web import WebOptions

    port = free_udp_port()
    gen = load_generator(opts)
    out: dict = {"cpu": cpu_name(), "engine": opts.engine, **asdict(cfg)}
    with ensure_jack() as started:
        out["jack"] = "started (dummy driver, 48 kHz, 512 frames)" if started else "already running"
        sopts = ServeOptions(
            osc_port=port,
            midi_backend=JACK_MIDI,
            mode="both",
            tempo=cfg.tempo,
            status_line=False,
            emotion=Emotion(0, -1),
            web=WebOptions(port=0),
        )
        server = Server(sopts, gen).start()
        runner = threading.Thread(target=server.run, daemon=True)
        runner.start()
        mon = MidiMonitor()
        backend = mido.Backend(JACK_MIDI, load=True)
        port_in = backend.open_input("MoodLane Bench", virtual=True, callback=mon)
        try:
            connect("MoodLane Out", "MoodLane Bench")
            client = SimpleUDPClient("127.0.0.1", port)
            out["unavailable"] = dict(server.unavailable)
            time.sleep(2.0)
            # measure from here: opening the monitor's JACK client in this process reorders
            # the graph, which holds rtmidi's sends for a few hundred ms (a DAW's ports,
            # in another process, do not); the stream's first callback reports an underflow
            under0 = server.audio.underruns if server.audio else 0
            if server.midi_sink is not None:
                server.midi_sink.timing_error_ms.clear()
            if server.audio is not None:
                server.audio.latency_ms.clear()
            client.send_message("/moodlane/stop", [])
            time.sleep(0.5)
            out["cpu_percent_idle"] = _cpu_percent(cfg.cpu_seconds)
            client.send_message("/moodlane/play", [])
            time.sleep(0.5)
            out["cpu_percent_playing"] = _cpu_percent(cfg.cpu_seconds)
            # control-to-output: arousal -1 -> +1; the first note louder than the calm level
            beat_ms = 60000.0 / cfg.tempo
            midi_lat, content_lat, _ = control_to_output(lambda a: client.send_message("/moodlane/arousal", a), server, mon, cfg)
            out["midi_control_to_note_ms"] = {**_pcts(midi_lat), "one_beat_ms": round(beat_ms, 1)}
            out["midi_control_to_new_bar_ms"] = _pcts(content_lat)
            out["audio_control_to_note_ms"] = _pcts(list(server.audio.latency_ms)) if server.audio else None
            out["audio_output_buffer_ms"] = round(server.audio.output_latency_ms, 1) if server.audio else None
            out["midi_timing_error_ms"] = _pcts(np.abs(list(server.midi_sink.timing_error_ms)), 3) if server.midi_sink else None
            out["regenerations"] = server.scheduler.regenerations
            # the same through the web page's WebSocket: pad to the first changed note and audio block
            if server.web is not None:
                from moodlane.daw_bridge.web import WebClient

                pad = WebClient(server.web.url)
                try:
                    pad_note, pad_bar, pad_audio = control_to_output(lambda a: pad.send("/moodlane/va", [0.0, a]), server, mon, cfg)
                finally:
                    pad.close()
                out["web_pad_to_note_ms"] = {**_pcts(pad_note), "one_beat_ms": round(beat_ms, 1)}
                out["web_pad_to_new_bar_ms"] = _pcts(pad_bar)
                out["web_pad_to_audio_block_ms"] = _pcts(pad_audio)
            else:
                out["web"] = server.unavailable.get("web", "not started")
            # the sequence: notes in 10 s at valence 0.5 and arousal 0, +1, -1
            counts = count_notes_per_arousal(client, mon, cfg.tempo, 0.5, (0.0, 1.0, -1.0), 10.0)
            out["notes_in_10s_at_valence_0.5"] = {f"arousal {a:+.0f}": n for a, n in counts.items()}
            out["notes_ratio_arousal_1_over_0"] = round(counts[1.0] / max(counts[0.0], 1), 2)
            # flood: OSC messages from another process; every datagram that reaches the socket is handled
            rss0 = _rss_mb()
            fds0 = len(os.listdir("/proc/self/fd"))
            n_before = len(mon.note_ons())
            received0, drops0 = server.osc.router.stats.received, udp_drops(port)
            t0 = time.monotonic()
            r = subprocess.run(
                [sys.executable, "-c", FLOOD_SCRIPT, str(port), str(cfg.flood_rate), str(cfg.flood_seconds)],
                capture_output=True,
                text=True,
            )
            elapsed = time.monotonic() - t0
            time.sleep(0.5)  # the last datagrams in the socket buffer
            sent = int(r.stdout.strip() or 0)
            handled = server.osc.router.stats.received - received0
            out["flood"] = {
                "sent": sent,
                "handled": handled,
                "dropped_by_the_kernel": udp_drops(port) - drops0,
                "handled_per_s": round(handled / elapsed, 1),
                "rss_before_mb": round(rss0, 1),
                "rss_after_mb": round(_rss_mb(), 1),
                "fds_before": fds0,
                "fds_after": len(os.listdir("/proc/self/fd")),
                "notes_per_s_during": round((len(mon.note_ons()) - n_before) / elapsed, 1),
                "timing_error_ms_after": _pcts(np.abs(list(server.midi_sink.timing_error_ms)[-500:]), 3) if server.midi_sink else None,
            }
            out["audio_underruns"] = server.audio.underruns - under0 if server.audio else None
            out["audio_underruns_at_start"] = under0 if server.audio else None
            out["counters"] = server.counters()
        finally:
            port_in.close()
            server.stop()
            runner.join(timeout=5)
        if cfg.clock_seconds > 0:
            try:
                from moodlane.daw_bridge.clock_check import measure_midi_clock_grid

                out["midi_clock_slave"] = measure_midi_clock_grid(seconds=cfg.clock_seconds, bpm=100.0, generator=gen)
            except (ImportError, RuntimeError, OSError) as e:
                out["midi_clock_slave"] = f"not measured: {e}"
    return out
