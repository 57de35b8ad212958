"""A witness for emotion on other data: the symbolic judge (jSymbolic-style attributes of
EMOPIA/VGMIDI MIDI) over Basic Pitch transcriptions of an LM's 4x4 grid (3 seeds, 10 s, the
same seeds as `eval audio`). Prints the Spearman of judged against requested valence and
arousal. One-off, for issue 17 (needs the `[eval]` witnesses):

    .venv/bin/python scripts/transcribed_emotion.py runs/lara8/lm
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from moodlane.engine.audio.checkpoint import load_lara
from moodlane.engine.audio.generator import AudioSampling
from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.checkpoint import PACKAGE_WEIGHTS
from moodlane.engine.symbolic.judge import SymbolicJudge
from moodlane.engine.symbolic.notes import NoteArray
from moodlane.engine.training.audio_eval import correlation
from moodlane.engine.training.lara_eval import GRID_PROMPT, TEMPO, grid_seed, render_pcm
from moodlane.engine.training.witness import transcriber


def judged(judge, model, pcm: np.ndarray, sr: int):
    """The judge's reading of a Basic Pitch transcription (velocity from note amplitude)."""
    from basic_pitch.inference import predict

    with tempfile.TemporaryDirectory() as d:
        sf.write(Path(d) / "x.wav", np.clip(pcm, -1, 1), sr, subtype="PCM_16")
        with contextlib.redirect_stdout(io.StringIO()):
            _, _, ev = predict(str(Path(d) / "x.wav"), model)
    if not ev:
        return None
    e = np.array([(x[0], x[1], x[2], x[3]) for x in ev])
    beats = TEMPO / 60.0
    vel = np.clip(np.round(e[:, 3] * 127), 1, 127).astype(int)
    return judge.judge(NoteArray(e[:, 0] * beats, (e[:, 1] - e[:, 0]) * beats, e[:, 2].astype(int), vel, TEMPO))


def main() -> None:
    torch.set_num_threads(1)
    judge = SymbolicJudge.load(PACKAGE_WEIGHTS / "judge.json")
    model = transcriber().model
    gen = load_lara(sys.argv[1], None, AudioSampling(), backend="onnx")
    axis = np.linspace(-0.8, 0.8, 4)
    rows = []
    for i, (v, a) in enumerate((v, a) for v in axis for a in axis):
        for k in range(3):
            pcm = render_pcm(gen, EmotionCurve.constant(Emotion(float(v), float(a))), 10.0, grid_seed(i, k), GRID_PROMPT)
            j = judged(judge, model, pcm, gen.sample_rate)
            if j is not None:
                rows.append((v, a, j.valence, j.arousal))
    r = np.array(rows)
    rho = {f"{name}_spearman": correlation(r[:, col], r[:, col + 2]) for col, name in ((0, "valence"), (1, "arousal"))}
    print(json.dumps({"clips": len(r), **rho}))


if __name__ == "__main__":
    main()
