"""The shipped generator, judged by the shipped judge (no data needed): valence and
arousal asked for are valence and arousal heard."""

import numpy as np
import pytest
import torch

from moodlane.engine.automation import EmotionCurve
from moodlane.engine.emotion import QUADRANT_CENTRES
from moodlane.engine.session import render
from moodlane.engine.symbolic.generator import SymbolicGenerator
from moodlane.engine.symbolic.judge import SymbolicJudge


@pytest.fixture(scope="module")
def judged():
    torch.set_num_threads(1)
    gen = SymbolicGenerator.load()
    judge = SymbolicJudge.shipped()
    out = {}
    for q, e in QUADRANT_CENTRES.items():
        js = [judge.judge(render(gen, EmotionCurve.constant(e), 8, seed=seed)[0]) for seed in range(3)]
        out[q] = (np.mean([j.valence for j in js]), np.mean([j.arousal for j in js]), [j.quadrant for j in js])
    return out


def test_judged_valence_follows_the_request(judged):
    happy = min(judged[1][0], judged[4][0])
    sad = max(judged[2][0], judged[3][0])
    assert happy > sad, judged


def test_judged_arousal_follows_the_request(judged):
    assert min(judged[1][1], judged[2][1]) > max(judged[3][1], judged[4][1]), judged


def test_most_pieces_land_in_their_quadrant(judged):
    hits = sum(q == got for q, (_, _, quads) in judged.items() for got in quads)
    assert hits >= 9, judged  # of 12; the full evaluation measures this on 100 pieces
