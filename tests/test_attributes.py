"""Every attribute on hand-built MIDI whose value is worked out by hand in the comments."""

import math

import numpy as np
import pytest

from moodlane.engine.symbolic.attributes import (
    FEATURE_NAMES,
    INDEX,
    N_FEATURES,
    bar_windows,
    chord_type,
    features,
    quantile_edges,
    to_bins,
    to_ranks,
)
from moodlane.engine.symbolic.notes import parse_midi, to_midi_bytes
from tests.conftest import make_notes

# One 4/4 bar at 120 qpm: C4 D4 E4 G4 as quarter notes, velocities 40 60 80 100.
SCALE = make_notes([(0, 1, 60, 40), (1, 1, 62, 60), (2, 1, 64, 80), (3, 1, 67, 100)])
SCALE_EXPECTED = {
    "pitch_mean": 63.25,
    "pitch_std": math.sqrt(26.75 / 4),
    "pitch_range": 7,
    "pitch_min": 60,
    "pitch_max": 67,
    "pitch_median": 63,
    "pc_c": 0.25,
    "pc_cs": 0,
    "pc_d": 0.25,
    "pc_ds": 0,
    "pc_e": 0.25,
    "pc_f": 0,
    "pc_fs": 0,
    "pc_g": 0.25,
    "pc_gs": 0,
    "pc_a": 0,
    "pc_as": 0,
    "pc_b": 0,
    "pc_entropy": 2.0,
    "pc_distinct": 4,
    "pitch_distinct": 4,
    "pc_top_prevalence": 0.25,
    # skyline = the line itself: intervals +2 +2 +3
    "melodic_interval_mean": 7 / 3,
    "melodic_interval_std": math.sqrt(2 / 9),
    "melodic_step_fraction": 2 / 3,
    "melodic_leap_fraction": 0,
    "melodic_repeat_fraction": 0,
    "melodic_third_fraction": 1 / 3,
    "melodic_fifth_fraction": 0,
    "melodic_octave_fraction": 0,
    "melodic_rising_fraction": 1.0,
    "melody_range": 7,
    "melody_pitch_mean": 63.25,
    # 4 notes in 4 beats = 2 s
    "note_density": 1.0,
    "note_density_per_second": 2.0,
    "note_density_variability": 0.0,
    "total_notes": 4,
    "top_line_relative_density": 1.0,
    "onset_density": 1.0,
    "duration_mean": 1.0,
    "duration_std": 0.0,
    "long_note_prevalence": 0,
    "short_note_prevalence": 0,
    "eighth_note_prevalence": 0,
    "ioi_mean": 1.0,
    "ioi_std": 0.0,
    "offbeat_fraction": 0,
    "downbeat_fraction": 0.25,
    "rest_fraction": 0.0,
    "velocity_mean": 70,
    "velocity_std": math.sqrt(500),
    "velocity_range": 60,
    "velocity_change": 20,
    "loud_fraction": 0.25,
    "soft_fraction": 0.25,
    "polyphony_mean": 1.0,
    "polyphony_max": 1,
    "chord_onset_fraction": 0,
    "chord_size_mean": 0,
    "major_triad_fraction": 0,
    "minor_triad_fraction": 0,
    "minor_major_triad_ratio": 0.5,
    "minor_chord_share": 0.5,  # half bars C D and E G: no complete triad
    "dominant_seventh_fraction": 0,
    "diminished_fraction": 0,
    "augmented_fraction": 0,
    "bass_pitch_mean": 63.25,
    "melody_bass_spread": 0,
    "tempo": 120,
}

