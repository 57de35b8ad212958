"""Emotion curves: time -> (valence, arousal), from breakpoints as a DAW draws them.

Each lane (valence, arousal) is its own list of breakpoints, interpolated linearly and
held before the first and after the last point, the way DAW automation reads. Times are
beats; seconds are converted with the session tempo when parsing.

Accepted files (parsed from bytes here; the CLI reads them):
* JSON: `{"format": "moodlane.automation", "version": 1, "unit": "beats"|"seconds",
  "points": [{"time": 0, "valence": -0.6, "arousal": -0.7}, ...]}` or, per lane,
  `"lanes": {"valence": [[t, v], ...], "arousal": [[t, a], ...]}`. `"scale": "unit"`
  reads values as DAW-normalised 0..1.
* CSV with a header: `beats,valence,arousal` or `seconds,valence,arousal`.
* MIDI with two CC lanes, as DAWs export automation: valence on CC 16 and arousal on
  CC 17 by default (General Purpose 1/2), 0..127 -> [-1, 1].
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass

import numpy as np

from moodlane.engine.emotion import Emotion, EmotionError

CC_VALENCE = 16
CC_AROUSAL = 17
FORMAT = "moodlane.automation"
VERSION = 1


class AutomationError(ValueError):
    """An automation file that cannot be read as valence/arousal breakpoints."""


@dataclass(frozen=True)
class Lane:
    times: np.ndarray  # beats, ascending
    values: np.ndarray  # [-1, 1]

    def at(self, beat: float) -> float:
        return float(np.interp(beat, self.times, self.values))


class EmotionCurve:
    """Two lanes; `at(beat)` is the Emotion at that beat."""

    def __init__(self, valence: Lane, arousal: Lane) -> None:
        self.valence, self.arousal = valence, arousal

    @classmethod
    def constant(cls, e: Emotion) -> EmotionCurve:
        return cls(Lane(np.zeros(1), np.array([e.valence])), Lane(np.zeros(1), np.array([e.arousal])))

    @classmethod
    def from_points(cls, points: list[tuple[float, Emotion]]) -> EmotionCurve:
        if not points:
            raise AutomationError("automation holds no breakpoints")
        pts = sorted(points, key=lambda p: p[0])
        t = np.array([p[0] for p in pts], dtype=np.float64)
        return cls(Lane(t, np.array([p[1].valence for p in pts])), Lane(t, np.array([p[1].arousal for p in pts])))

    def at(self, beat: float) -> Emotion:
        return Emotion(self.valence.at(beat), self.arousal.at(beat))

    @property
    def end_beat(self) -> float:
        return float(max(self.valence.times[-1], self.arousal.times[-1]))


def _lane(name: str, pairs: list, to_beats: float, unit_scale: bool) -> Lane:
    if not isinstance(pairs, list) or not pairs:
        raise AutomationError(f"lane {name!r} must be a non-empty list of [time, value] pairs")
    times, vals = [], []
    for i, p in enumerate(pairs):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise AutomationError(f"lane {name!r} point {i}: expected [time, value], got {p!r}")
        t, v = _num(p[0], f"lane {name!r} point {i} time"), _num(p[1], f"lane {name!r} point {i} value")
        if t < 0:
            raise AutomationError(f"lane {name!r} point {i}: time must be >= 0, got {t}")
        times.append(t * to_beats)
        vals.append(_value(v, name, unit_scale, f"lane {name!r} point {i}"))
    order = np.argsort(times, kind="stable")
    return Lane(np.array(times)[order], np.array(vals)[order])


def _num(x: object, where: str) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AutomationError(f"{where}: expected a number, got {x!r}") from None
    if not math.isfinite(v):
        raise AutomationError(f"{where}: expected a finite number, got {x!r}")
    return v


def _value(v: float, lane: str, unit_scale: bool, where: str) -> float:
    try:
        if unit_scale:
            e = Emotion.from_unit(v, 0.5) if lane == "valence" else Emotion.from_unit(0.5, v)
        else:
            e = Emotion(v, 0.0) if lane == "valence" else Emotion(0.0, v)
    except EmotionError as err:
        raise AutomationError(f"{where}: {err}") from None
    return e.valence if lane == "valence" else e.arousal


def _unit_factor(unit: str, qpm: float) -> float:
    if unit in ("beat", "beats"):
        return 1.0
    if unit in ("second", "seconds", "s"):
        return qpm / 60.0
    raise AutomationError(f"time unit must be 'beats' or 'seconds', got {unit!r}")


def parse_json(data: bytes, qpm: float) -> EmotionCurve:
    try:
        d = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AutomationError(f"not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise AutomationError("expected a JSON object with 'points' or 'lanes'")
    if d.get("format", FORMAT) != FORMAT or d.get("version", VERSION) != VERSION:
        raise AutomationError(f"expected format {FORMAT!r} version {VERSION}, got {d.get('format')!r} {d.get('version')!r}")
    k = _unit_factor(str(d.get("unit", "beats")), qpm)
    unit_scale = d.get("scale", "bipolar") == "unit"
    if "lanes" in d:
        lanes = d["lanes"]
        if not isinstance(lanes, dict) or not {"valence", "arousal"} <= lanes.keys():
            raise AutomationError("'lanes' must hold both 'valence' and 'arousal'")
        return EmotionCurve(_lane("valence", lanes["valence"], k, unit_scale), _lane("arousal", lanes["arousal"], k, unit_scale))
    pts = d.get("points")
    if not isinstance(pts, list) or not pts:
        raise AutomationError("expected a non-empty 'points' list (or 'lanes')")
    val, aro = [], []
    for i, p in enumerate(pts):
        if not isinstance(p, dict) or not {"time", "valence", "arousal"} <= p.keys():
            raise AutomationError(f"point {i}: expected {{'time', 'valence', 'arousal'}}, got {p!r}")
        val.append([p["time"], p["valence"]])
        aro.append([p["time"], p["arousal"]])
    return EmotionCurve(_lane("valence", val, k, unit_scale), _lane("arousal", aro, k, unit_scale))


def parse_csv(data: bytes, qpm: float) -> EmotionCurve:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AutomationError("CSV automation is not UTF-8 text") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise AutomationError("CSV automation needs a header (beats|seconds,valence,arousal) and at least one row")
    head = [c.strip().lower() for c in rows[0]]
    if len(head) != 3 or head[1:] != ["valence", "arousal"] or head[0] not in ("beats", "beat", "seconds", "second", "s"):
        raise AutomationError(f"CSV header must be 'beats,valence,arousal' or 'seconds,valence,arousal', got {','.join(head)!r}")
    k = _unit_factor(head[0], qpm)
    val, aro = [], []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != 3:
            raise AutomationError(f"CSV line {i}: expected 3 columns, got {len(r)}")
        val.append([r[0], r[1]])
        aro.append([r[0], r[2]])
    return EmotionCurve(_lane("valence", val, k, False), _lane("arousal", aro, k, False))


def parse_midi_cc(data: bytes, cc_valence: int = CC_VALENCE, cc_arousal: int = CC_AROUSAL) -> EmotionCurve:
    """CC lanes from any track/channel; times in beats from the file's ticks per beat.
    (mido, not symusic: symusic drops tracks that hold no notes, which automation is.)"""
    import mido

    try:
        mf = mido.MidiFile(file=io.BytesIO(data))
    except Exception as e:  # mido raises OSError/EOFError/ValueError/KeyError on garbage
        raise AutomationError(f"not a readable MIDI file ({type(e).__name__}: {e})") from None
    lanes: dict[int, list] = {cc_valence: [], cc_arousal: []}
    for track in mf.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "control_change" and msg.control in lanes:
                lanes[msg.control].append((tick / mf.ticks_per_beat, msg.value / 127.0 * 2.0 - 1.0))
    for cc, name in ((cc_valence, "valence"), (cc_arousal, "arousal")):
        if not lanes[cc]:
            raise AutomationError(
                f"MIDI automation has no CC {cc} events for {name} (expected CC {cc_valence} = valence, CC {cc_arousal} = arousal)"
            )

    def lane(cc: int) -> Lane:
        pts = sorted(lanes[cc], key=lambda p: p[0])
        return Lane(np.array([t for t, _ in pts]), np.array([v for _, v in pts]))

    return EmotionCurve(lane(cc_valence), lane(cc_arousal))


def parse_automation(data: bytes, suffix: str, qpm: float = 120.0) -> EmotionCurve:
    """Dispatch on a file suffix: .json, .csv, .mid/.midi."""
    s = suffix.lower()
    if s == ".json":
        return parse_json(data, qpm)
    if s == ".csv":
        return parse_csv(data, qpm)
    if s in (".mid", ".midi"):
        return parse_midi_cc(data)
    raise AutomationError(f"automation file must be .json, .csv or .mid, got {suffix!r}")
