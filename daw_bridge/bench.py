"""`moodlane bench symbolic`: generation and render speed, peak memory. Reports; never fails."""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import torch

from engine.automation import EmotionCurve
from engine.emotion import Emotion
from engine.session import render


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_symbolic(args) -> dict:
    from daw_bridge.cli import load_generator
    from daw_bridge.synth import render_notes

    rss0 = _peak_rss_mb()
    gen = load_generator(args)
    qpm = 120.0
    curve = EmotionCurve.constant(Emotion(0.3, 0.3))
    render(gen, curve, 2, seed=99, qpm=qpm)  # warm-up
    gen_s, syn_s, toks, notes_n = [], [], [], []
    for rep in range(args.repeats):
        t = time.perf_counter()
        notes, chunks = render(gen, curve, args.bars, seed=rep, qpm=qpm)
        gen_s.append(time.perf_counter() - t)
        toks.append(sum(len(c.tokens) for c in chunks))
        notes_n.append(len(notes))
        t = time.perf_counter()
        render_notes(notes, tail_s=0.0)
        syn_s.append(time.perf_counter() - t)
    audio_s = args.bars * 4 * 60.0 / qpm
    g, s = float(np.median(gen_s)), float(np.median(syn_s))
    return {
        "generator": args.generator,
        "precision": args.precision,
        "guidance": args.guidance,
        "bars": args.bars,
        "tempo_bpm": qpm,
        "audio_seconds": audio_s,
        "repeats": args.repeats,
        "tokens_per_bar": round(float(np.mean(toks)) / args.bars, 1),
        "notes_per_bar": round(float(np.mean(notes_n)) / args.bars, 1),
        "generate_tokens_per_s": round(float(np.mean(toks)) / g, 1),
        "generate_bars_per_s": round(args.bars / g, 2),
        "generate_x_realtime": round(audio_s / g, 1),
        "synth_x_realtime": round(audio_s / s, 1),
        "render_x_realtime": round(audio_s / (g + s), 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
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
        c.send_message("/moodlane/arousal" if n % 3 else "/moodlane/n/valence", (n % 100) / 100.0)
        if n % 1000 == 0:
            c.send_message("/moodlane/garbage", "x")  # unknown addresses in the mix
        n += 1
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


def bench_live(args) -> dict:
    """Starts (or joins) a JACK server, runs `serve` in-process with MIDI and audio out,
    and measures it from outside: an OSC client changes arousal, a MIDI port connected to
    MoodLane Out listens."""
    import socket
    import subprocess
    import sys
    import threading

    import mido
    from pythonosc.udp_client import SimpleUDPClient

    from daw_bridge.cli import load_generator
    from daw_bridge.jack import JACK_MIDI, connect, ensure_jack
    from daw_bridge.midi import MidiMonitor
    from daw_bridge.serve import ServeOptions, Server

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gen = load_generator(args)
    out: dict = {"generator": args.generator, "tempo_bpm": args.tempo}
    with ensure_jack() as started:
        out["jack"] = "started (dummy driver, 48 kHz, 512 frames)" if started else "already running"
        opts = ServeOptions(osc_port=port, midi_backend=JACK_MIDI, mode="both", tempo=args.tempo, status_line=False, emotion=Emotion(0, -1))
        server = Server(opts, gen).start()
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
            out["cpu_percent_idle"] = _cpu_percent(args.cpu_seconds)
            client.send_message("/moodlane/play", [])
            time.sleep(0.5)
            out["cpu_percent_playing"] = _cpu_percent(args.cpu_seconds)
            # control-to-output: arousal -1 -> +1; the first note louder than the calm level
            midi_lat, content_lat = [], []
            for _ in range(args.trials):
                client.send_message("/moodlane/arousal", -1.0)
                time.sleep(2.5)
                calm = [m.velocity for _, m in mon.note_ons(time.monotonic() - 1.5)]
                level = np.median(calm) if calm else 40
                t0 = time.monotonic()
                client.send_message("/moodlane/arousal", 1.0)
                deadline = t0 + 4 * 60.0 / args.tempo * 4
                hit = None
                while time.monotonic() < deadline and hit is None:
                    loud = [t for t, m in mon.note_ons(t0) if m.velocity >= level * 1.3]
                    hit = loud[0] if loud else None
                    time.sleep(0.005)
                if hit is not None:
                    midi_lat.append((hit - t0) * 1000.0)
                bars = [(b, st) for b, st, _, c in list(server.scheduler.history) if c.emotion.arousal > 0]
                if bars:
                    content_lat.append(max(0.0, (server.clock.time_of(min(st for _, st in bars)) - t0) * 1000.0))
            beat_ms = 60000.0 / args.tempo
            out["midi_control_to_note_ms"] = {**_pcts(midi_lat), "one_beat_ms": round(beat_ms, 1)}
            out["midi_control_to_new_bar_ms"] = _pcts(content_lat)
            out["audio_control_to_block_ms"] = _pcts(list(server.audio.latency_ms)) if server.audio else None
            out["audio_output_buffer_ms"] = round(server.audio.output_latency_ms, 1) if server.audio else None
            out["midi_timing_error_ms"] = _pcts(np.abs(list(server.midi_sink.timing_error_ms)), 3) if server.midi_sink else None
            # flood: 10,000 OSC messages a second from another process
            rss0 = _rss_mb()
            n_before = len(mon.note_ons())
            t0 = time.monotonic()
            r = subprocess.run(
                [sys.executable, "-c", FLOOD_SCRIPT, str(port), str(args.flood_rate), str(args.flood_seconds)],
                capture_output=True,
                text=True,
            )
            elapsed = time.monotonic() - t0
            out["flood"] = {
                "rate_per_s": args.flood_rate,
                "seconds": args.flood_seconds,
                "sent": int(r.stdout.strip() or 0),
                "received": server.osc.router.stats.received if server.osc else None,
                "rss_before_mb": round(rss0, 1),
                "rss_after_mb": round(_rss_mb(), 1),
                "notes_per_s_during": round((len(mon.note_ons()) - n_before) / elapsed, 1),
                "timing_error_ms_after": _pcts(np.abs(list(server.midi_sink.timing_error_ms)[-500:]), 3) if server.midi_sink else None,
            }
            out["audio_underruns"] = server.audio.underruns - under0 if server.audio else None
            out["audio_underruns_at_start"] = under0 if server.audio else None
        finally:
            port_in.close()
            server.stop()
            runner.join(timeout=5)
    return out
