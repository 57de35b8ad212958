"""Versioned JSON presets: named emotions and DAW mappings.

`emotions.json` holds named valence/arousal points (and an optional tempo a producer
would pick for them, and an optional text prompt for the audio engine). Files are validated on load; errors name the file and the entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from moodlane.engine.chunk import MAX_PROMPT
from moodlane.engine.emotion import Emotion, EmotionError

PRESET_DIR = Path(__file__).resolve().parent
EMOTIONS_FORMAT = "moodlane.emotion_presets"
EMOTIONS_VERSION = 1
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class PresetError(ValueError):
    """An unknown preset name or an invalid preset file."""


@dataclass(frozen=True)
class EmotionPreset:
    name: str
    emotion: Emotion
    tempo: float | None
    description: str
    prompt: str = ""  # default text prompt for text-conditioned engines (the audio engine)


def load_emotion_presets(path: Path | None = None) -> dict[str, EmotionPreset]:
    path = path or PRESET_DIR / "emotions.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PresetError(f"{path}: cannot read presets ({e})") from None
    if not isinstance(d, dict) or d.get("format") != EMOTIONS_FORMAT or d.get("version") != EMOTIONS_VERSION:
        raise PresetError(f"{path}: expected format {EMOTIONS_FORMAT!r} version {EMOTIONS_VERSION}")
    out = {}
    for name, p in (d.get("presets") or {}).items():
        if not _NAME.match(name):
            raise PresetError(f"{path}: preset name {name!r} must be lower-case letters, digits, '-' or '_'")
        if not isinstance(p, dict):
            raise PresetError(f"{path}: preset {name!r} must be an object")
        try:
            e = Emotion(p["valence"], p["arousal"])
        except KeyError as k:
            raise PresetError(f"{path}: preset {name!r} lacks {k}") from None
        except EmotionError as err:
            raise PresetError(f"{path}: preset {name!r}: {err}") from None
        tempo = p.get("tempo")
        if tempo is not None and not (isinstance(tempo, (int, float)) and 30 <= tempo <= 300):
            raise PresetError(f"{path}: preset {name!r}: tempo must be a number in [30, 300], got {tempo!r}")
        prompt = p.get("prompt", "")
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
            raise PresetError(f"{path}: preset {name!r}: prompt must be text of at most {MAX_PROMPT} characters")
        out[name] = EmotionPreset(name, e, None if tempo is None else float(tempo), str(p.get("description", "")), prompt)
    if not out:
        raise PresetError(f"{path}: no presets")
    return out


def get_emotion_preset(name: str, path: Path | None = None) -> EmotionPreset:
    presets = load_emotion_presets(path)
    if name not in presets:
        raise PresetError(f"unknown preset {name!r}; expected one of: {', '.join(sorted(presets))}")
    return presets[name]
