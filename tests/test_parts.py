"""Parts: POP909's MELODY, BRIDGE and PIANO tracks survive parsing as each note's part; where
a file does not mark its parts, the lead is found by a monophonic skyline."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.attributes import lead_line
from moodlane.engine.symbolic.notes import ACCOMPANIMENT, BRIDGE, MELODY, NoteArray, align_to_grid, parse_midi


def score(tracks: dict[str, list[tuple[int, int, int]]]) -> bytes:
    """tracks: name -> (start tick, duration ticks, pitch); 480 ticks a beat."""
    s = symusic.Score(480)
    for name, notes in tracks.items():
        t = symusic.Track(name, 0, False)
        for start, dur, pitch in notes:
            t.notes.append(symusic.Note(start, dur, pitch, 80))
        s.tracks.append(t)
    return bytes(s.dumps_midi())


def test_pop909_tracks_become_parts_that_survive_windows_and_alignment():
    midi = score({"MELODY": [(0, 480, 72), (480, 480, 74)], "BRIDGE": [(960, 480, 76)], "PIANO": [(0, 960, 48), (0, 960, 55)]})
    n = parse_midi(midi)
    assert len(n) == 5
    by_pitch = dict(zip(n.pitch.tolist(), n.part.tolist()))
    assert by_pitch == {48: ACCOMPANIMENT, 55: ACCOMPANIMENT, 72: MELODY, 74: MELODY, 76: BRIDGE}
    w = n.window(0, 1)
    assert dict(zip(w.pitch.tolist(), w.part.tolist())) == by_pitch  # one 4/4 bar holds all
    shifted = NoteArray(n.start + 0.1, n.duration, n.pitch, n.velocity, part=n.part)
    assert dict(zip(align_to_grid(shifted).pitch.tolist(), align_to_grid(shifted).part.tolist())) == by_pitch
    assert lead_line(n).tolist() == [p >= 72 for p in n.pitch.tolist()]
    # tracks not named as POP909 names them: the parts are not known
    assert parse_midi(score({"Piano": [(0, 480, 60)], "Strings": [(0, 480, 64)]})).part is None
    with pytest.raises(ValueError, match="part has 1 entries for 2 notes"):
        NoteArray(np.zeros(2), np.ones(2), np.array([60, 64]), np.array([80, 80]), part=np.zeros(1))


def test_lead_line_is_a_monophonic_skyline_above_the_middle():
    """Unmarked piano: the top note of each onset is the lead, unless it lies under the piece's
    median pitch (an accompaniment chord while the tune rests) or under a higher lead note
    that still sounds."""
    rows = [
        (0.0, 2.0, 76),  # lead, held over the next onset
        (0.0, 1.0, 48),
        (0.0, 1.0, 55),
        (1.0, 1.0, 60),  # the top note at beat 1, but under the held 76: accompaniment
        (1.0, 1.0, 52),
        (2.0, 1.0, 74),  # lead
        (2.0, 1.0, 50),
        (3.0, 1.0, 50),  # the tune rests: this top note is under the median: accompaniment
        (3.0, 1.0, 43),
    ]
    start, dur, pitch = (np.array(c) for c in zip(*rows))
    n = NoteArray(start, dur, pitch, np.full(len(rows), 80))
    assert sorted(n.pitch[lead_line(n)].tolist()) == [74, 76]
    assert not lead_line(NoteArray.empty()).any()


def test_render_parts_tracks_writes_the_lead_and_the_accompaniment_apart(tmp_path, capsys):
    """`render --parts tracks`: the same notes as one track, split into Lead and Accompaniment."""
    from tests.conftest import run_cli

    common = ["render", "--valence", "0.6", "--arousal", "0.4", "--bars", "4", "--seed", "3", "-q"]
    assert run_cli([*common, "-o", str(tmp_path / "one.mid")], capsys)[0] == 0
    assert run_cli([*common, "-o", str(tmp_path / "two.mid"), "--parts", "tracks"], capsys)[0] == 0
    one, two = (symusic.Score(str(tmp_path / f)) for f in ("one.mid", "two.mid"))
    assert [t.name for t in two.tracks] == ["Lead", "Accompaniment"] and len(one.tracks) == 1
    assert all(len(t.notes) > 0 for t in two.tracks)
    key = lambda ts: sorted((n.time, n.pitch, n.duration) for t in ts for n in t.notes)  # noqa: E731
    assert key(one.tracks) == key(two.tracks)
    # the Lead track is the lead of what the engine made: the model's own where it marks one
    # (a model with parts), else the skyline
    from moodlane.engine.registry import load_generator
    from moodlane.engine.session import render

    gen, e = load_generator(), Emotion(0.6, 0.4)
    made, _ = render(gen, EmotionCurve.constant(e), 4, seed=3, qpm=gen.default_tempo(e))
    assert sorted(n.pitch for n in two.tracks[0].notes) == sorted(made.pitch[lead_line(made)].tolist())
