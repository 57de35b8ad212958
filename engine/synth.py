"""SoundFont rendering through FluidSynth (pyfluidsynth + libfluidsynth), no audio driver:
the synth is stepped block by block, so rendering runs faster than real time and the same
code feeds a WAV file or a live audio stream."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from moodlane.engine.symbolic.notes import NoteArray

ENV_VAR = "MOODLANE_SOUNDFONT"
SEARCH = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian fluid-soundfont-gm (MIT)
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",  # Debian fluidr3mono-gm-soundfont (MIT)
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
    "/usr/share/soundfonts/default.sf2",
)


class SynthError(RuntimeError):
    """No synthesizer library or no usable SoundFont."""


def find_soundfont(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise SynthError(f"soundfont {p} does not exist (expected an .sf2 or .sf3 file)")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        return find_soundfont(env)
    for s in SEARCH:
        if Path(s).is_file():
            return Path(s)
    try:  # pretty_midi's wheel ships TimGM6mb.sf2 (GPL-2), if the user has it
        import pretty_midi

        p = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        if p.is_file():
            return p
    except ImportError:
        pass
    raise SynthError(
        f"no General MIDI soundfont found: pass --soundfont PATH, set {ENV_VAR}, "
        "or install one (Debian: apt-get install fluidr3mono-gm-soundfont)"
    )


def _fluidsynth():
    try:
        import fluidsynth  # pyfluidsynth, loads libfluidsynth via ctypes
    except (ImportError, OSError) as e:
        raise SynthError(f"FluidSynth is unavailable ({e}); install libfluidsynth3 (apt) and pyfluidsynth (pip)") from None
    return fluidsynth


class FluidSynth:
    """One stereo synth on channel 0. `render_block(n)` advances it by n frames."""

    def __init__(self, soundfont: str | os.PathLike | None = None, sample_rate: int = 44100, program: int = 0, gain: float = 0.6) -> None:
        fs_mod = _fluidsynth()
        self.sample_rate = sample_rate
        self.soundfont = find_soundfont(soundfont)
        self.synth = fs_mod.Synth(gain=gain, samplerate=float(sample_rate))
        sfid = self.synth.sfload(str(self.soundfont))
        if sfid < 0:
            raise SynthError(f"{self.soundfont} is not a loadable SoundFont")
        self.sfid = sfid
        self.set_program(program)

    def set_program(self, program: int) -> None:
        """Silence everything and switch channel 0 to General MIDI `program`."""
        self.synth.system_reset()
        self.synth.program_select(0, self.sfid, 0, int(program))

    def note_on(self, pitch: int, velocity: int) -> None:
        self.synth.noteon(0, int(pitch), int(velocity))

    def note_off(self, pitch: int) -> None:
        self.synth.noteoff(0, int(pitch))

    def all_notes_off(self) -> None:
        self.synth.all_notes_off(0)

    def render_block(self, frames: int) -> np.ndarray:
        """(frames, 2) float32 in [-1, 1]."""
        if frames <= 0:
            return np.zeros((0, 2), np.float32)
        s = np.asarray(self.synth.get_samples(frames), dtype=np.int16).reshape(-1, 2)
        return s.astype(np.float32) / 32768.0

    def close(self) -> None:
        self.synth.delete()


def note_events(notes: NoteArray, sample_rate: int) -> list[tuple[int, int, int, int]]:
    """(frame, kind, pitch, velocity) with kind 0 = off before 1 = on at the same frame."""
    spb = 60.0 / notes.qpm
    ev = []
    for s, d, p, v in zip(notes.start, notes.duration, notes.pitch, notes.velocity):
        on = int(round(s * spb * sample_rate))
        off = int(round((s + d) * spb * sample_rate))
        ev.append((on, 1, int(p), int(v)))
        ev.append((max(off, on + 1), 0, int(p), 0))
    ev.sort()
    return ev


def render_notes(
    notes: NoteArray,
    soundfont: str | os.PathLike | None = None,
    sample_rate: int = 44100,
    tail_s: float = 2.0,
    progress: Callable[[float], None] | None = None,
    program: int = 0,
    synth: FluidSynth | None = None,
) -> np.ndarray:
    """Whole piece -> (frames, 2) float32, with `tail_s` of release after the last note,
    played by General MIDI `program` (0: acoustic grand piano). Pass a `synth` to reuse one
    (loading a SoundFont takes seconds); it is reset first and left open."""
    own = synth is None
    if own:
        synth = FluidSynth(soundfont, sample_rate, program=program)
    else:
        synth.set_program(program)
    try:
        ev = note_events(notes, sample_rate)
        total = (ev[-1][0] if ev else 0) + int(tail_s * sample_rate)
        end_beats = notes.meta.get("beats")
        if end_beats:
            total = max(total, int(end_beats * 60.0 / notes.qpm * sample_rate))
        out, pos = [], 0
        for frame, kind, pitch, vel in ev:
            out.append(synth.render_block(frame - pos))
            pos = max(pos, frame)
            if kind:
                synth.note_on(pitch, vel)
            else:
                synth.note_off(pitch)
            if progress is not None:
                progress(pos / total)
        out.append(synth.render_block(total - pos))
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)
    finally:
        if own:
            synth.close()