# Two bars at 60 qpm: C major (half), A minor (half), G7 (whole, soft) with a loud
# 16th-note C5 on the "and" of beat 1 of bar 2.
CHORDS = make_notes(
    [
        (0, 2, 48, 100),
        (0, 2, 52, 100),
        (0, 2, 55, 100),
        (2, 2, 57, 100),
        (2, 2, 60, 100),
        (2, 2, 64, 100),
        (4, 4, 43, 50),
        (4, 4, 47, 50),
        (4, 4, 50, 50),
        (4, 4, 53, 50),
        (4.5, 0.25, 72, 120),
    ],
    qpm=60,
)
_P = [48, 52, 55, 57, 60, 64, 43, 47, 50, 53, 72]
_D = [2] * 6 + [4] * 4 + [0.25]
_V = [100] * 6 + [50] * 4 + [120]
CHORDS_EXPECTED = {
    "pitch_mean": 601 / 11,
    "pitch_std": float(np.std(_P)),
    "pitch_range": 29,
    "pitch_min": 43,
    "pitch_max": 72,
    "pitch_median": 53,
    # pitch classes: C x3, D, E x2, F, G x2, A, B
    "pc_c": 3 / 11,
    "pc_cs": 0,
    "pc_d": 1 / 11,
    "pc_ds": 0,
    "pc_e": 2 / 11,
    "pc_f": 1 / 11,
    "pc_fs": 0,
    "pc_g": 2 / 11,
    "pc_gs": 0,
    "pc_a": 1 / 11,
    "pc_as": 0,
    "pc_b": 1 / 11,
    "pc_entropy": -(3 / 11 * math.log2(3 / 11) + 2 * 2 / 11 * math.log2(2 / 11) + 4 / 11 * math.log2(1 / 11)),
    "pc_distinct": 7,
    "pitch_distinct": 11,
    "pc_top_prevalence": 3 / 11,
    # skyline 55 64 53 72: intervals +9 -11 +19
    "melodic_interval_mean": 13,
    "melodic_interval_std": math.sqrt(56 / 3),
    "melodic_step_fraction": 0,
    "melodic_leap_fraction": 1.0,
    "melodic_repeat_fraction": 0,
    "melodic_third_fraction": 0,
    "melodic_fifth_fraction": 0,
    "melodic_octave_fraction": 0,
    "melodic_rising_fraction": 2 / 3,
    "melody_range": 19,
    "melody_pitch_mean": 61,
    # 11 notes over 8 beats (8 s); per-beat counts 3 0 3 0 5 0 0 0
    "note_density": 11 / 8,
    "note_density_per_second": 11 / 8,
    "note_density_variability": math.sqrt(43 / 8 - (11 / 8) ** 2),
    "total_notes": 11,
    "top_line_relative_density": 4 / 11,
    "onset_density": 4 / 8,
    "duration_mean": 28.25 / 11,
    "duration_std": float(np.std(_D)),
    "long_note_prevalence": 10 / 11,
    "short_note_prevalence": 1 / 11,
    "eighth_note_prevalence": 0,
    # onsets 0 2 4 4.5
    "ioi_mean": 1.5,
    "ioi_std": math.sqrt(0.5),
    "offbeat_fraction": 0.25,
    "downbeat_fraction": 0.5,
    "rest_fraction": 0.0,
    "velocity_mean": 920 / 11,
    "velocity_std": float(np.std(_V)),
    "velocity_range": 70,
    "velocity_change": 40,  # onset means 100 100 50 120
    "loud_fraction": 7 / 11,
    "soft_fraction": 0,
    # 32 sixteenths: 16 with 3 notes, 15 with 4, one with 5
    "polyphony_mean": 113 / 32,
    "polyphony_max": 5,
    "chord_onset_fraction": 3 / 4,
    "chord_size_mean": 10 / 3,
    "major_triad_fraction": 1 / 3,
    "minor_triad_fraction": 1 / 3,
    "minor_major_triad_ratio": 0.5,
    "minor_chord_share": 1 / 4,  # half bars: C major, A minor, G (G7 + C5), G
    "dominant_seventh_fraction": 1 / 3,
    "diminished_fraction": 0,
    "augmented_fraction": 0,
    "bass_pitch_mean": 55,
    "melody_bass_spread": 6,
    "tempo": 60,
}
KEY_FEATURES = {"key_major_corr", "key_minor_corr", "mode_major_minus_minor"}


def test_at_least_60_features_all_named_once():
    assert N_FEATURES >= 60
    assert len(set(FEATURE_NAMES)) == N_FEATURES


@pytest.mark.parametrize("notes,expected", [(SCALE, SCALE_EXPECTED), (CHORDS, CHORDS_EXPECTED)], ids=["scale", "chords"])
def test_every_feature_matches_hand_value(notes, expected):
    assert set(expected) | KEY_FEATURES == set(FEATURE_NAMES), "every feature needs a hand-worked value"
    f = features(notes)
    for name, want in expected.items():
        assert f[INDEX[name]] == pytest.approx(want, abs=1e-9), name


