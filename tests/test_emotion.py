import math

import pytest

from moodlane.engine.emotion import Emotion, EmotionError


def test_conversions():
    assert Emotion.from_unit(0.0, 1.0) == Emotion(-1.0, 1.0)
    assert Emotion.from_unit(0.5, 0.5) == Emotion(0.0, 0.0)
    assert Emotion.from_cc(127, 0) == Emotion(1.0, -1.0)
    assert Emotion.from_cc(16383, 0, bits=14).valence == 1.0
    assert Emotion.from_nine_point(9, 1) == Emotion(1.0, -1.0)
    assert Emotion(0.3, 0.2).to_unit() == pytest.approx((0.65, 0.6))


@pytest.mark.parametrize("v,a,q", [(0.5, 0.5, 1), (-0.5, 0.5, 2), (-0.5, -0.5, 3), (0.5, -0.5, 4), (0, 0, 1)])
def test_quadrants(v, a, q):
    assert Emotion(v, a).quadrant == q


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.01, 2, "x", None])
def test_invalid_values_name_the_problem(bad):
    with pytest.raises(EmotionError, match="valence"):
        Emotion(bad, 0.0)
    with pytest.raises(EmotionError, match="arousal"):
        Emotion.from_unit(0.5, bad if bad != 2 else 1.5)
