"""A small data folder laid out like shared/data, built from rules: enough for the
training and evaluation jobs to run end to end in seconds, without the real data."""

import json
from pathlib import Path

import numpy as np

from moodlane.engine.symbolic.notes import NoteArray, to_midi_bytes

QUAD_STYLE = {  # (notes per bar, velocity, minor?)
    1: (12, 100, False),
    2: (12, 100, True),
    3: (3, 45, True),
    4: (3, 45, False),
}


def piece(rng, per_bar, vel, minor, bars=8, offset=0.0):
    chord = (0, 3, 7) if minor else (0, 4, 7)
    rows = []
    for b in range(bars):
        root = 57 if minor else 60
        for i in range(per_bar):
            t = b * 4 + i * 4 / per_bar
            rows.append((t + offset, 4 / per_bar, root + chord[i % 3] + 12 * (i % 2), int(np.clip(vel + rng.integers(-5, 6), 1, 127))))
        rows.append((b * 4 + offset, 4, root - 12, vel))
    a = np.array(rows, dtype=float)
    return NoteArray(a[:, 0], a[:, 1], a[:, 2].astype(int), a[:, 3].astype(int), 100.0)


def build(root: Path, songs_per_quadrant: int = 6) -> Path:
    rng = np.random.default_rng(0)
    (root / "emopia" / "midis").mkdir(parents=True)
    for q, (n, v, minor) in QUAD_STYLE.items():
        for s in range(songs_per_quadrant):
            for c in range(2):
                data = to_midi_bytes(piece(rng, n + int(rng.integers(-1, 2)), v, minor))
                (root / "emopia" / "midis" / f"Q{q}_song{q}x{s}_{c}.mid").write_bytes(data)
    (root / "vgmidi" / "midi").mkdir(parents=True)
    (root / "vgmidi" / "annotations").mkdir(parents=True)
    pieces, ann = {}, {}
    for k, (q, (n, v, minor)) in enumerate(QUAD_STYLE.items()):
        name = f"game_{k}.mid"
        (root / "vgmidi" / "midi" / name).write_bytes(to_midi_bytes(piece(rng, n, v, minor)))
        pieces[f"piece{k}"] = {"midi": name, "measures": 8, "name": name, "duration": 20, "audio": ""}
        va = (1 if q in (1, 4) else -1, 1 if q in (1, 2) else -1)
        for listener in range(3):
            ann[f"piece{k}_{listener}"] = {"valence": [0.5 * va[0] + 0.05 * listener] * 8, "arousal": [0.5 * va[1]] * 8}
    (root / "vgmidi" / "annotations" / "vgmidi_raw_1.json").write_text(json.dumps({"pieces": pieces, "annotations": ann}))
    (root / "pop909").mkdir()
    for i in range(4):
        style = QUAD_STYLE[1 + i % 4]
        (root / "pop909" / f"{i:03d}.mid").write_bytes(to_midi_bytes(piece(rng, *style, bars=12, offset=0.37)))
    return root


def render_tiny_audio(root: Path) -> Path:
    """A fake data folder rendered to audio at 8 kHz (the tiny codecs' rate): the manifest folder."""
    from moodlane.engine.training.audio_data import RenderJob, render_audio

    data = build(root / "data", songs_per_quadrant=2)
    render_audio(RenderJob(data=str(data), out=str(root / "audio"), sample_rate=8000, jobs=1), progress=False)
    return root / "audio"
