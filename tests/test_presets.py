import json

import pytest

from presets import PresetError, get_emotion_preset, load_emotion_presets

REQUIRED = {"tender", "triumphant", "tense", "melancholy", "serene"}


def test_shipped_presets_are_valid_and_sit_in_their_quadrants():
    p = load_emotion_presets()
    assert REQUIRED <= p.keys()
    assert p["tender"].emotion.quadrant == 4 and p["triumphant"].emotion.quadrant == 1
    assert p["tense"].emotion.quadrant == 2 and p["melancholy"].emotion.quadrant == 3


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PresetError, match="unknown preset 'blissful'.*tender"):
        get_emotion_preset("blissful")


@pytest.mark.parametrize(
    "doc,match",
    [
        ({"format": "moodlane.emotion_presets", "version": 2, "presets": {}}, "version"),
        ({"format": "moodlane.emotion_presets", "version": 1, "presets": {"Bad Name": {"valence": 0, "arousal": 0}}}, "name"),
        ({"format": "moodlane.emotion_presets", "version": 1, "presets": {"x": {"valence": 3, "arousal": 0}}}, "valence"),
        ({"format": "moodlane.emotion_presets", "version": 1, "presets": {"x": {"valence": 0}}}, "arousal"),
        ({"format": "moodlane.emotion_presets", "version": 1, "presets": {"x": {"valence": 0, "arousal": 0, "tempo": 5}}}, "tempo"),
    ],
)
def test_invalid_preset_files(tmp_path, doc, match):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(PresetError, match=match):
        load_emotion_presets(f)
