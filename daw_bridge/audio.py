"""Audio out: chunks played in a sounddevice (PortAudio) callback, for DAWs that record an
audio device (on Linux: a JACK port).

Notes are rendered through FluidSynth: the callback maps its block to beats through the
clock (the block's DAC time), applies each due event at its own frame, and renders in
between, so notes land sample-accurately however large the block. Audio chunks (PCM) are
resampled to the device rate when scheduled, placed on the stream's frame timeline at their
start beat when first due, and mixed with crossfades at every join (`engine.mixer`); a
stop fades whatever sounds out in a few ms instead of cutting it.

The callback never raises (PortAudio would stop the stream): an error is counted and the
block is silent. Its queues are bounded, so a stream that stops cannot make them grow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from moodlane.daw_bridge.clock import Clock
from moodlane.daw_bridge.control import LiveControl
from moodlane.daw_bridge.live import EventQueue, LiveConfig, LiveExpression, NoteLog, chunk_events
from moodlane.engine.chunk import Chunk
from moodlane.engine.mixer import Mixer, resample

log = logging.getLogger(__name__)
FADE_S = 0.005  # a stop or reset fades out over 5 ms: no click
SPLICE_S = 0.03  # a remade chunk takes over from the one playing over 30 ms (a crossfade of two takes)
MAX_PENDING = 64  # audio chunks waiting for their first block


class AudioUnavailable(RuntimeError):
    """No audio device or library."""


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise AudioUnavailable(f"sounddevice cannot load PortAudio ({e}); install libportaudio2") from None
    return sd


class Scope:
    """The last `size` frames the stream played, mono: what a level meter and a spectrogram
    strip read (the web page). Written by the audio callback (one copy a block), read by
    the web thread; a read may see a block half written, which a display can afford."""

    def __init__(self, size: int = 4096) -> None:
        self.buf = np.zeros(size, dtype=np.float32)
        self.pos = 0
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        mono = block.mean(axis=1) if block.ndim == 2 else block
        n = min(len(mono), len(self.buf))
        end = self.pos + n
        if end <= len(self.buf):
            self.buf[self.pos : end] = mono[-n:]
        else:
            k = len(self.buf) - self.pos
            self.buf[self.pos :] = mono[-n : -n + k]
            self.buf[: end - len(self.buf)] = mono[-n + k :]
        self.pos = end % len(self.buf)
        self.frames += len(mono)

    def last(self, n: int) -> np.ndarray:
        n = min(n, len(self.buf))
        return np.roll(self.buf, -self.pos)[-n:].copy()


class AudioSink:
    def __init__(
        self,
        clock: Clock,
        control: LiveControl | None = None,
        config: LiveConfig = LiveConfig(),
        soundfont: str | None = None,
        sample_rate: int | None = None,
        blocksize: int = 512,
        device: str | int | None = None,
        synth: bool = True,
    ) -> None:
        self.sd = _sounddevice()
        try:
            info = self.sd.query_devices(device, "output")
        except Exception as e:
            raise AudioUnavailable(f"no audio output device ({e})") from None
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.clock, self.control, self.config = clock, control, config
        self.synth = None
        if synth:  # notes need a SoundFont synth; a PCM-only engine does not
            from moodlane.engine.synth import FluidSynth

            self.synth = FluidSynth(soundfont, self.sample_rate)
        self.queue = EventQueue(config.max_events)
        self.mixer = Mixer(self.sample_rate, 2)
        self._pending: deque[tuple[int, float, np.ndarray, int, int]] = deque()  # (chunk, start beat, windowed pcm, version, frames)
        self._last_placed: tuple[int, int] | None = None
        self._placed_at: dict[int, int] = {}  # chunk -> its timeline frame (a remake lands at the same one)
        self._lock = threading.Lock()
        self.blocksize = blocksize
        self.device = device
        self.device_name = info["name"]
        self.frame = 0  # stream frames rendered so far
        self.blocks = 0
        self.underruns = 0
        self.errors = 0
        self.restarts = 0
        self.overflow = 0
        self.late_dropped = 0
        self.peak = 0.0
        self.scope = Scope()
        self.played = NoteLog()  # a notes engine's notes, as the synth plays them
        self.expression = LiveExpression(control, config)
        self.latency_ms = self.expression.latency_ms
        self.callback_ms: deque[float] = deque(maxlen=5000)
        self.stream = None
        self._stopping = False

    # -- ChunkSink (scheduler thread) --------------------------------------------------
    def schedule(self, chunk: Chunk, start_beat: float, version: int = 0) -> None:
        if chunk.notes is not None:  # a notes engine's sink has its synth (serve makes it so)
            self.queue.push(chunk_events(chunk, start_beat, version))
            return
        audio = resample(chunk.audio, self.sample_rate)
        pcm = self.mixer.prepare(audio, first=chunk.bar == 0)
        with self._lock:
            if any(p[0] == chunk.bar for p in self._pending):  # a remake (live rollback) replaces the queued version
                self._pending = deque(p for p in self._pending if p[0] != chunk.bar)
            self._pending.append((chunk.bar, start_beat, pcm, version, audio.frames))
            if len(self._pending) > MAX_PENDING:  # the stream is not consuming: keep the newest
                self._pending.popleft()
                self.overflow += 1

    def cancel_from(self, chunk: int) -> None:
        self.queue.cancel_from(chunk)
        with self._lock:
            self._pending = deque(p for p in self._pending if p[0] < chunk)
            self._placed_at = {k: v for k, v in self._placed_at.items() if k < chunk}
        # a chunk the callback has begun (it reads a block ahead) fades out instead of stopping
        self.mixer.cancel_from(chunk, fade_from=self.frame + self.blocksize, fade_frames=int(FADE_S * self.sample_rate))

    @property
    def read_ahead_s(self) -> float:
        """The callback commits a block ahead of its DAC time, plus the output buffer."""
        return self.blocksize / self.sample_rate + (float(self.stream.latency) if self.stream is not None else 0.0)

    def clear(self) -> None:
        self.queue.clear()
        with self._lock:
            self._pending.clear()
            self._placed_at = {}
        self._last_placed = None
        self.mixer.fade_out(self.frame + self.blocksize, int(FADE_S * self.sample_rate))
        self.panic()

    # -- the callback ------------------------------------------------------------------
    def _place_due(self, dac: float, frames: int) -> None:
        """Audio chunks whose start falls before this block's end join the timeline."""
        end = dac + frames / self.sample_rate
        with self._lock:
            due = [p for p in self._pending if self.clock.time_of(p[1]) < end]
            for p in due:
                self._pending.remove(p)
        for bar, beat, pcm, version, frames in due:
            start = self.frame + int(round((self.clock.time_of(beat) - dac) * self.sample_rate))
            prev = self._last_placed
            remake = bar in self._placed_at
            if remake:
                start = self._placed_at[bar]  # where the version it replaces is
            elif prev is not None and bar == prev[0] + 1 and abs(start - prev[1]) <= self.sample_rate // 50:
                start = prev[1]  # the last chunk's successor: joined sample-exactly, not re-timed by this block's jitter
            self._last_placed = (bar, start + frames)  # (chunk, where its successor starts)
            self._placed_at[bar] = start
            if len(self._placed_at) > 4 * MAX_PENDING:
                self._placed_at = dict(list(self._placed_at.items())[-MAX_PENDING:])
            if remake or start < self.frame:  # it replaces what plays, or it is late: fade it in where it lands
                self.mixer.splice(bar, start, pcm, self.frame, int(SPLICE_S * self.sample_rate))
            else:
                self.mixer.place(bar, start, pcm)
            self.expression.heard(dac + max(start - self.frame, 0) / self.sample_rate, made_under=version)

    def _render_notes(self, out: np.ndarray, dac: float, frames: int) -> None:
        pos = 0
        if self.clock.running:
            end_beat = self.clock.beat(dac + frames / self.sample_rate)
            for ev in self.queue.due(end_beat):
                at = self.clock.time_of(ev.beat)
                if ev.kind and at < dac - self.config.late_tolerance_s:  # behind: skip it, never a burst at frame 0
                    self.late_dropped += 1
                    continue
                f = int(round((at - dac) * self.sample_rate))
                f = min(max(f, pos), frames)
                if f > pos:
                    out[pos:f] = self.synth.render_block(f - pos)
                    pos = f
                if ev.kind:
                    velocity = self.expression.velocity(ev)
                    self.synth.note_on(ev.pitch, velocity)
                    self.expression.heard(dac)  # velocity follows the lane at once
                    self.played.add(at, ev.pitch, velocity)
                else:
                    self.synth.note_off(ev.pitch)
                    self.played.add(at, ev.pitch, 0)
        if pos < frames:
            out[pos:] = self.synth.render_block(frames - pos)

    def _callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        t_start = time.perf_counter()
        try:
            if status.output_underflow:
                self.underruns += 1
            now = time.monotonic()
            dac = now + max(0.0, time_info.outputBufferDacTime - time_info.currentTime)
            if self.synth is not None:
                self._render_notes(outdata, dac, frames)
            else:
                outdata.fill(0.0)
            if self.clock.running:
                self._place_due(dac, frames)
            self.mixer.mix_into(outdata, self.frame)
            np.clip(outdata, -1.0, 1.0, out=outdata)
            self.scope.write(outdata)
            self.peak = max(self.peak, float(np.abs(outdata).max()) if frames else 0.0)
        except Exception as e:  # never let PortAudio see an exception: it stops the stream
            outdata.fill(0.0)
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning("audio callback failed %d times (%s: %s)", self.errors, type(e).__name__, e)
        self.frame += frames
        self.blocks += 1
        self.callback_ms.append((time.perf_counter() - t_start) * 1000.0)

    # -- stream ------------------------------------------------------------------------
    def start(self) -> AudioSink:
        try:
            self.stream = self.sd.OutputStream(
                samplerate=self.sample_rate,
                blocksize=self.blocksize,
                channels=2,
                dtype="float32",
                device=self.device,
                callback=self._callback,
            )
            self.stream.start()
        except Exception as e:
            raise AudioUnavailable(f"cannot open the audio stream on {self.device_name!r} ({e})") from None
        return self

    def watchdog(self) -> bool:
        """Restart a stream that stopped by itself (device gone, PortAudio error). Returns
        whether the stream runs."""
        if self.stream is None or self._stopping:
            return False
        if self.stream.active:
            return True
        try:
            self.stream.close()
        except Exception:
            pass
        try:
            self.restarts += 1
            log.warning("audio stream stopped; restarting it (restart %d)", self.restarts)
            self.start()
            return True
        except AudioUnavailable as e:
            log.warning("%s", e)
            return False

    @property
    def output_latency_ms(self) -> float:
        return float(self.stream.latency) * 1000.0 if self.stream is not None else 0.0

    def panic(self) -> None:
        if self.synth is not None:
            self.synth.all_notes_off()

    def stop(self) -> None:
        self._stopping = True
        self.panic()
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
        if self.synth is not None:
            self.synth.close()
