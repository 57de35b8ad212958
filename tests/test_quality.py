"""The symbolic quality report's measures on pieces whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from moodlane.engine.symbolic.notes import NoteArray
from moodlane.engine.training import quality as Q


def piece(notes: list[tuple[float, float, int]], qpm: float = 120.0) -> NoteArray:
    s, d, p = (np.array(x) for x in zip(*notes))
    return NoteArray(s, d, p.astype(np.int64), np.full(len(p), 80), qpm)


def scale_tune(bars: int = 4, root: int = 60) -> NoteArray:
    """Eighth notes up and down the major scale over a held C chord in each bar."""
    steps = [0, 2, 4, 5, 7, 9, 11, 12]
    notes = []
    for b in range(bars):
        for i, k in enumerate(steps if b % 2 == 0 else steps[::-1]):
            notes.append((4.0 * b + 0.5 * i, 0.5, root + 12 + k))
        notes += [(4.0 * b, 4.0, root + k) for k in (0, 4, 7)]
    return piece(notes)


def test_texture_counts_density_polyphony_range_and_top_voice():
    w = scale_tune()
    t = Q.texture(w)
    assert t["note_density"] == pytest.approx((8 + 3) / 4 * 2)  # per second at 120 BPM
    assert t["pitch_range"] == 84 - 60
    # the chord (3) sounds all the time, one melody note on top of it
    assert t["polyphony"] == pytest.approx(4.0)
    assert t["top_voice_share"] == pytest.approx(8 / 11)  # 8 onsets, 11 notes


def test_muspy_style_metrics():
    tune = scale_tune()
    p = np.array([3, 1, 2, 1, 2, 1, 1]) / 11  # per bar: C x3 (two in the run, one in the chord), E and G x2, the rest once
    assert Q.pitch_class_entropy(tune) == pytest.approx(-(p * np.log2(p)).sum())
    assert Q.scale_consistency(tune) == 1.0
    chromatic = piece([(0.25 * i, 0.25, 60 + i) for i in range(12)])
    assert Q.pitch_class_entropy(chromatic) == pytest.approx(np.log2(12))
    assert Q.scale_consistency(chromatic) == pytest.approx(7 / 12)
    same = piece([(4.0 * b + k, 1.0, 60) for b in range(4) for k in range(4)])
    assert Q.groove_consistency(same) == 1.0 and Q.bar_repetition(same) == 1.0
    shifted = piece([(4.0 * b + (0.25 if b % 2 else 0.0), 1.0, 60 + b) for b in range(4)])
    assert Q.groove_consistency(shifted) == pytest.approx(1 - 2 / 16)
    assert Q.bar_repetition(shifted) == 0.0  # each bar's (position, pitch class) is new
    assert Q.top_voice_stepwise(tune) == pytest.approx(28 / 31)  # 7 steps a bar; the 3 turns repeat the top note
    assert Q.top_voice_stepwise(same) == 0.0  # a repeated note is not a line
    # lead coverage: the 16ths in which a lead note sounds; marked parts are believed
    held = piece([(0.0, 8.0, 72), (0.0, 16.0, 48), (12.0, 2.0, 74)])  # a lead for 2 bars, then half a bar
    assert Q.lead_coverage(held) == pytest.approx((32 + 8) / 64)
    marked = NoteArray(held.start, held.duration, held.pitch, held.velocity, part=np.array([0, 0, 0]))
    assert Q.lead_coverage(marked) == 0.0  # nothing marked as lead


def test_frechet_features_are_key_invariant_and_fd_orders_sets():
    tune = scale_tune()
    up = piece([(s, d, p + 5) for s, d, p in zip(tune.start, tune.duration, tune.pitch)])
    f = Q.frechet_features(tune)
    assert f.shape == (37,) and np.allclose(f, Q.frechet_features(up))
    slow = piece([(s * 2, d * 2, p) for s, d, p in zip(tune.start, tune.duration, tune.pitch)], qpm=240.0)
    assert np.allclose(f, Q.frechet_features(slow))  # the same music written at another tempo
    rng = np.random.default_rng(0)

    def random_piece(dense: bool) -> NoteArray:
        n = 64 if dense else 12
        return piece([(float(rng.integers(0, 64)) / 4, 0.25 if dense else 2.0, int(rng.integers(40, 90))) for _ in range(n)])

    a = Q.describe([random_piece(True) for _ in range(30)])
    b = Q.describe([random_piece(True) for _ in range(30)])
    c = Q.describe([random_piece(False) for _ in range(30)])
    z = Q.standardiser(a["features"])
    assert Q.frechet(z(b["features"]), z(a["features"])) < Q.frechet(z(c["features"]), z(a["features"]))


def test_quality_report_sets_renders_against_held_out_and_draws_piano_rolls(tmp_path):
    rng = np.random.default_rng(1)

    def tune(q: int) -> NoteArray:
        w = scale_tune(8, root=int(rng.integers(55, 65)))
        return w if q in (1, 4) else piece([(s, d, p) for s, d, p in zip(w.start, w.duration, w.pitch) if d > 1])

    real = {"valid": [(q, tune(q)) for q in (1, 2, 3, 4) for _ in range(3)]}
    real |= {k: [(None, tune(1)) for _ in range(3)] for k in ("emopia_train", "pop909", "vgmidi")}
    quadrants = {q: [tune(q), tune(q)] for q in (1, 2, 3, 4)}
    quadrants[1] = [piece([(0.25 * i, 0.25, 60) for i in range(128)])]  # a wall of repeated notes
    rep = Q.quality_report(quadrants, [tune(1) for _ in range(4)] + [tune(2) for _ in range(4)], real, tmp_path)
    assert rep["frechet"]["windows"] == 16 and np.isfinite(rep["frechet"]["generated_grid"])
    assert rep["texture_by_quadrant"]["Q4"]["inside_iqr"] == dict.fromkeys(Q.TEXTURE, True)
    assert rep["texture_by_quadrant"]["Q1"]["inside_iqr"]["note_density"] is False
    assert set(rep["metrics"]["held_out"]) == set(Q.METRICS)
    assert (tmp_path / "piano_rolls.png").stat().st_size > 10_000
    assert rep["lead_line_vs_pop909"] is None  # no marked parts given
    real["lead_agreement"] = [(1.0, 0.5, 2 / 3), (0.5, 1.0, 2 / 3)]
    rep = Q.quality_report(quadrants, [tune(1) for _ in range(4)], real, asked={1: 9.0, 3: 2.5})
    tex = rep["texture_by_quadrant"]
    assert tex["Q1"]["map_asks_notes_per_s"] == 9.0 and "map_asks_notes_per_s" not in tex["Q2"]
    assert rep["lead_line_vs_pop909"] == {"precision": 0.75, "recall": 0.75, "f1": 0.667, "songs": 2}


def test_lead_agreement_scores_the_skyline_against_marked_parts():
    """Lead marked on the top line; an accompaniment note left on top while the tune rests is
    the skyline's one false find."""
    rows = [(0, 1, 76), (0, 1, 48), (1, 1, 74), (1, 1, 50), (2, 1, 77), (2, 1, 52), (3, 1, 72), (3, 1, 53)]
    start, dur, pitch = (np.array(c, dtype=float) for c in zip(*rows))
    part = np.where(pitch > 60, 1, 0)
    n = NoteArray(start, dur, pitch.astype(int), np.full(len(rows), 80), part=part)
    assert Q.lead_agreement(n) == (1.0, 1.0, 1.0)
    part[pitch == 72] = 0  # the last top note is accompaniment: the skyline still takes it
    p, r, f = Q.lead_agreement(NoteArray(start, dur, pitch.astype(int), np.full(len(rows), 80), part=part))
    assert (p, r) == (0.75, 1.0) and f == pytest.approx(6 / 7)