def test_key_features_tell_major_from_minor():
    c_major = make_notes([(i, 1, p, 80) for i, p in enumerate([60, 64, 67, 72, 60, 64, 67, 65, 62, 71])])
    a_minor = make_notes([(i, 1, p, 80) for i, p in enumerate([57, 60, 64, 69, 57, 60, 64, 62, 59, 68])])
    fmaj, fmin = features(c_major), features(a_minor)
    assert fmaj[INDEX["mode_major_minus_minor"]] > 0 > fmin[INDEX["mode_major_minus_minor"]]
    assert fmaj[INDEX["key_major_corr"]] > 0.7 and fmin[INDEX["key_minor_corr"]] > 0.7
    assert -1 <= fmaj[INDEX["key_minor_corr"]] <= 1


def test_chord_types():
    assert chord_type({0, 4, 7}) == "major"
    assert chord_type({9, 0, 4}) == "minor"
    assert chord_type({7, 11, 2, 5}) == "dominant_seventh"
    assert chord_type({11, 2, 5}) == "diminished"
    assert chord_type({0, 4, 8}) == "augmented"
    assert chord_type({0, 2, 7}) is None


def test_empty_window_is_rest():
    f = features(SCALE.window(3, 4))
    assert f[INDEX["rest_fraction"]] == 1.0 and f[INDEX["total_notes"]] == 0 and f[INDEX["tempo"]] == 120


def test_features_survive_a_midi_round_trip():
    back = parse_midi(to_midi_bytes(CHORDS))
    np.testing.assert_allclose(features(back), features(CHORDS), atol=1e-6)


def test_bar_windows_follow_the_music():
    # 3 quiet sparse bars then 3 loud dense bars: the per-bar attributes must move
    quiet = [(b * 4 + i * 2, 2, 60, 40) for b in range(3) for i in range(2)]
    loud = [(b * 4 + i * 0.5, 0.5, 72, 110) for b in range(3, 6) for i in range(8)]
    w = bar_windows(make_notes(quiet + loud), before=0, after=0)
    assert w.shape == (6, N_FEATURES)
    assert np.all(w[:3, INDEX["note_density"]] == 0.5) and np.all(w[3:, INDEX["note_density"]] == 2.0)
    assert np.all(w[:3, INDEX["velocity_mean"]] == 40) and np.all(w[3:, INDEX["velocity_mean"]] == 110)


def test_bins_and_ranks_are_monotone():
    vals = np.random.default_rng(0).normal(size=(1000, 2))
    edges = quantile_edges(vals, 8)
    x = np.stack([np.linspace(-3, 3, 50)] * 2, 1)
    b, r = to_bins(x, edges), to_ranks(x, edges)
    assert b.min() == 0 and b.max() == 7
    assert np.all(np.diff(b[:, 0]) >= 0) and np.all(np.diff(r[:, 0]) >= 0)
    assert 0 <= r.min() and r.max() <= 1
    # about one eighth of the data in each bin
    counts = np.bincount(to_bins(vals, edges)[:, 0], minlength=8)
    assert counts.min() > 100


def test_minor_chord_share_hears_the_parallel_mode_and_broken_chords():
    """I-V-vi-IV in C (one minor chord in four) against its parallel minor i-v-VI-iv (three
    in four), as block chords and as broken chords, with a passing melody note on top."""

    def progression(roots_thirds, broken):
        notes = []
        for bar, (root, third) in enumerate(roots_thirds):
            pcs = [root, root + third, root + 7]
            for half in (0, 2):
                t0 = bar * 4 + half
                if broken:
                    notes += [(t0 + 0.5 * i, 0.5, 48 + p, 70) for i, p in enumerate(pcs + [pcs[1]])]
                else:
                    notes += [(t0, 2, 48 + p, 70) for p in pcs]
                notes.append((t0 + 1, 0.5, 74, 90))  # D5: a passing note, not a chord tone
        return make_notes(notes)

    major = [(0, 4), (7, 4), (9, 3), (5, 4)]  # C G Am F
    minor = [(0, 3), (7, 3), (8, 4), (5, 3)]  # Cm Gm Ab Fm
    for broken in (False, True):
        assert features(progression(major, broken))[INDEX["minor_chord_share"]] == pytest.approx(1 / 4)
        assert features(progression(minor, broken))[INDEX["minor_chord_share"]] == pytest.approx(3 / 4)
