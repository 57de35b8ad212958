"""MIDI in and out with mido; hardware through python-rtmidi, loaded lazily.

Backends are chosen by name or `MOODLANE_MIDI_BACKEND` (a mido backend string): the default
tries the ALSA sequencer, then JACK (`mido.backends.rtmidi/UNIX_JACK`), which works on a
machine without sound hardware when a JACK server runs. `MemoryPort` stands in for tests.

Default control mapping (documented in the README and `presets/daw/mapping.json`):
* CC 16 valence, CC 17 arousal (General Purpose 1/2), 7-bit; with CC 48 / CC 49 as
  their LSBs they become 14-bit pairs, as the MIDI spec pairs CC n with CC n + 32;
* NRPN 8192 (MSB 64, LSB 0) valence and 8193 (MSB 64, LSB 1) arousal, data entry
  CC 6 (+ CC 38 for 14 bits);
* MIDI learn: the next CC that arrives is assigned to the lane being learned.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from moodlane.daw_bridge.clock import MidiClock
from moodlane.daw_bridge.control import LiveControl

log = logging.getLogger(__name__)
ENV_VAR = "MOODLANE_MIDI_BACKEND"
CANDIDATES = ("mido.backends.rtmidi", "mido.backends.rtmidi/UNIX_JACK")
IN_NAME, OUT_NAME = "MoodLane In", "MoodLane Out"


class MidiUnavailable(RuntimeError):
    """No MIDI backend could open ports on this machine."""


_PROBED: set[str] = set()  # backends whose probe port opened in this process


def open_backend(name: str | None = None):
    """A mido Backend that can open virtual ports, or MidiUnavailable saying why. Each backend
    is probed once per process: RtMidi's JACK port, closed just after it opened, can crash
    the process (a segfault in `close_port`, once in four local runs of the JACK tests)."""
    import mido

    chosen = name or os.environ.get(ENV_VAR)
    if chosen:
        names = [chosen]
    elif os.path.exists("/dev/snd/seq") or sys.platform != "linux":
        names = list(CANDIDATES)
    else:  # no ALSA sequencer: asking for it only prints ALSA's complaint
        names = [CANDIDATES[1]]
    errors = []
    for n in names:
        try:
            backend = mido.Backend(n, load=True)
            if n not in _PROBED:
                probe = backend.open_output("MoodLane probe", virtual=True)
                probe.close()
                _PROBED.add(n)
            return backend
        except Exception as e:  # rtmidi raises SystemError/OSError subclasses per API
            errors.append(f"{n}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise MidiUnavailable("no MIDI backend works here (" + "; ".join(errors) + "); on Linux without ALSA start a JACK server")


class MemoryPort:
    """An in-memory port with mido's send()/callback shape, for unit tests."""

    def __init__(self, name: str = "memory") -> None:
        import mido

        self.name = name
        self.sent: list = []
        self.callback: Callable | None = None
        self.closed = False
        self._mido = mido

    def send(self, msg) -> None:
        self.sent.append(msg)
        if self.callback is not None:
            self.callback(msg)

    def close(self) -> None:
        self.closed = True


@dataclass
class CCMapping:
    valence_cc: int = 16
    arousal_cc: int = 17
    channel: int | None = None  # None: any channel
    nrpn_valence: int = 64 << 7
    nrpn_arousal: int = (64 << 7) | 1

    @classmethod
    def from_json(cls, d: dict, where: str = "mapping") -> CCMapping:
        """From a versioned `moodlane.midi_mapping` document (presets/mapping.json)."""
        if not isinstance(d, dict) or d.get("format") != "moodlane.midi_mapping" or d.get("version") != 1:
            raise ValueError(f"{where}: expected format 'moodlane.midi_mapping' version 1")

        def num(path: str, x, lo: int, hi: int) -> int:
            if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
                raise ValueError(f"{where}: {path} must be an integer in [{lo}, {hi}], got {x!r}")
            return x

        out = {}
        for lane in ("valence", "arousal"):
            m = d.get(lane)
            if not isinstance(m, dict):
                raise ValueError(f"{where}: missing the {lane!r} object")
            out[f"{lane}_cc"] = num(f"{lane}.cc", m.get("cc"), 0, 119)
            out[f"nrpn_{lane}"] = num(f"{lane}.nrpn", m.get("nrpn"), 0, 16383)
            lsb = m.get("lsb_cc")
            if lsb is not None and lsb != out[f"{lane}_cc"] + 32:
                raise ValueError(f"{where}: {lane}.lsb_cc must be cc + 32 (MIDI pairs CC n with CC n+32), got {lsb!r}")
        ch = d.get("channel")
        channel = None if ch is None else num("channel", ch, 1, 16) - 1
        return cls(channel=channel, **out)

    def lane_of_cc(self, cc: int) -> tuple[str, bool] | None:
        """(lane, is_lsb) for a CC number, or None."""
        if cc == self.valence_cc:
            return "valence", False
        if cc == self.arousal_cc:
            return "arousal", False
        if self.valence_cc < 32 and cc == self.valence_cc + 32:
            return "valence", True
        if self.arousal_cc < 32 and cc == self.arousal_cc + 32:
            return "arousal", True
        return None


