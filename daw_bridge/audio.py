"""Audio out: the scheduled notes rendered through FluidSynth inside a sounddevice
(PortAudio) callback, for DAWs that record an audio device (on Linux: a JACK port).

The callback maps its block to beats through the clock (the block's DAC time), applies
each due event at its own frame, and renders in between, so notes land sample-accurately
however large the block. Arousal acts at once through CC 11 on the synth channel.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np

from daw_bridge.clock import Clock
from daw_bridge.control import LiveControl
from daw_bridge.live import EventQueue, LiveConfig, expression_cc, expressive_velocity

log = logging.getLogger(__name__)


class AudioUnavailable(RuntimeError):
    """No audio device or library."""


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise AudioUnavailable(f"sounddevice cannot load PortAudio ({e}); install libportaudio2") from None
    return sd


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
    ) -> None:
        from daw_bridge.synth import FluidSynth

        self.sd = _sounddevice()
        try:
            info = self.sd.query_devices(device, "output")
        except Exception as e:
            raise AudioUnavailable(f"no audio output device ({e})") from None
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.clock, self.control, self.config = clock, control, config
        self.synth = FluidSynth(soundfont, self.sample_rate)
        self.queue = EventQueue()
        self.blocksize = blocksize
        self.device = device
        self.device_name = info["name"]
        self.blocks = 0
        self.underruns = 0
        self.peak = 0.0
        self.latency_ms: deque[float] = deque(maxlen=1000)
        self.callback_ms: deque[float] = deque(maxlen=5000)
        self._seen_version = control.version if control else 0
        self._last_cc: int | None = None
        self.stream = None

    def _callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        t_start = time.perf_counter()
        if status.output_underflow:
            self.underruns += 1
        now = time.monotonic()
        dac = now + max(0.0, time_info.outputBufferDacTime - time_info.currentTime)
        c = self.control
        if c is not None and self.config.expression:
            v = expression_cc(c.current().arousal)
            if v != self._last_cc:
                self.synth.synth.cc(0, 11, v)
                self._last_cc = v
            if c.version != self._seen_version and c.last_event is not None:
                self._seen_version = c.version
                self.latency_ms.append((dac - c.last_event.t) * 1000.0)
        pos = 0
        if self.clock.running:
            end_beat = self.clock.beat(dac + frames / self.sample_rate)
            for ev in self.queue.due(end_beat):
                f = int(round((self.clock.time_of(ev.beat) - dac) * self.sample_rate))
                f = min(max(f, pos), frames)
                if f > pos:
                    outdata[pos:f] = self.synth.render_block(f - pos)
                    pos = f
                if ev.kind:
                    vel = ev.velocity
                    if c is not None and self.config.expression:
                        vel = expressive_velocity(vel, ev.arousal, c.current().arousal, self.config.expression_depth)
                    self.synth.note_on(ev.pitch, vel)
                else:
                    self.synth.note_off(ev.pitch)
        if pos < frames:
            outdata[pos:] = self.synth.render_block(frames - pos)
        self.blocks += 1
        self.peak = max(self.peak, float(np.abs(outdata).max()) if frames else 0.0)
        self.callback_ms.append((time.perf_counter() - t_start) * 1000.0)

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

    @property
    def output_latency_ms(self) -> float:
        return float(self.stream.latency) * 1000.0 if self.stream is not None else 0.0

    def panic(self) -> None:
        self.synth.all_notes_off()

    def stop(self) -> None:
        self.panic()
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
        self.synth.close()
