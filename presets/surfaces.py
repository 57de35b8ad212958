"""Layouts for hardware control surfaces, written from one table of MoodLane's OSC
addresses: a TouchOSC layout (`.tosc`: zlib-compressed lexml) and an Open Stage Control
session (`.json`). Each has an XY pad (valence x, arousal y, 0..1 on `/moodlane/n/va`),
preset buttons, play/stop, and a status label fed by `/moodlane/status/text`.

`python -m moodlane.presets.surfaces` rewrites the shipped files in presets/daw/; a test
checks that they match this module and that every address they send is routed.
"""

from __future__ import annotations

import json
import uuid
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

DAW_DIR = Path(__file__).resolve().parent / "daw"
TOSC = DAW_DIR / "touchosc" / "moodlane.tosc"
OSC_SESSION = DAW_DIR / "open-stage-control" / "moodlane.json"
PAD = "/moodlane/n/va"  # x = valence, y = arousal, both 0..1 (Reaper's normalised n/ convention)
STATUS = "/moodlane/status/text"
PRESETS = ("tender", "serene", "joyful", "triumphant", "tense", "angry", "melancholy", "sad")
BUTTONS = [(f"preset {p}", "/moodlane/preset", p) for p in PRESETS] + [("play", "/moodlane/play", None), ("stop", "/moodlane/stop", None)]
W, H = 1024, 700  # layout size (points)


def sent_addresses() -> list[str]:
    """Every address the layouts send."""
    return [PAD] + [addr for _, addr, _ in BUTTONS]


# -- TouchOSC ---------------------------------------------------------------------------
def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"moodlane/{name}"))  # stable: the file is reproducible


def _prop(kind: str, key: str, value: str) -> str:
    return f"<property type='{kind}'><key><![CDATA[{key}]]></key><value>{value}</value></property>"


def _frame(x: float, y: float, w: float, h: float) -> str:
    return _prop("r", "frame", f"<x>{x}</x><y>{y}</y><w>{w}</w><h>{h}</h>")


def _color(r: float, g: float, b: float, a: float = 1.0) -> str:
    return _prop("c", "color", f"<r>{r}</r><g>{g}</g><b>{b}</b><a>{a}</a>")


def _value(key: str, default: str) -> str:
    return (
        f"<value><key><![CDATA[{key}]]></key><locked>0</locked><lockedDefaultCurrent>0</lockedDefaultCurrent>"
        f"<default><![CDATA[{default}]]></default><defaultPull>0</defaultPull></value>"
    )


def _partial(kind: str, conversion: str, value: str, lo: float = 0, hi: float = 1) -> str:
    return (
        f"<partial><type>{kind}</type><conversion>{conversion}</conversion><value><![CDATA[{value}]]></value>"
        f"<scaleMin>{lo}</scaleMin><scaleMax>{hi}</scaleMax></partial>"
    )


def _osc(path: str, args: str, triggers: tuple[tuple[str, str], ...] = (), send: int = 1, receive: int = 0) -> str:
    """One OSC message; `triggers`: (value, condition) pairs that send it (ANY: every change,
    RISE: a button's press only, so its release sends nothing)."""
    trig = "".join(f"<trigger><var><![CDATA[{var}]]></var><condition>{cond}</condition></trigger>" for var, cond in triggers)
    return (
        f"<osc><enabled>1</enabled><send>{send}</send><receive>{receive}</receive><feedback>0</feedback>"
        f"<connections>00001</connections>"
        + (f"<triggers>{trig}</triggers>" if trig else "")
        + f"<path>{_partial('CONSTANT', 'STRING', path)}</path><arguments>{args}</arguments></osc>"
    )


def _node(kind: str, name: str, props: str, values: str, messages: str = "", children: str = "") -> str:
    return (
        f"<node ID='{_id(name)}' type='{kind}'><properties>{_prop('s', 'name', f'<![CDATA[{name}]]>')}{props}</properties>"
        f"<values>{values}</values>"
        + (f"<messages>{messages}</messages>" if messages else "")
        + (f"<children>{children}</children>" if children else "")
        + "</node>"
    )


def _label(name: str, text: str, frame: tuple, size: int, receive: str | None = None) -> str:
    props = _frame(*frame) + _prop("i", "textSize", str(size)) + _prop("b", "background", "0") + _prop("b", "interactive", "0")
    props += _color(1, 1, 1)
    msg = _osc(receive, _partial("VALUE", "STRING", "text"), send=0, receive=1) if receive else ""
    return _node("LABEL", name, props, _value("text", escape(text)) + _value("touch", "false"), msg)


