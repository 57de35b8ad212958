"""A witness for emotion on other data: the symbolic judge (jSymbolic-style attributes of
EMOPIA/VGMIDI MIDI) over Basic Pitch transcriptions of an LM's 4x4 grid (3 seeds, 10 s, the
same seeds as `eval audio`). Prints the Spearman of judged against requested valence and
arousal. One-off, for issue 17:

    .venv/bin/python scripts/transcribed_emotion.py runs/lara8/lm
"""

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

torch.set_num_threads(1)
from basic_pitch.inference import predict

from moodlane.engine.audio.checkpoint import load_lara
from moodlane.engine.audio.generator import AudioSampling
from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.checkpoint import PACKAGE_WEIGHTS
from moodlane.engine.symbolic.judge import SymbolicJudge
from moodlane.engine.symbolic.notes import NoteArray
from moodlane.engine.training.audio_eval import correlation
from moodlane.engine.training.lara_eval import GRID_PROMPT, grid_seed, render_pcm
from moodlane.engine.training.witness import transcriber

judge = SymbolicJudge.load(PACKAGE_WEIGHTS / "judge.json")
tr = transcriber()
gen = load_lara(sys.argv[1], None, AudioSampling(), backend="onnx")
axis = np.linspace(-0.8, 0.8, 4)
rows = []
for i, (v, a) in enumerate((v, a) for v in axis for a in axis):
    for k in range(3):
        pcm = render_pcm(gen, EmotionCurve.constant(Emotion(float(v), float(a))), 10.0, grid_seed(i, k), GRID_PROMPT)
        with tempfile.TemporaryDirectory() as d:
            sf.write(Path(d) / "x.wav", np.clip(pcm, -1, 1), gen.sample_rate, subtype="PCM_16")
            with contextlib.redirect_stdout(io.StringIO()):
                _, _, ev = predict(str(Path(d) / "x.wav"), tr.model)
        if not ev:
            continue
        e = np.array([(x[0], x[1], x[2], x[3]) for x in ev])
        na = NoteArray(
            e[:, 0] * 2, (e[:, 1] - e[:, 0]) * 2, e[:, 2].astype(int), np.clip(np.round(e[:, 3] * 127), 1, 127).astype(int), 120.0
        )
        j = judge.judge(na)
        rows.append((v, a, j.valence, j.arousal))
r = np.array(rows)
print(json.dumps({"clips": len(r), "valence_spearman": correlation(r[:, 0], r[:, 2]), "arousal_spearman": correlation(r[:, 1], r[:, 3])}))
