"""The transcribed-emotion witness of `eval audio` (the symbolic judge over Basic Pitch
transcriptions) alone, for one LM's 4x4 grid (3 seeds, 10 s, the same seeds and prompt as
`eval audio`), without the rest of the evaluation. Needs the `[eval]` witnesses:

    .venv/bin/python scripts/transcribed_emotion.py runs/lara8/lm
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from moodlane.engine.audio.checkpoint import load_lara
from moodlane.engine.audio.generator import AudioSampling
from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.judge import SymbolicJudge
from moodlane.engine.training.lara_eval import GRID_PROMPT, grid_requests, grid_seed, render_pcm, transcribed_emotion
from moodlane.engine.training.witness import transcriber


def main() -> None:
    torch.set_num_threads(1)
    gen = load_lara(sys.argv[1], None, AudioSampling(), backend="onnx")
    rows, notes = [], []
    for i, v, a, k in grid_requests(4, 3):
        pcm = render_pcm(gen, EmotionCurve.constant(Emotion(v, a)), 10.0, grid_seed(i, k), GRID_PROMPT)
        notes.append(transcriber()(pcm, gen.sample_rate))
        rows.append((v, a, i))
    r = np.array(rows)
    print(json.dumps(transcribed_emotion(SymbolicJudge.shipped(), notes, r, r[:, 2])))


if __name__ == "__main__":
    main()
