import json

import pytest
import symusic

from moodlane.engine.automation import AutomationError, EmotionCurve, parse_automation
from moodlane.engine.emotion import Emotion


def test_json_points_interpolate_and_hold():
    data = json.dumps(
        {
            "format": "moodlane.automation",
            "version": 1,
            "unit": "beats",
            "points": [{"time": 0, "valence": -1, "arousal": -1}, {"time": 8, "valence": 1, "arousal": 0}],
        }
    ).encode()
    c = parse_automation(data, ".json")
    assert c.at(4.0) == Emotion(0.0, -0.5)
    assert c.at(-3) == Emotion(-1, -1) and c.at(100) == Emotion(1, 0)
    assert c.end_beat == 8


def test_json_lanes_in_seconds_and_unit_scale():
    data = json.dumps({"unit": "seconds", "scale": "unit", "lanes": {"valence": [[0, 0.5], [2, 1.0]], "arousal": [[1, 0.0]]}}).encode()
    c = parse_automation(data, ".json", qpm=90)  # 2 s at 90 BPM = 3 beats
    assert c.valence.times.tolist() == [0, 3] and c.valence.values.tolist() == [0, 1]
    assert c.at(1.5) == Emotion(0.5, -1.0)


def test_csv_beats_and_seconds():
    c = parse_automation(b"beats,valence,arousal\n0,-0.5,-0.5\n16,0.5,0.5\n", ".csv")
    assert c.at(8) == Emotion(0, 0)
    s = parse_automation(b"seconds,valence,arousal\n0,0,0\n4,1,1\n", ".csv", qpm=60)
    assert s.end_beat == 4


def test_midi_cc_lanes():
    score = symusic.Score(480)
    tr = symusic.Track("auto", 0, False)
    tr.controls.append(symusic.ControlChange(0, 16, 0))
    tr.controls.append(symusic.ControlChange(480 * 8, 16, 127))
    tr.controls.append(symusic.ControlChange(0, 17, 127))
    score.tracks.append(tr)
    c = parse_automation(bytes(score.dumps_midi()), ".mid")
    assert c.at(0) == Emotion(-1, 1)
    assert c.at(8) == Emotion(1, 1)
    assert c.at(4).valence == pytest.approx(0.0)


@pytest.mark.parametrize(
    "data,suffix,match",
    [
        (b"{", ".json", "JSON"),
        (b'{"points": []}', ".json", "points"),
        (b'{"points": [{"time": 0, "valence": 2, "arousal": 0}]}', ".json", "valence"),
        (b'{"points": [{"time": 0, "valence": NaN, "arousal": 0}]}', ".json", "finite"),
        (b'{"points": [{"time": -1, "valence": 0, "arousal": 0}]}', ".json", ">= 0"),
        (b'{"format": "other", "points": []}', ".json", "format"),
        (b'{"unit": "bars", "points": [{"time": 0, "valence": 0, "arousal": 0}]}', ".json", "unit"),
        (b"time,v,a\n0,0,0\n", ".csv", "header"),
        (b"beats,valence,arousal\n0,x,0\n", ".csv", "number"),
        (b"beats,valence,arousal\n0,0\n", ".csv", "3 columns"),
        (b"beats,valence,arousal\n", ".csv", "at least one row"),
        (b"MThd", ".mid", "MIDI"),
        (b"", ".txt", ".json, .csv or .mid"),
    ],
)
def test_malformed_automation_names_the_problem(data, suffix, match):
    with pytest.raises(AutomationError, match=match):
        parse_automation(data, suffix)


def test_midi_without_the_lanes():
    score = symusic.Score(480)
    score.tracks.append(symusic.Track("x", 0, False))
    with pytest.raises(AutomationError, match="CC 16"):
        parse_automation(bytes(score.dumps_midi()), ".mid")


def test_constant_curve():
    assert EmotionCurve.constant(Emotion(0.1, 0.2)).at(1e6) == Emotion(0.1, 0.2)
