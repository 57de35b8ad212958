import numpy as np
import pytest

from moodlane.engine.symbolic.notes import MidiError, align_to_grid, parse_midi, to_midi_bytes
from moodlane.engine.symbolic.tokens import (
    BAR,
    BOS,
    DUR0,
    EOS,
    LEAD,
    PARTS_VOCAB,
    PITCH0,
    POS0,
    VEL0,
    VOCAB_SIZE,
    Grammar,
    bar_index,
    decode,
    encode,
    on_grid,
    quantise,
    token_name,
)
from tests.conftest import make_notes


def random_grammatical(rng, n_tokens=300, vocab=VOCAB_SIZE):
    g, out = Grammar(vocab), [BOS]
    while len(out) < n_tokens:
        allowed = np.flatnonzero(g.allowed())
        t = int(rng.choice(allowed))
        out.append(t)
        g.update(t)
    while not (out[-1] >= VEL0 or out[-1] == BAR):  # close the last note
        allowed = np.flatnonzero(g.allowed())
        t = int(allowed[0] if out[-1] < VEL0 else allowed[-1])
        out.append(t)
        g.update(t)
    return np.array(out + [EOS])


@pytest.mark.parametrize("seed", range(5))
def test_tokens_midi_tokens_is_lossless(seed):
    tokens = random_grammatical(np.random.default_rng(seed))
    # trailing empty bars have no notes to carry them through MIDI
    last_note = max(i for i, t in enumerate(tokens) if t >= VEL0)
    tokens = np.concatenate([tokens[: last_note + 1], [EOS]])
    # canonical form: a repeated key ends the earlier note (sampled tokens may overlap)
    canonical = encode(decode(tokens))
    assert np.array_equal(encode(decode(canonical)), canonical)
    assert len(canonical) == len(tokens)
    midi = to_midi_bytes(decode(canonical, qpm=97.0))
    assert np.array_equal(encode(parse_midi(midi)), canonical)


def test_midi_tokens_midi_snaps_to_grid():
    notes = make_notes([(0.02, 0.98, 60, 81), (1.26, 0.5, 64, 40), (5.0, 3.0, 67, 127), (5.0, 40.0, 20, 90)])
    back = decode(encode(notes))
    np.testing.assert_allclose(back.start, [0, 1.25, 5.0])  # pitch 20 is below the piano
    np.testing.assert_allclose(back.duration, [1.0, 0.5, 3.0])
    assert back.velocity.tolist() == [84, 44, 124]
    assert on_grid(notes).pitch.tolist() == back.pitch.tolist()


def test_worked_example_from_docstring():
    notes = make_notes([(0, 2, 48, 80), (0, 2, 52, 80), (0, 2, 55, 80), (2, 1, 64, 96)])
    names = [token_name(t) for t in encode(notes)]
    assert names == [
        "BOS",
        "BAR",
        "POS_0",
        "PITCH_48",
        "DUR_8",
        "VEL_10",
        "PITCH_52",
        "DUR_8",
        "VEL_10",
        "PITCH_55",
        "DUR_8",
        "VEL_10",
        "POS_8",
        "PITCH_64",
        "DUR_4",
        "VEL_12",
        "EOS",
    ]


def test_duplicates_keep_longest_and_empty_bars_get_bar_tokens():
    g = quantise(make_notes([(0, 1, 60, 80), (0, 2, 60, 80), (8, 1, 62, 80)]))
    assert [(x.bar, x.dur) for x in g] == [(0, 8), (2, 4)]
    t = encode(make_notes([(8, 1, 62, 80)]))
    assert (t == BAR).sum() == 3
    assert bar_index(t).tolist()[-2] == 2


def test_grammar_rules():
    g = Grammar()
    assert g.allowed()[BAR] and g.allowed().sum() == 1
    g.update(BAR)
    m = g.allowed()
    assert m[BAR] and m[POS0] and not m[PITCH0]
    g.update(POS0 + 4)
    assert g.allowed()[PITCH0:DUR0].all() and not g.allowed()[BAR]
    g.update(PITCH0 + 10)
    assert g.allowed()[DUR0:VEL0].all() and g.allowed().sum() == VEL0 - DUR0
    g.update(DUR0)
    g.update(VEL0)
    m = g.allowed()
    assert not m[PITCH0 + 10] and m[PITCH0 + 11] and not m[POS0 + 4] and m[POS0 + 5] and m[BAR]
    assert m.shape == (VOCAB_SIZE,)


def test_align_to_grid_removes_a_constant_offset():
    rows = [(b * 4 + i + 0.37, 0.5, 60 + (i == 0) * -12, 80) for b in range(8) for i in range(4)]
    aligned = align_to_grid(make_notes(rows))
    frac = np.mod(aligned.start, 1.0)
    assert np.allclose(np.minimum(frac, 1 - frac), 0, atol=1e-6)
    bass = aligned.start[aligned.pitch == 48] / 4.0
    assert np.allclose(bass, np.round(bass), atol=1e-6)  # bass on bar lines
    on = make_notes([(0, 1, 60, 80), (1, 1, 62, 80)])
    assert align_to_grid(on) is on


@pytest.mark.parametrize("data", [b"", b"MThd garbage", b"\x00" * 100])
def test_corrupt_midi_raises_midi_error(data):
    with pytest.raises(MidiError):
        parse_midi(data)


@pytest.mark.parametrize("seed", range(3))
def test_lead_tokens_survive_decode_encode_and_midi(seed):
    """With parts, LEAD marks a note as the lead's: decode gives it part MELODY, encode
    writes LEAD again, and the Lead/Accompaniment tracks of a MIDI file bring the parts back.
    A grammar without parts never offers LEAD."""
    from moodlane.engine.symbolic.attributes import lead_line
    from moodlane.engine.symbolic.notes import MELODY

    tokens = random_grammatical(np.random.default_rng(seed), vocab=PARTS_VOCAB)
    last_note = max(i for i, t in enumerate(tokens) if VEL0 <= t < VOCAB_SIZE)
    tokens = np.concatenate([tokens[: last_note + 1], [EOS]])
    notes = decode(tokens, parts=True)
    assert (tokens == LEAD).sum() > 0 and (notes.part == MELODY).sum() > 0
    canonical = encode(notes, parts=True)
    again = decode(canonical, parts=True)
    assert np.array_equal(encode(again, parts=True), canonical)
    assert np.array_equal(again.part, decode(canonical, parts=True).part)
    assert decode(tokens).part is None and not (encode(notes) == LEAD).any()  # parts only when asked
    midi = to_midi_bytes(again, lead=lead_line(again))
    back = parse_midi(midi)
    assert np.array_equal(encode(back, parts=True), canonical)
    g = Grammar()  # the shipped model's vocabulary: no LEAD to offer
    g.update(BAR)
    g.update(POS0)
    assert g.allowed().shape == (VOCAB_SIZE,) and LEAD == VOCAB_SIZE


def test_lead_token_grammar():
    g = Grammar(PARTS_VOCAB)
    for t in (BAR, POS0 + 2):
        g.update(t)
    assert g.allowed()[LEAD] and g.allowed()[PITCH0]
    g.update(LEAD)
    assert not g.allowed()[LEAD] and g.allowed()[PITCH0]  # LEAD, then a note
    for t in (PITCH0 + 30, DUR0 + 3, VEL0 + 5):
        g.update(t)
    allowed = g.allowed()
    assert allowed[LEAD] and not allowed[PITCH0 + 30] and allowed[PITCH0 + 31]
    assert token_name(LEAD) == "LEAD"