@dataclass
class MidiControlInput:
    """Turns incoming MIDI into control changes and clock events. Never raises."""

    control: LiveControl
    mapping: CCMapping = field(default_factory=CCMapping)
    clock: MidiClock | None = None
    learning: str | None = None
    on_learned: Callable[[str, int], None] | None = None
    ignored: int = 0

    def __post_init__(self) -> None:
        self._msb: dict[str, int] = {}
        self._nrpn = [None, None]  # (MSB, LSB) of the selected NRPN parameter
        self._data_msb: int | None = None
        self._lock = threading.Lock()

    def learn(self, lane: str) -> None:
        if lane not in ("valence", "arousal"):
            raise ValueError(f"learn expects 'valence' or 'arousal', got {lane!r}")
        self.learning = lane

    def _set(self, lane: str, value: int, bits: int) -> None:
        v = 2.0 * value / ((1 << bits) - 1) - 1.0
        (self.control.set_valence if lane == "valence" else self.control.set_arousal)(v, source=f"midi cc {bits}-bit")

    def __call__(self, msg) -> None:
        try:
            with self._lock:
                self._handle(msg)
        except Exception as e:  # garbage must never reach the port's thread
            self.ignored += 1
            log.debug("MIDI message %r ignored: %s", msg, e)

    def _handle(self, msg) -> None:
        t = msg.type
        if t in ("clock", "start", "stop", "continue", "songpos"):
            if self.clock is not None:
                self.clock.on_message(t, getattr(msg, "pos", 0))
            return
        if t != "control_change":
            self.ignored += 1  # notes, sysex, aftertouch...: not ours
            return
        if self.mapping.channel is not None and msg.channel != self.mapping.channel:
            return
        cc, val = msg.control, msg.value
        if cc == 99:
            self._nrpn = [val, None]
            return
        if cc == 98:
            self._nrpn[1] = val
            return
        if cc in (6, 38) and None not in self._nrpn:
            param = (self._nrpn[0] << 7) | self._nrpn[1]
            lane = {self.mapping.nrpn_valence: "valence", self.mapping.nrpn_arousal: "arousal"}.get(param)
            if lane is None:
                return
            if cc == 6:
                self._data_msb = val
                self._set(lane, val << 7, 14)
            elif self._data_msb is not None:
                self._set(lane, (self._data_msb << 7) | val, 14)
            return
        if self.learning is not None and cc not in (6, 38, 98, 99) and not 32 <= cc < 64:
            lane, self.learning = self.learning, None
            if lane == "valence":
                self.mapping.valence_cc = cc
            else:
                self.mapping.arousal_cc = cc
            log.info("MIDI learn: %s <- CC %d", lane, cc)
            if self.on_learned is not None:
                self.on_learned(lane, cc)
        hit = self.mapping.lane_of_cc(cc)
        if hit is None:
            return
        lane, is_lsb = hit
        if is_lsb:
            if lane in self._msb:
                self._set(lane, (self._msb[lane] << 7) | val, 14)
        else:
            self._msb[lane] = val
            self._set(lane, val, 7)