def touchosc_layout() -> bytes:
    """The TouchOSC layout, compressed as TouchOSC saves it."""
    pad = W * 0.55
    kids = [_label("title", "MoodLane", (20, 10, 300, 40), 24)]
    xy_args = _partial("VALUE", "FLOAT", "x") + _partial("VALUE", "FLOAT", "y")
    kids.append(
        _node(
            "XY",
            "valence-arousal",
            _frame(20, 60, pad, pad)
            + _color(0.95, 0.66, 0.23)
            + _prop("b", "lines", "1")
            + _prop("b", "gridX", "1")
            + _prop("b", "gridY", "1")
            + _prop("i", "gridStepsX", "2")
            + _prop("i", "gridStepsY", "2"),
            _value("touch", "false") + _value("x", "0.5") + _value("y", "0.5"),
            _osc(PAD, xy_args, (("x", "ANY"), ("y", "ANY"))),
        )
    )
    kids.append(_label("axes", "valence → (x)   arousal ↑ (y)", (20, 70 + pad, pad, 30), 14))
    bx, bw, bh = 40 + pad, (W - pad - 80) / 2, 56
    for i, (name, addr, arg) in enumerate(BUTTONS):
        args = _partial("CONSTANT", "STRING", arg) if arg else ""
        frame = (bx + (i % 2) * (bw + 20), 60 + (i // 2) * (bh + 14), bw, bh)
        color = _color(0.29, 0.64, 1.0) if arg else _color(0.36, 0.82, 0.55)
        kids.append(
            _node(
                "BUTTON",
                name,
                _frame(*frame) + color + _prop("i", "buttonType", "0"),
                _value("touch", "false") + _value("x", "0"),
                _osc(addr, args, (("x", "RISE"),)),
            )
        )
        kids.append(_label(f"{name} label", arg or name.upper(), frame, 16))
    kids.append(_label("status", "status: waiting for /moodlane/status/text", (20, H - 60, W - 40, 40), 14, receive=STATUS))
    root = _node("GROUP", "moodlane", _frame(0, 0, W, H) + _color(0.08, 0.09, 0.11), _value("touch", "false"), children="".join(kids))
    xml = f"<?xml version='1.0' encoding='UTF-8'?><lexml version='3'>{root}</lexml>"
    return zlib.compress(xml.encode("utf-8"), 9)


# -- Open Stage Control -------------------------------------------------------------------
def open_stage_control_session() -> dict:
    widgets = [
        {
            "type": "xy",
            "id": "valence_arousal",
            "label": "valence → / arousal ↑",
            "left": 20,
            "top": 20,
            "width": 520,
            "height": 520,
            "address": PAD,
            "rangeX": {"min": 0, "max": 1},
            "rangeY": {"min": 0, "max": 1},
            "pointSize": 20,
            "value": [0.5, 0.5],
            "decimals": 3,
        }
    ]
    for i, (name, addr, arg) in enumerate(BUTTONS):
        widgets.append(
            {
                "type": "button",
                "id": name.replace(" ", "_"),
                "label": arg or name,
                "mode": "tap",  # sends `on` when pressed, nothing on release
                "on": arg if arg else 1,
                "off": 0,
                "left": 570 + (i % 2) * 200,
                "top": 20 + (i // 2) * 70,
                "width": 180,
                "height": 56,
                "address": addr,
                "typeTags": "s" if arg else "i",
            }
        )
    widgets.append(
        {
            "type": "text",
            "id": "status",
            "label": False,
            "left": 20,
            "top": 560,
            "width": 950,
            "height": 50,
            "address": STATUS,
            "value": "status",
        }
    )
    root = {"type": "root", "id": "root", "width": "auto", "height": "auto", "widgets": widgets, "tabs": []}
    return {"createdWith": "Open Stage Control", "version": "1.26.2", "type": "session", "content": root}


def write(out: Path = DAW_DIR) -> list[Path]:
    tosc = out / TOSC.relative_to(DAW_DIR)
    osc = out / OSC_SESSION.relative_to(DAW_DIR)
    for p in (tosc, osc):
        p.parent.mkdir(parents=True, exist_ok=True)
    tosc.write_bytes(touchosc_layout())
    osc.write_text(json.dumps(open_stage_control_session(), indent=1, ensure_ascii=False) + "\n")
    return [tosc, osc]


if __name__ == "__main__":
    for p in write():
        print(p)
