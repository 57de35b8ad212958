"""Arousal through loudness: a performance rule on top of the decoder.

Rule systems for emotional expression raise loudness with arousal (Livingstone et al.,
Computer Music Journal 2010; Bresin & Friberg's KTH rules). The decoder's velocity
attribute follows arousal, but only by about ten velocity steps from the calmest to the
most excited, so each bar's velocities are scaled by 2**(depth * arousal). This is
MoodLane's one loudness rule: the live sinks use the same depth for an arousal change that
arrives after a bar was made (x 2**(depth * (a_now - a_bar))), so a note always sounds at
the loudness of the arousal it is played under, never overshooting.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from moodlane.engine.symbolic.notes import NoteArray

DEPTH = 0.3  # x0.81 at arousal -1, x1.23 at +1


def scale_velocity(velocity: np.ndarray | int, arousal: float, depth: float) -> np.ndarray:
    """Velocities x 2**(depth * arousal), kept in MIDI's 1..127."""
    return np.clip(np.round(np.asarray(velocity) * 2.0 ** (depth * arousal)), 1, 127).astype(np.int64)


def apply(notes: NoteArray, arousal: float, depth: float) -> NoteArray:
    if depth == 0 or len(notes) == 0:
        return notes
    return replace(notes, velocity=scale_velocity(notes.velocity, arousal, depth), meta=dict(notes.meta))
