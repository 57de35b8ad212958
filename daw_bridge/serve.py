"""`moodlane serve`: OSC and MIDI in, MIDI and audio out, one live session.

Each part starts on its own; a part that cannot (no MIDI backend, no audio device, port
in use) is reported in one plain line and the rest keeps running. Ctrl-C and SIGTERM
silence every output (note-offs + All Notes Off) and exit cleanly.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from moodlane.daw_bridge.audio import SPLICE_S
from moodlane.daw_bridge.clock import Clock, ClockUnavailable, LinkClock, MidiClock
from moodlane.daw_bridge.control import LiveControl
from moodlane.daw_bridge.live import LiveConfig, LiveScheduler, MidiSink
from moodlane.daw_bridge.midi import (
    IN_NAME,
    OUT_NAME,
    CCMapping,
    MidiControlInput,
    MidiOut,
    MidiUnavailable,
    NullPort,
    PortWatcher,
    open_backend,
)
from moodlane.daw_bridge.osc import MODES, Feedback, OscRouter, OscServer
from moodlane.daw_bridge.web import WebError, WebOptions, WebSurface, levels
from moodlane.engine.chunk import AUDIO_CHUNK_BEATS
from moodlane.engine.emotion import Emotion

log = logging.getLogger(__name__)


class ServeError(ValueError):
    """Options that cannot serve (one line for the user)."""


@dataclass
class ServeOptions:
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    feedback: tuple[str, int] | None = None
    feedback_hz: float = 10.0
    midi: bool = True
    midi_backend: str | None = None
    midi_in: str | None = None  # None: a virtual port "MoodLane In"; else connect to this port
    midi_out: str | None = None
    channel: int = 0
    lead_channel: int | None = None  # None: the lead plays on `channel` with the accompaniment
    mode: str = "midi"  # midi | audio | both
    clock: str = "internal"  # internal | midi
    tempo: float = 120.0
    lookahead_beats: float = 2.0
    audio_chunk_beats: float = AUDIO_CHUNK_BEATS  # audio engines: chunk length (a lane change is heard at the next chunk)
    smooth_s: float = 0.3
    seed: int = 0
    emotion: Emotion = Emotion(0.0, 0.0)
    prompt: str = ""  # text-conditioned engines: the starting prompt (/moodlane/prompt changes it)
    autoplay: bool = True
    soundfont: str | None = None
    audio_device: str | None = None
    blocksize: int = 512
    sample_rate: int | None = None  # None: the device's
    duration: float | None = None
    status_line: bool = True
    cc_map: CCMapping | None = None
    web: WebOptions | None = None  # the web control surface (serve --web)


def _pct(x, q: float) -> float | None:
    return round(float(np.percentile(list(x), q)), 2) if len(x) else None


PROBLEMS = ("sink_errors", "late", "overflow", "underruns", "osc_dropped", "web_dropped")


def status_line(s: dict) -> str:
    """The status dict as one line: the terminal's status line and a surface's label."""
    mode = "playing" if s["playing"] else "stopped"
    va = f"V {s['va'][0]:+.2f} A {s['va'][1]:+.2f}"
    problems = " ".join(f"{k} {s[k]}" for k in PROBLEMS if s.get(k))
    line = f"{va} | {s['tempo']:.1f} BPM {mode} | {s['mode']} | ahead {s['buffer']:.1f} beats | latency p50 {s['latency']:.0f} ms"
    return line + (f" | {problems}" if problems else "")


class Server:
    def __init__(self, opts: ServeOptions, generator) -> None:
        self.opts = opts
        self.generator = generator
        self.control = LiveControl(tau_s=opts.smooth_s)
        if opts.prompt:
            self.control.set_prompt(opts.prompt, source="start")
        self.control.set_emotion(opts.emotion, source="start", immediate=True)
        self.control.tempo = opts.tempo
        self.control.mode = opts.mode
        self.unavailable: dict[str, str] = {}
        self.mode = opts.mode
        self._tempo_sent = opts.tempo
        self._jumps = 0
        self.clock: Clock = MidiClock(opts.tempo) if opts.clock == "midi" else Clock(opts.tempo)
        if opts.clock == "link":
            try:
                self.clock = LinkClock(opts.tempo)
            except ClockUnavailable as e:
                self.unavailable["link"] = f"{e}; using the internal clock"
        self.config = LiveConfig(lookahead_beats=opts.lookahead_beats, audio_chunk_beats=opts.audio_chunk_beats)
        self.router: OscRouter | None = None
        self.osc: OscServer | None = None
        self.web: WebSurface | None = None
        self.feedback: Feedback | None = None
        self.midi_in_port = self.midi_out_port = None
        self.midi_sink: MidiSink | None = None
        self.audio = None
        self.midi_input = MidiControlInput(
            self.control, opts.cc_map or CCMapping(), self.clock if isinstance(self.clock, MidiClock) else None
        )
        self.scheduler: LiveScheduler | None = None
        self.watchers: list[PortWatcher] = []
        self._stop = threading.Event()
        self._was_running = False

    # -- parts ------------------------------------------------------------------------
    def _start_osc(self) -> None:
        from moodlane.presets import PresetError, get_emotion_preset

        def on_preset(name: str) -> bool:
            try:
                p = get_emotion_preset(name)
            except PresetError:
                return False
            self.control.set_emotion(p.emotion, source=f"preset {name}")
            self.control.preset = name
            return True

        router = OscRouter(
            self.control,
            on_preset=on_preset,
            on_status=lambda s: self.send_status(force=True),
            on_learn=self.midi_input.learn,
            modes=self.modes,
        )
        self.router = router  # the web page's messages take this path too, with or without the OSC socket
        try:
            self.osc = OscServer(router, self.opts.osc_host, self.opts.osc_port).start()
        except OSError as e:
            self.unavailable["osc"] = f"cannot listen on {self.opts.osc_host}:{self.opts.osc_port} ({e.strerror})"
            return
        self.feedback = Feedback(router, self.opts.feedback, self.opts.feedback_hz)

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.generator.kind == "notes" else tuple(m for m in MODES if m != "midi")

    def _start_web(self) -> None:
        if self.opts.web is None:
            return
        try:
            self.web = WebSurface(self.router, self, self.opts.web).start()
        except WebError as e:
            self.unavailable["web"] = str(e)

    def web_info(self) -> dict:
        """What the page needs once: the engine, its outputs and the presets."""
        from moodlane.engine import __version__
        from moodlane.engine.registry import describe_backend
        from moodlane.presets import load_emotion_presets

        presets = [
            {"name": p.name, "valence": p.emotion.valence, "arousal": p.emotion.arousal, "description": p.description}
            for p in load_emotion_presets().values()
        ]
        osc = f"{self.osc.address[0]}:{self.osc.address[1]}" if self.osc is not None else None
        return {
            "version": __version__,
            "engine": self.generator.name,
            "kind": self.generator.kind,
            "backend": describe_backend(self.generator) or "",
            "modes": list(self.modes),
            "presets": presets,
            "osc": osc,
            "smooth_s": self.control.tau_s,
        }

    def shown(self) -> dict:
        """What every page shows alike: the lane targets and, while audio plays, its level
        and one spectrum column."""
        t = self.control.target()
        playing_audio = self.audio is not None and self.scheduler is not None and self.audio in self.scheduler.sinks
        return {
            "target": [round(t.valence, 3), round(t.arousal, 3)],
            "audio": levels(self.audio.scope.last(2048), self.audio.sample_rate) if playing_audio else None,
        }

    def notes_since(self, since: dict[str, int]) -> list[list]:
        """The notes played since `since` (sink -> last entry seen; updated in place), from one
        sink: in "both" mode the two play the same ones."""
        active = self.scheduler.sinks if self.scheduler is not None else []
        for key, sink in (("midi", self.midi_sink), ("audio", self.audio)):
            if sink is None or sink not in active or (key == "audio" and sink.synth is None):
                continue
            new = sink.played.since(since.get(key, 0))
            if new:
                since[key] = new[-1][0]
            return [[round(at, 4), pitch, vel] for _, at, pitch, vel in new]
        return []

    def activity(self, since: dict[str, int]) -> dict:
        """For one page: `shown()` and the notes played since `since`."""
        return {**self.shown(), "notes": self.notes_since(since)}

    def _start_midi(self) -> None:
        if not self.opts.midi:
            return
        try:
            backend = open_backend(self.opts.midi_backend)
        except MidiUnavailable as e:
            self.unavailable["midi"] = str(e)
            return
        try:
            if self.opts.midi_in:  # another program's port, by name: watched and reopened
                w = PortWatcher(backend, self.opts.midi_in, "input", lambda p: setattr(self, "midi_in_port", p), self.midi_input)
                self.watchers.append(w)
                w.poll()
            else:
                self.midi_in_port = backend.open_input(IN_NAME, virtual=True, callback=self.midi_input)
        except Exception as e:
            self.unavailable["midi in"] = f"{type(e).__name__}: {e}"
        if self.generator.kind == "notes":  # the port stays open in every mode, so /moodlane/mode can switch to it
            try:
                out = MidiOut(NullPort(), self.opts.channel, self.opts.lead_channel)
                if self.opts.midi_out:
                    w = PortWatcher(backend, self.opts.midi_out, "output", out.set_port)
                    self.watchers.append(w)
                    w.poll()
                else:
                    out.set_port(backend.open_output(OUT_NAME, virtual=True))
                self.midi_out_port = out.port
                self.midi_sink = MidiSink(out, self.clock, self.control, self.config).start()
            except Exception as e:
                self.unavailable["midi out"] = f"{type(e).__name__}: {e}"

    def _start_audio(self) -> None:
        if self.audio is not None or "audio" in self.unavailable:
            return
        from moodlane.daw_bridge.audio import AudioSink, AudioUnavailable
        from moodlane.engine.synth import SynthError

        try:
            self.audio = AudioSink(
                self.clock,
                self.control,
                self.config,
                self.opts.soundfont,
                sample_rate=self.opts.sample_rate,
                blocksize=self.opts.blocksize,
                device=self.opts.audio_device,
                synth=self.generator.kind == "notes",
            ).start()
        except (AudioUnavailable, SynthError) as e:
            self.unavailable["audio"] = str(e)
            self.audio = None

    def sinks_for(self, mode: str) -> list:
        """The sinks a mode feeds, starting the audio stream the first time it is asked for."""
        if mode in ("audio", "both"):
            self._start_audio()
        wanted = []
        if mode in ("midi", "both") and self.midi_sink is not None:
            wanted.append(self.midi_sink)
        if mode in ("audio", "both") and self.audio is not None:
            wanted.append(self.audio)
        return wanted

    def _apply_mode(self, mode: str) -> None:
        """`/moodlane/mode`: switch sinks live; a sink left out is silenced (the router
        refuses 'midi' for an audio engine)."""
        self.mode = mode
        self.scheduler.set_sinks(self.sinks_for(mode))

    def start(self) -> Server:
        # the audio callback and the MIDI thread need the GIL within a block (~10 ms);
        # Python's default 5 ms switch interval lets the generator hold it too long
        sys.setswitchinterval(0.001)
        if self.generator.kind == "audio" and self.opts.mode == "midi":
            raise ServeError(f"the {self.generator.name} engine makes audio: use --mode audio")
        self._start_osc()
        self._start_web()
        self._start_midi()
        sinks = self.sinks_for(self.opts.mode)
        self.scheduler = LiveScheduler(self.generator, self.control, self.clock, sinks, self.opts.seed, self.config, paused=True).start()
        if self.opts.autoplay and not isinstance(self.clock, MidiClock):
            self.control.set_playing(True, source="autoplay")
        return self

    # -- running ----------------------------------------------------------------------
    def counters(self) -> dict:
        """Problems counted, not printed: what a performer can glance at."""
        m, a, sch = self.midi_sink, self.audio, self.scheduler
        osc = self.osc.router.stats if self.osc is not None else None
        return {
            "sink_errors": (m.errors if m else 0) + (a.errors + a.restarts if a else 0) + (sch.sink_errors if sch else 0),
            "late": (m.late_dropped if m else 0) + (a.late_dropped if a else 0) + (sch.skipped if sch else 0),
            "overflow": (m.queue.overflow if m else 0) + (a.queue.overflow + a.overflow if a else 0),
            "underruns": a.underruns if a else 0,
            "osc_dropped": osc.dropped if osc else 0,
            "web_dropped": self.web.stats.dropped if self.web else 0,
        }

    def status(self) -> dict:
        """What `/moodlane/status/<key>` sends, key by key, and what the web page shows."""
        e = self.control.current()
        lat = list(self.midi_sink.latency_ms) if self.midi_sink else []
        if self.audio is not None:
            lat += list(self.audio.latency_ms)
        s = {
            "va": [round(e.valence, 3), round(e.arousal, 3)],
            "tempo": round(self.clock.tempo, 2),
            "playing": int(self.clock.running),
            "buffer": round(self.scheduler.ahead_beats, 2) if self.scheduler else 0.0,
            "latency": _pct(lat, 50) or 0.0,
            "mode": self.mode,
            "notes": self.midi_sink.sent_on if self.midi_sink else 0,  # note-ons sent so far
            **self.counters(),
        }
        s["text"] = status_line(s)  # one line for a surface's status label (TouchOSC, Open Stage Control)
        return s

    def send_status(self, force: bool = False) -> None:
        if self.feedback is not None:
            self.feedback.send(self.status(), force=force)

    def _transport(self) -> None:
        c, clk = self.control, self.clock
        if isinstance(clk, MidiClock):
            running = clk.running
        else:
            if c.tempo != self._tempo_sent:  # only a new /moodlane/tempo: a Link session's own tempo is not pushed back
                clk.set_tempo(c.tempo)
                self._tempo_sent = c.tempo
            running = c.playing
            if running and not clk.running:
                clk.start(0.0, preroll_s=0.15)  # the first bar is made before its downbeat
            elif not running and clk.running:
                clk.stop()
        if running and (not self._was_running or clk.jumps != self._jumps):
            # a start or a jump (song position, a DAW loop): music from the bar the play head
            # is in; the part of it already past is skipped (`LiveConfig.late_tolerance_s`)
            self._jumps = clk.jumps
            self.scheduler.reset(float(np.floor(max(clk.beat(), 0.0) / 4.0) * 4.0))
        if not running and self._was_running:
            self.panic()
            self.scheduler.pause()
        self._was_running = running

    def panic(self) -> None:
        for sink in (self.midi_sink, self.audio):
            if sink is not None:
                sink.clear()

    def status_text(self) -> str:
        return self.status()["text"]

    def _watch(self) -> None:
        """Once a second: named ports, the audio stream, the mode."""
        for w in self.watchers:
            w.poll()
        if self.audio is not None and self.audio in self.scheduler.sinks:
            self.audio.watchdog()

    def run(self) -> None:
        t_end = time.monotonic() + self.opts.duration if self.opts.duration else None
        tty = self.opts.status_line and sys.stderr.isatty()
        last_line = last_watch = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_watch > 1.0:
                self._watch()
                last_watch = time.monotonic()
            if self.control.mode != self.mode:
                self._apply_mode(self.control.mode)
            if self.scheduler.error is not None:
                self.panic()
                raise RuntimeError(f"generator failed: {self.scheduler.error}")
            self._transport()
            self.send_status()
            now = time.monotonic()
            if self.opts.status_line and now - last_line > (0.2 if tty else 10.0):
                print(("\r" if tty else "") + self.status_text() + ("" if tty else "\n"), end="", file=sys.stderr, flush=True)
                last_line = now
            if t_end is not None and now >= t_end:
                break
            self._stop.wait(0.02)
        if tty:
            print(file=sys.stderr)

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.midi_sink is not None:
            self.midi_sink.stop()  # panics
        if self.audio is not None:
            self.audio.stop()
        for w in self.watchers:
            w.close()
        for p in (None if self.opts.midi_in else self.midi_in_port, None if self.opts.midi_out else self.midi_out_port):
            if p is not None:
                try:
                    p.close()
                except Exception:
                    pass
        if self.osc is not None:
            self.osc.stop()
        if self.web is not None:
            self.web.stop()
        if self.feedback is not None:
            self.feedback.close()
        if isinstance(self.clock, LinkClock):
            self.clock.close()

    def startup_report(self) -> list[str]:
        o = self.opts
        lines = []
        if self.osc is not None:
            fb = f"{o.feedback[0]}:{o.feedback[1]}" if o.feedback else "sender's port + 1"
            lines.append(f"OSC in on {self.osc.address[0]}:{self.osc.address[1]} (/moodlane/...), feedback to {fb}")
        if self.midi_in_port is not None or o.midi_in:
            m = self.midi_input.mapping
            lines.append(
                f"MIDI in: {o.midi_in or self.midi_in_port.name} (CC {m.valence_cc} valence, CC {m.arousal_cc} arousal; "
                f"14-bit with CC {m.valence_cc + 32}/{m.arousal_cc + 32}; NRPN {m.nrpn_valence}/{m.nrpn_arousal})"
            )
        if self.midi_sink is not None:
            name = (
                self.midi_sink.out.port.name
                if not o.midi_out
                else f"{o.midi_out} (now {self.midi_sink.out.port.name}; reconnects when it appears)"
            )
            lead = "" if o.lead_channel is None else f", the lead on channel {o.lead_channel + 1}"
            lines.append(f"MIDI out: {name} (channel {o.channel + 1}{lead})")
        if self.audio is not None:
            lines.append(
                f"audio out: {self.audio.device_name} at {self.audio.sample_rate} Hz, block {self.audio.blocksize}, "
                f"output latency {self.audio.output_latency_ms:.1f} ms"
            )
        if self.web is not None:
            lines += self.web.startup_lines()
        for part, why in self.unavailable.items():
            lines.append(f"unavailable: {part}: {why}")
        tail = f"; audio adds {self.audio.output_latency_ms:.0f} ms of output buffer" if self.audio is not None else ""
        if self.generator.kind == "notes":
            bar_ms = 4 * 60000.0 / self.clock.tempo
            lines.append(
                "latency: arousal reaches the next note's velocity at once; new content starts at the next chunk "
                f"(a bar: at most {bar_ms:.0f} ms at {self.clock.tempo:.0f} BPM){tail}"
            )
        else:
            beats = self.config.audio_chunk_beats
            lines.append(
                f"latency: a lane change remakes the chunk that plays ({beats:g} beat{'s' * (beats != 1)}) and splices it in "
                f"with a {SPLICE_S * 1000:.0f} ms crossfade: about one chunk's making time{tail}"
            )
        return lines


def serve(opts: ServeOptions, generator) -> int:
    server = Server(opts, generator)
    previous = signal.signal(signal.SIGTERM, server.request_stop)
    try:
        server.start()
        for line in server.startup_report():
            print(line, file=sys.stderr)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
        print("moodlane serve: stopped, all notes off", file=sys.stderr)
    return 0