class MidiOut:
    """Note output with bookkeeping: every note-on gets its note-off, and `panic()` sends
    note-offs for whatever sounds plus All Notes Off (CC 123) on each channel. With a
    `lead_channel`, the lead's notes (`lead=True`) go out there, so a producer can give the
    melody its own instrument; everything else plays on `channel`."""

    def __init__(self, port, channel: int = 0, lead_channel: int | None = None) -> None:
        import mido

        self.port = port
        self.channel = channel
        self.lead_channel = channel if lead_channel is None else lead_channel
        self.sounding: dict[tuple[int, int], int] = {}  # (channel, pitch) -> count
        self._mido = mido
        self._lock = threading.Lock()

    def set_port(self, port) -> None:
        with self._lock:
            self.port = port

    def _send(self, kind: str, channel: int, **fields) -> None:
        self.port.send(self._mido.Message(kind, channel=channel, **fields))

    def note_on(self, pitch: int, velocity: int, lead: bool = False) -> None:
        key = (self.lead_channel if lead else self.channel, pitch)
        with self._lock:
            if self.sounding.get(key):  # retrigger: close the old one first
                self._send("note_off", key[0], note=pitch, velocity=0)
                self.sounding[key] -= 1
            self._send("note_on", key[0], note=pitch, velocity=max(1, min(127, velocity)))
            self.sounding[key] = self.sounding.get(key, 0) + 1

    def note_off(self, pitch: int, lead: bool = False) -> None:
        key = (self.lead_channel if lead else self.channel, pitch)
        with self._lock:
            if not self.sounding.get(key):
                return  # already closed by a retrigger or a panic
            self._send("note_off", key[0], note=pitch, velocity=0)
            self.sounding[key] -= 1

    def cc(self, control: int, value: int) -> None:
        with self._lock:
            for ch in sorted({self.channel, self.lead_channel}):
                self._send("control_change", ch, control=control, value=max(0, min(127, value)))

    def panic(self) -> None:
        with self._lock:
            try:
                for (ch, pitch), n in list(self.sounding.items()):
                    for _ in range(n):
                        self._send("note_off", ch, note=pitch, velocity=0)
                for ch in sorted({self.channel, self.lead_channel}):
                    self._send("control_change", ch, control=123, value=0)
            except Exception as e:  # a port that vanished: nothing more to silence
                log.warning("MIDI panic could not reach the port: %s", e)
            self.sounding.clear()


class NullPort:
    """Stands in for a named port that is not there (yet): messages are dropped."""

    name = "(not connected)"

    def send(self, msg) -> None:
        pass

    def close(self) -> None:
        pass


class PortWatcher:
    """Keeps a connection to a port another program owns, by name. When the port vanishes,
    output goes on into a `NullPort`; when it comes back, it is reopened (polled)."""

    def __init__(self, backend, fragment: str, kind: str, on_port: Callable, callback: Callable | None = None) -> None:
        self.backend, self.fragment, self.kind = backend, fragment, kind
        self.on_port, self.callback = on_port, callback
        self.port = None
        self.reconnects = 0

    def _names(self) -> list[str]:
        return self.backend.get_output_names() if self.kind == "output" else self.backend.get_input_names()

    def poll(self) -> bool:
        """Returns whether the port is connected now."""
        try:
            match = next((n for n in self._names() if self.fragment in n), None)
        except Exception as e:
            log.debug("listing MIDI ports failed: %s", e)
            return self.port is not None
        if match is None:
            if self.port is not None:
                log.warning("MIDI port %r disappeared; retrying while output goes on", self.fragment)
                self.on_port(NullPort())  # first swap (under the sender's lock), then close:
                self._close()  # a send on a closed rtmidi port crashes the process
            return False
        if self.port is None:
            try:
                if self.kind == "output":
                    self.port = self.backend.open_output(match)
                else:
                    self.port = self.backend.open_input(match, callback=self.callback)
            except Exception as e:
                log.warning("MIDI port %r is listed but did not open (%s); retrying", match, e)
                return False
            self.reconnects += 1
            log.info("MIDI port %r connected", match)
            self.on_port(self.port)
        return True

    def _close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
        self.port = None

    def close(self) -> None:
        if self.port is not None:
            self._close()


class MidiMonitor:
    """A port callback that timestamps every message (benchmarks and tests listen with it)."""

    def __init__(self) -> None:
        import time

        self._now = time.monotonic
        self.messages: list[tuple[float, object]] = []
        self._lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self._lock:
            self.messages.append((self._now(), msg))

    def note_ons(self, t0: float = 0.0, t1: float = float("inf")) -> list[tuple[float, object]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if t0 <= t < t1 and m.type == "note_on" and m.velocity > 0]
