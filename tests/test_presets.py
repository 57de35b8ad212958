import json

import pytest

from moodlane.presets import PresetError, get_emotion_preset, load_emotion_presets

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


def test_midi_mapping_file_is_valid_and_checked():
    from moodlane.daw_bridge.midi import CCMapping
    from moodlane.presets import PRESET_DIR

    m = CCMapping.from_json(json.loads((PRESET_DIR / "mapping.json").read_text()))
    assert (m.valence_cc, m.arousal_cc, m.nrpn_valence, m.nrpn_arousal, m.channel) == (16, 17, 8192, 8193, None)
    assert m.lane_of_cc(48) == ("valence", True)
    bad = {
        "format": "moodlane.midi_mapping",
        "version": 1,
        "valence": {"cc": 16, "lsb_cc": 40, "nrpn": 1},
        "arousal": {"cc": 17, "nrpn": 2},
    }
    with pytest.raises(ValueError, match="cc \\+ 32"):
        CCMapping.from_json(bad)
    with pytest.raises(ValueError, match="integer"):
        CCMapping.from_json({**bad, "valence": {"cc": 300, "nrpn": 1}})


def test_reaper_pattern_file_only_uses_routed_addresses():
    """Every address the REAPER pattern file makes REAPER send is one MoodLane handles."""
    from moodlane.daw_bridge.control import LiveControl
    from moodlane.daw_bridge.osc import OscRouter
    from moodlane.presets import PRESET_DIR

    router = OscRouter(LiveControl())
    lines = (PRESET_DIR / "daw" / "reaper" / "MoodLane.ReaperOSC").read_text().splitlines()
    patterns = [w for line in lines if line and not line.startswith("#") for w in line.split()[1:] if "/" in w]
    assert patterns
    for p in patterns:
        typ, _, path = p.partition("/")
        assert typ in ("n", "f", "t", "i", "s")
        for k in ("1", "2"):
            addr = "/" + path.replace("@", k)
            handlers = list(router.dispatcher.handlers_for_address(addr))
            assert handlers and all(h.callback != router._unknown for h in handlers), addr
    assert all(h.callback == router._unknown for h in router.dispatcher.handlers_for_address("/moodlane/nope"))
    assert (PRESET_DIR / "daw" / "SETUP.md").read_text().count("Ableton") >= 1


def test_surface_layouts_are_current_and_send_what_moodlane_routes():
    """The shipped TouchOSC layout and Open Stage Control session are what presets.surfaces
    writes; each has an XY pad on /moodlane/n/va, preset buttons, play/stop and a status
    label fed by /moodlane/status/text, and every address they send is routed."""
    import json
    import xml.etree.ElementTree as ET
    import zlib

    from moodlane.daw_bridge.control import LiveControl
    from moodlane.daw_bridge.osc import OscRouter
    from moodlane.presets import load_emotion_presets
    from moodlane.presets import surfaces as sf

    assert zlib.decompress(sf.TOSC.read_bytes()) == zlib.decompress(sf.touchosc_layout()), "run: python -m moodlane.presets.surfaces"
    assert json.loads(sf.OSC_SESSION.read_text()) == sf.open_stage_control_session()
    router = OscRouter(LiveControl())
    known = load_emotion_presets()

    def routed(addr: str) -> bool:
        return all(h.callback != router._unknown for h in router.dispatcher.handlers_for_address(addr))

    # TouchOSC: lexml, zlib-compressed
    root = ET.fromstring(zlib.decompress(sf.TOSC.read_bytes()))
    assert root.tag == "lexml"
    sends, receives, kinds = [], [], []
    for node in root.iter("node"):
        kinds.append(node.get("type"))
        for osc in node.iter("osc"):
            path = "".join(p.findtext("value") for p in osc.find("path"))
            args = [(p.findtext("type"), p.findtext("value")) for p in osc.find("arguments")]
            if osc.findtext("send") == "1":
                sends.append((node.get("type"), path, args))
            if osc.findtext("receive") == "1":
                receives.append((node.get("type"), path))
    assert ("XY", sf.PAD, [("VALUE", "x"), ("VALUE", "y")]) in sends
    assert ("LABEL", "/moodlane/status/text") in receives
    presets = [a[0][1] for t, p, a in sends if p == "/moodlane/preset"]
    assert len(presets) >= 6 and set(presets) <= set(known)
    assert {p for _, p, _ in sends} >= {"/moodlane/play", "/moodlane/stop"}
    assert all(routed(p) for _, p, _ in sends)

    # Open Stage Control: a session whose widgets send the same addresses
    widgets = sf.open_stage_control_session()["content"]["widgets"]
    xy = [w for w in widgets if w["type"] == "xy"]
    assert len(xy) == 1 and xy[0]["address"] == sf.PAD and xy[0]["rangeX"] == xy[0]["rangeY"] == {"min": 0, "max": 1}
    buttons = [w for w in widgets if w["type"] == "button"]
    assert {w["on"] for w in buttons if w["address"] == "/moodlane/preset"} == set(presets)
    assert all(w["mode"] == "tap" for w in buttons)  # a release must not send a second message
    assert any(w["type"] == "text" and w["address"] == "/moodlane/status/text" for w in widgets)
    assert all(routed(w["address"]) for w in xy + buttons)


def test_status_text_is_what_the_status_label_shows():
    from moodlane.daw_bridge.serve import ServeOptions, Server
    from moodlane.engine.mock import MockGenerator

    srv = Server(ServeOptions(midi=False, status_line=False), MockGenerator())
    s = srv.status()
    assert s["text"].startswith("V +0.00 A +0.00 | 120.0 BPM stopped | midi")
    assert srv.status_text() == s["text"]
