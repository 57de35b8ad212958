"""Does MoodLane, slaved to an external MIDI clock, put its notes on the master's grid?

`measure_midi_clock_grid` reproduces the user's set-up on a JACK server: `jack_midi_clock`
(Debian package `jack-midi-clock`) is the master, MoodLane's `Server` runs in this process
with `--clock midi --mode midi`, and ONE independent recorder, `jack_midi_dump -a`, listens
to both the clock and `MoodLane Out`. It stamps every event in JACK frames (sample-accurate,
the clock's own timeline), so the offsets do not depend on MoodLane's idea of time.

Each note-on is compared with the nearest 16th of the grid the recorded ticks draw (the first
0xF8 after Start is the downbeat, tick 0; 6 ticks per 16th). The default generator plays 16
notes a bar (the mock generator at arousal +1), so every note is meant to sit on a 16th.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

from moodlane.daw_bridge.jack import JACK_MIDI, ensure_jack, find_port, ports
from moodlane.daw_bridge.osc import free_udp_port

DEBIAN_PACKAGE = "jack-midi-clock"
_LINE = re.compile(r"^\s*(\d+):((?:\s+[0-9a-fA-F]{2}(?![0-9A-Za-z]))+)")


def _jack_env() -> dict[str, str]:
    # never let a JACK client autostart a server with the ALSA driver (there is no sound card)
    return dict(os.environ, JACK_NO_START_SERVER="1")


def _jack_int(tool: str, default: int) -> int:
    try:
        out = subprocess.run([tool], capture_output=True, text=True, timeout=5, env=_jack_env()).stdout
        return int(re.findall(r"\d+", out)[-1])
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        return default


def _transport(*commands: str) -> None:
    """Drives JACK transport (jack_midi_clock only ticks while it rolls)."""
    subprocess.run(["jack_transport"], input="\n".join(commands) + "\nquit\n", text=True, capture_output=True, timeout=10, env=_jack_env())


def _new_ports(before: set[str], fragments: tuple[str, ...], timeout: float) -> list[str]:
    """One port per fragment among those not in `before`; RuntimeError if there are two."""
    deadline = time.monotonic() + timeout
    while True:
        new = [p for p in ports() if p not in before]
        hits = [[p for p in new if f in p] for f in fragments]
        if all(len(h) == 1 for h in hits):
            return [h[0] for h in hits]
        if any(len(h) > 1 for h in hits):
            raise RuntimeError(f"cannot tell this server's ports from another's: {hits}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no new JACK ports {fragments} within {timeout} s (got {new})")
        time.sleep(0.05)


def parse_midi_dump(text: str) -> list[tuple[int, bytes]]:
    """`jack_midi_dump -a` lines (`  140800: 90 30 66 note on  (channel  0): ...`, `  25600: fa`)
    as (frame, message bytes); the frame counts from the recorder's start."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((int(m.group(1)), bytes.fromhex("".join(m.group(2).split()))))
    return out


def grid_offsets(events: list[tuple[int, bytes]], rate: int, ticks_per_step: int = 6, first_tick: int = 96) -> dict[str, Any]:
    """Offsets (ms) of note-ons from the nearest step (default a 16th: 6 ticks of 24 ppqn) of
    the grid drawn by the clock ticks after the last Start. Tick 0 is the first 0xF8 after
    0xFA (MIDI 1.0 spec: the slave starts on the first clock after Start).

    Notes nearest a step before `first_tick` (default 96, the first bar line after Start,
    where `serve` starts an external clock's music) are counted apart, as `early_notes`."""
    starts = [i for i, (_, b) in enumerate(events) if b[:1] == b"\xfa"]
    first = starts[-1] + 1 if starts else 0
    ticks = np.array([f for f, b in events[first:] if b[:1] == b"\xf8"], dtype=np.float64)
    notes = np.array([f for f, b in events[first:] if len(b) == 3 and b[0] & 0xF0 == 0x90 and b[2] > 0], dtype=np.float64)
    if len(ticks) < 2 * ticks_per_step:
        raise RuntimeError(f"the clock sent {len(ticks)} ticks after Start: too few to draw a grid")
    idx = np.arange(len(ticks), dtype=np.float64)
    slope, icept = np.polyfit(idx, ticks, 1)  # frames per tick
    inside = notes[(notes >= ticks[0]) & (notes <= ticks[-1])]
    tick_pos = np.interp(inside, ticks, idx)  # fractional tick index of each note-on
    step = np.rint(tick_pos / ticks_per_step).astype(np.int64) * ticks_per_step
    step = np.clip(step, 0, len(ticks) - 1)
    off_ms = (inside - ticks[step]) * 1000.0 / rate
    early = step < first_tick
    return {
        "bpm_clock": round(float(60.0 * rate / (24.0 * slope)), 4),
        "tick_jitter_ms": round(float(np.std(ticks - (icept + slope * idx))) * 1000.0 / rate, 4),
        "ticks": len(ticks),
        "offsets": off_ms[~early],
        "early_notes": [(int(k), round(float(o), 3)) for k, o in zip(step[early], off_ms[early])],
        "notes_outside_clock": int(len(notes) - len(inside)),
    }


def measure_midi_clock_grid(
    seconds: float = 20.0,
    bpm: float = 100.0,
    generator=None,
    emotion=None,
    ready_timeout: float = 10.0,
) -> dict[str, Any]:
    """Runs `jack_midi_clock -b BPM -B` into a MoodLane `Server` (`--clock midi --mode midi`)
    for `seconds` of rolling transport, records clock and note-ons with `jack_midi_dump -a`,
    and returns the note-ons' offsets from the clock's 16th grid:

    {bpm_clock (from the recorded ticks), bpm_measured_by_moodlane (its mean tempo from the
    first bar line on), bpm_moodlane_min_max, bpm_status_line (the values the status line
    showed), offsets_ms: {mean, p50, p1, p99, p99_abs, max_abs, std, n}, offsets_raw_ms,
    early_notes, period_ms, period_frames, rate, ticks, ...}

    `generator` defaults to the mock generator at arousal +1 (16 notes a bar, each on a 16th);
    another generator's notes must sit on 16ths too (`emotion` sets the lane values).
    `serve` starts an external clock's music at the first bar line after the clock starts,
    so notes are measured from there on (`early_notes` lists any before it). Uses the JACK
    server that runs, or starts one (dummy driver) for the duration."""
    from moodlane.daw_bridge.serve import ServeOptions, Server
    from moodlane.engine.emotion import Emotion
    from moodlane.engine.mock import MockGenerator

    if shutil.which("jack_midi_clock") is None:
        raise RuntimeError(
            f"jack_midi_clock is not installed: it is in the Debian package {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE})"
        )
    for tool in ("jack_midi_dump", "jack_transport", "jack_connect"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: it comes in the Debian package jackd2 (apt-get install jackd2)")
    if generator is None:
        generator = MockGenerator()
        # 16 notes a bar: every note-on is meant to sit on a 16th (at arousal 0 it plays 10)
        emotion = emotion or Emotion(0.0, 1.0)
    emotion = emotion or Emotion(0.0, 0.0)

    with ensure_jack():
        env = _jack_env()
        rate, period = _jack_int("jack_samplerate", 48000), _jack_int("jack_bufsize", 512)
        before = set(ports())
        procs: list[subprocess.Popen] = []
        server = None
        thread = None
        dump_path = None
        switch = sys.getswitchinterval()
        try:
            _transport("stop", "locate 0")
            clock = subprocess.Popen(
                ["jack_midi_clock", "-b", f"{bpm:g}", "-B"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(clock)
            clock_port = find_port("mclk_out", exclude=before)
            rec_name = f"moodlane-grid-{os.getpid()}"
            fd, dump_path = tempfile.mkstemp(prefix="moodlane-mididump-", suffix=".txt")
            # line-buffered through stdbuf where there is one, so nothing is lost on exit
            cmd = ["jack_midi_dump", "-a", rec_name]
            if shutil.which("stdbuf"):
                cmd = ["stdbuf", "-oL", *cmd]
            dump = subprocess.Popen(cmd, env=env, stdout=fd, stderr=subprocess.DEVNULL)
            os.close(fd)
            procs.append(dump)
            rec_port = find_port(f"{rec_name}:", exclude=before)

            opts = ServeOptions(
                osc_port=free_udp_port(),
                midi_backend=JACK_MIDI,
                mode="midi",
                clock="midi",
                tempo=120.0,  # a wrong guess on purpose: the clock must set the tempo
                emotion=emotion,
                status_line=False,
            )
            # another MoodLane may share this JACK server (a test session beside this one):
            # ours are the ports that appear while our server starts
            before_server = set(ports())
            server = Server(opts, generator).start()
            thread = threading.Thread(target=server.run, name="serve", daemon=True)
            thread.start()
            for part in ("midi", "midi in", "midi out"):
                if part in server.unavailable:
                    raise RuntimeError(f"MoodLane's {part} did not start: {server.unavailable[part]}")
            moodlane_in, moodlane_out = _new_ports(before_server, ("MoodLane In", "MoodLane Out"), ready_timeout)
            for src, dst in ((clock_port, moodlane_in), (clock_port, rec_port), (moodlane_out, rec_port)):
                subprocess.run(["jack_connect", src, dst], check=True, timeout=5, env=env)

            _transport("locate 0", "play")
            t_play = time.monotonic()
            t_end = t_play + seconds
            while not server.clock.running:
                if time.monotonic() > t_play + ready_timeout:
                    raise RuntimeError(f"MoodLane did not start on the clock: {moodlane_in} got no Start and clock")
                time.sleep(0.01)
            tempos: list[float] = []
            while time.monotonic() < t_end:
                if server.clock.running and server.clock.beat() > 4.0:  # from the first bar line on
                    tempos.append(server.clock.tempo)
                time.sleep(0.02)
            _transport("stop")
            time.sleep(0.3)
            sink_err = list(server.midi_sink.timing_error_ms) if server.midi_sink else []
            lost_ticks, fit_restarts = server.clock.lost_ticks, server.clock.restarts
        finally:
            if server is not None:
                server.request_stop()
                if thread is not None:
                    thread.join(timeout=5)
                server.stop()
            sys.setswitchinterval(switch)
            for p in procs:  # SIGINT: jack_midi_dump prints what it holds, then exits
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            _transport("stop", "locate 0")
            text = ""
            if dump_path is not None:
                with open(dump_path) as f:
                    text = f.read()
                if os.environ.get("MOODLANE_KEEP_DUMP"):  # the recording, for a closer look
                    print("jack_midi_dump -a recording:", dump_path, file=sys.stderr)
                else:
                    os.unlink(dump_path)

    events = parse_midi_dump(text)
    g = grid_offsets(events, rate)
    off = g.pop("offsets")
    if not len(off):
        raise RuntimeError(f"MoodLane sent no note-ons on the clock's grid in {seconds} s ({len(events)} events recorded)")
    period_ms = period * 1000.0 / rate
    return {
        "bpm": bpm,
        **g,
        "bpm_measured_by_moodlane": round(float(np.mean(tempos)), 4) if tempos else None,
        "bpm_moodlane_min_max": [round(min(tempos), 3), round(max(tempos), 3)] if tempos else None,
        # what the status line (tempo to 0.1 BPM) showed over the run
        "bpm_status_line": sorted({round(x, 1) for x in tempos}),
        "offsets_ms": {
            "mean": round(float(np.mean(off)), 3),
            "p50": round(float(np.percentile(off, 50)), 3),
            "p1": round(float(np.percentile(off, 1)), 3),
            "p99": round(float(np.percentile(off, 99)), 3),
            "p99_abs": round(float(np.percentile(np.abs(off), 99)), 3),
            "max_abs": round(float(np.max(np.abs(off))), 3),
            "std": round(float(np.std(off)), 3),
            "n": len(off),
        },
        "offsets_raw_ms": [round(float(x), 3) for x in off],
        "lost_ticks": lost_ticks,  # ticks MoodLane found missing (counted, the grid kept)
        "fit_restarts": fit_restarts,
        "sink_timing_error_ms_p99": round(float(np.percentile(sink_err, 99)), 3) if sink_err else None,
        "period_ms": round(period_ms, 3),
        "period_frames": period,
        "rate": rate,
        "seconds": seconds,
    }


if __name__ == "__main__":  # python -m moodlane.daw_bridge.clock_check [seconds] [bpm]
    import json

    args = [float(a) for a in sys.argv[1:3]]
    r = measure_midi_clock_grid(*args)
    r.pop("offsets_raw_ms")
    print(json.dumps(r, indent=1))
