"""The generator loop on a tiny random model: determinism, state save/restore, grammar,
context refill, and the mock generator's obvious emotion response."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from moodlane.engine.automation import EmotionCurve
from moodlane.engine.chunk import Conditions
from moodlane.engine.emotion import Emotion
from moodlane.engine.mock import MockGenerator
from moodlane.engine.session import Session, render
from moodlane.engine.symbolic.checkpoint import CheckpointError
from moodlane.engine.symbolic.emotion_map import EmotionMap
from moodlane.engine.symbolic.generator import SamplingConfig, SymbolicGenerator
from moodlane.engine.symbolic.model import TINY, SymbolicLM
from moodlane.engine.symbolic.tokens import BAR, DUR0, PITCH0, POS0

ATTRS = ("note_density", "velocity_mean")


def tiny_map():
    coef = np.zeros((2, 6))
    coef[:, 0] = 0.5
    coef[:, 2] = 0.4  # both attributes rise with arousal
    return EmotionMap(
        ATTRS,
        coef,
        1.0,
        np.array([[1, 1], [0, 1], [0, 0], [1, 0]], bool),
        np.full(2, 0.75),
        np.full(2, 0.25),
        np.array([7.0, 0, 0.5, 0, 0, 0]),
        (60.0, 160.0),
        {},
    )


@pytest.fixture
def gen():
    torch.manual_seed(0)
    cfg = replace(TINY, attributes=ATTRS, bin_edges=((0.5,) * 7, (60.0,) * 7))
    return SymbolicGenerator(SymbolicLM(cfg), tiny_map(), SamplingConfig(max_tokens_per_bar=40))


def test_same_seed_same_music_and_different_seed_differs(gen):
    curve = EmotionCurve.constant(Emotion(0.2, 0.4))
    a, ca = render(gen, curve, 4, seed=7, qpm=100)
    b, cb = render(gen, curve, 4, seed=7, qpm=100)
    c, cc = render(gen, curve, 4, seed=8, qpm=100)
    assert [x.tokens for x in ca] == [x.tokens for x in cb]
    assert [x.tokens for x in ca] != [x.tokens for x in cc]
    assert a.qpm == 100


def test_restored_state_continues_identically(gen):
    state = gen.init_state(3)
    e = Emotion(0.0, 0.0)
    for _ in range(2):
        _, state = gen.generate_chunk(state, Conditions(e))
    saved = state.clone()
    nxt = [gen.generate_chunk(state, Conditions(e))[0].tokens for _ in range(2)]
    again = [gen.generate_chunk(saved, Conditions(e))[0].tokens for _ in range(2)]
    assert nxt == again


def test_chunks_are_grammatical_bars(gen):
    _, chunks = render(gen, EmotionCurve.constant(Emotion(0.5, 0.5)), 6, seed=1)
    for c in chunks:
        assert c.tokens[0] == BAR and BAR not in c.tokens[1:]
        assert np.all(c.notes.start >= 0) and np.all(c.notes.start < 4)
        n_pitch = sum(PITCH0 <= t < DUR0 for t in c.tokens)
        assert len(c.notes) >= n_pitch - 1  # only a note cut off by the token budget is lost


@pytest.mark.parametrize("seed", range(5))
def test_a_piece_starts_on_its_first_downbeat(gen, seed):
    _, chunks = render(gen, EmotionCurve.constant(Emotion(-0.5, -0.8)), 2, seed=seed)
    assert chunks[0].tokens[1] == POS0
    assert chunks[0].notes.start.min() == 0.0


def test_long_generation_refills_the_context(gen):
    state = gen.init_state(0)
    for _ in range(12):  # 12 bars of up to 40 tokens through a 64-token context
        _, state = gen.generate_chunk(state, Conditions(Emotion(0.9, 0.9)))
        assert state.cache.length == len(state.tokens) <= gen.cfg.block_size
    assert state.bar == 12


def test_guidance_contrasts_the_mirrored_valence():
    torch.manual_seed(0)
    cfg = replace(TINY, attributes=ATTRS, bin_edges=((0.5,) * 7, (60.0,) * 7))
    emap = tiny_map()
    emap.coef[:, 1] = 0.45  # here valence moves the attributes too
    model = SymbolicLM(cfg)
    plain = SymbolicGenerator(model, emap, SamplingConfig(max_tokens_per_bar=40, guidance=0.0))
    guided = SymbolicGenerator(model, emap, SamplingConfig(max_tokens_per_bar=40, guidance=3.0))
    sad = Emotion(-0.9, 0.0)
    rows, mirror = guided._conditions(sad), guided.attribute_bins(Emotion(0.9, 0.0))
    assert rows.shape == (2, 2) and rows[0].tolist() != mirror.tolist()
    assert rows[1].tolist() == mirror.tolist()  # the whole mirror image, texture included
    # without texture guidance the texture attribute (note density) keeps the asked value
    untextured = SymbolicGenerator(model, emap, SamplingConfig(max_tokens_per_bar=40, guidance=3.0, guide_texture=False))
    assert untextured._conditions(sad)[1].tolist() == [rows[0][0], mirror[1]]
    assert rows[0][0] != mirror[0] and rows[0][1] != mirror[1]
    assert plain._conditions(sad).shape == (1, 2)
    _, ca = render(guided, EmotionCurve.constant(sad), 3, seed=3)
    _, cc = render(plain, EmotionCurve.constant(sad), 3, seed=3)
    assert [x.tokens for x in ca] == [x.tokens for x in render(guided, EmotionCurve.constant(sad), 3, seed=3)[1]]
    assert [x.tokens for x in ca] != [x.tokens for x in cc]  # the contrast changes what is sampled
    with pytest.raises(ValueError, match="guidance"):
        SamplingConfig(guidance=-1)


def test_dynamics_rule_scales_velocity_with_arousal(gen):
    from moodlane.engine.symbolic.dynamics import scale_velocity

    assert scale_velocity(np.array([64, 120, 1]), 1.0, 0.5).tolist() == [91, 127, 1]  # x 2**0.5, clipped
    assert scale_velocity(np.array([64]), -1.0, 0.5).tolist() == [45]
    excited = EmotionCurve.constant(Emotion(0.0, 1.0))
    flat = SymbolicGenerator(gen.model, gen.map, replace(gen.sampling, dynamics=0.0))
    loud = SymbolicGenerator(gen.model, gen.map, replace(gen.sampling, dynamics=0.5))
    a, _ = render(flat, excited, 3, seed=2)
    b, _ = render(loud, excited, 3, seed=2)
    assert len(a) > 0 and a.pitch.tolist() == b.pitch.tolist()  # the rule changes loudness only
    assert b.velocity.tolist() == scale_velocity(a.velocity, 1.0, 0.5).tolist()


def test_emotion_reaches_the_conditioning(gen):
    assert list(gen.attribute_bins(Emotion(0, -1))) != list(gen.attribute_bins(Emotion(0, 1)))
    e = gen.map.ranks(Emotion(0.5, 0.5), "emogen")
    assert e.tolist() == [0.75, 0.75]


def test_session_reads_the_curve_at_each_bar():
    curve = EmotionCurve.from_points([(0.0, Emotion(-1, -1)), (12.0, Emotion(1, 1))])
    s = Session(MockGenerator(), curve, seed=0, qpm=120)
    chunks = [s.next_chunk() for _ in range(4)]
    assert [c.emotion.arousal for c in chunks] == pytest.approx([-1, -1 / 3, 1 / 3, 1])
    counts = [len(c.notes) for c in chunks]
    assert counts == sorted(counts) and counts[0] < counts[-1]  # mock: arousal -> notes per bar


def test_mock_follows_emotion():
    m = MockGenerator()
    calm, _ = m.generate_chunk(m.init_state(0), Conditions(Emotion(-0.5, -0.9)))
    wild, _ = m.generate_chunk(m.init_state(0), Conditions(Emotion(0.5, 0.9)))
    assert len(wild.notes) > len(calm.notes)
    assert wild.notes.velocity.mean() > calm.notes.velocity.mean()


def test_mode_rule_moves_major_to_minor_and_back():
    from moodlane.engine.symbolic import mode_rule
    from tests.conftest import make_notes

    c_major = make_notes([(i, 1, p, 80) for i, p in enumerate([60, 64, 67, 72, 69, 71, 65, 62])])
    hist = mode_rule.update_histogram(np.zeros(12), c_major)
    assert mode_rule.estimate_key(hist) == (0, True)
    sad = mode_rule.apply(c_major, hist, valence=-0.8)
    assert sad.pitch.tolist() == [60, 63, 67, 72, 68, 70, 65, 62]  # E->Eb, A->Ab, B->Bb
    assert mode_rule.apply(c_major, hist, valence=0.8) is c_major  # already major
    assert mode_rule.apply(c_major, hist, valence=-0.1) is c_major  # near neutral: untouched
    a_minor = make_notes([(i, 1, p, 80) for i, p in enumerate([57, 60, 64, 69, 65, 67, 62, 59])])
    h = mode_rule.update_histogram(np.zeros(12), a_minor)
    assert mode_rule.estimate_key(h) == (9, False)
    assert mode_rule.apply(a_minor, h, valence=0.8).pitch.tolist() == [57, 61, 64, 69, 66, 68, 62, 59]


def test_mode_twin_moves_a_whole_piece_to_its_parallel_mode():
    """Key-aware training data: a C major piece's twin is in C minor (and back), with its
    timing, velocities and parts kept."""
    from moodlane.engine.symbolic import mode_rule
    from tests.conftest import make_notes

    c_major = make_notes([(i, 1, p, 80) for i, p in enumerate([60, 64, 67, 72, 69, 71, 65, 62])])
    twin = mode_rule.mode_twin(c_major)
    assert twin.pitch.tolist() == [60, 63, 67, 72, 68, 70, 65, 62]
    assert mode_rule.estimate_key(mode_rule.update_histogram(np.zeros(12), twin, decay=1.0)) == (0, False)
    assert np.array_equal(twin.start, c_major.start) and np.array_equal(twin.velocity, c_major.velocity)
    assert mode_rule.mode_twin(twin).pitch.tolist() == c_major.pitch.tolist()  # minor -> major
    assert len(mode_rule.mode_twin(c_major.window(5, 6))) == 0  # empty stays empty


def test_projection_returns_a_blend_of_real_profiles():
    m = tiny_map()
    bank = np.array([[0.1, 0.1], [0.9, 0.9], [0.2, 0.8]])
    from dataclasses import replace as dc_replace

    m2 = dc_replace(m, bank=bank, weights=np.ones(2), neighbours=1)
    assert m2.ranks(Emotion(0, 1)).tolist() == [0.9, 0.9]
    assert m2.ranks(Emotion(0, -1)).tolist() == [0.1, 0.1]
    assert np.allclose(m2.to_json()["bank"], bank)
    assert EmotionMap.from_json(m2.to_json()).neighbours == 1


def test_valence_limit_holds_the_fit_at_its_range_and_round_trips():
    """Past `valence_limit` the smooth fit holds valence (as `arousal_limit` holds arousal), so
    its v^2 term cannot bend the asks back; inside it nothing changes; maps without it (the
    shipped one) are untouched."""
    from dataclasses import replace as dc_replace

    m = tiny_map()
    m.coef[:, 4] = 0.3  # a v^2 term: unlimited, +0.9 and -0.9 ask for more than 0.6
    held = dc_replace(m, valence_limit=0.6)
    assert not np.allclose(m.ranks(Emotion(0.9, 0.2)), m.ranks(Emotion(0.6, 0.2)))
    assert np.allclose(held.ranks(Emotion(0.9, 0.2)), held.ranks(Emotion(0.6, 0.2)))
    assert np.allclose(held.ranks(Emotion(-1.0, 0.2)), held.ranks(Emotion(-0.6, 0.2)))
    assert np.allclose(held.ranks(Emotion(0.3, -0.4)), m.ranks(Emotion(0.3, -0.4)))
    assert EmotionMap.from_json(held.to_json()).valence_limit == 0.6
    assert EmotionMap.from_json({**m.to_json(), "version": 2}).valence_limit is None


def test_map_says_what_it_asks_per_second():
    """`asks_per_second`: a time-based attribute's value at the emotion's own tempo, in seconds'
    terms; the shipped map asks more notes per second as arousal rises."""
    from moodlane.engine.symbolic.attributes import rank_to_value
    from moodlane.engine.symbolic.generator import DEFAULT_MAP

    m = EmotionMap.load(DEFAULT_MAP)
    e = Emotion(0.3, 0.5)
    tempo = m.tempo(e)
    per_beat = rank_to_value(m.ranks(e, tempo=tempo)[m.attributes.index("note_density")], m.timed["note_density"]["edges"])
    assert m.asks_per_second(e) == pytest.approx(per_beat * tempo / 60.0)
    assert m.asks_per_second(e, "duration_mean") > 0
    asks = [m.asks_per_second(Emotion(0.0, a)) for a in (-0.8, -0.3, 0.3, 0.8)]
    assert asks == sorted(asks) and asks[-1] > 2 * asks[0]


def test_calibrated_map_asks_each_quadrant_for_emopias_median():
    """Map version 3: a time-based attribute calibrated on EMOPIA asks each quadrant centre
    for that quadrant's median in seconds' terms, at any session tempo, and keeps rising with
    arousal past the quadrants."""
    from moodlane.engine.emotion import QUADRANT_CENTRES
    from moodlane.engine.symbolic.attributes import FEATURE_NAMES, INDEX, rank_to_value
    from moodlane.engine.training.emotion import timed_attributes

    rng = np.random.default_rng(0)
    per_beat = {1: 4.0, 2: 5.0, 3: 1.5, 4: 2.0}  # medians at EMOPIA's 120 qpm: 8, 10, 3, 4 notes/s
    q = np.repeat([1, 2, 3, 4], 21)
    x = np.zeros((len(q), len(FEATURE_NAMES)))
    x[:, INDEX["note_density"]] = [per_beat[k] * rng.uniform(0.5, 1.5) if i % 21 else per_beat[k] for i, k in enumerate(q)]
    for k in per_beat:  # make the quadrant's median exactly its value: as many above as below
        rows = np.flatnonzero(q == k)[1:]
        x[rows[:10], INDEX["note_density"]] = per_beat[k] * 0.7
        x[rows[10:], INDEX["note_density"]] = per_beat[k] * 1.3
    lab = {"emopia_xw": x, "emopia_q": q, "emopia_valid": np.zeros(len(q), bool)}
    edges = np.array([np.linspace(0.5, 8.0, 7), np.linspace(60, 100, 7)])
    with pytest.raises(ValueError, match="calibration"):
        replace(tiny_map(), timed=timed_attributes(ATTRS, edges)).ranks(Emotion(0, 0), mode="calibrated")
    m = replace(tiny_map(), timed=timed_attributes(ATTRS, edges, lab))
    assert m.calibrated and m.timed["note_density"]["emopia_median_per_quadrant"] == [8.0, 10.0, 3.0, 4.0]
    for k, e in QUADRANT_CENTRES.items():
        assert m.asks_per_second(e, mode="calibrated") == pytest.approx(2 * per_beat[k], rel=0.01)
        at = {bpm: m.ranks(e, "calibrated", tempo=bpm)[0] for bpm in (90.0, 120.0)}
        ratio = rank_to_value(at[90.0], edges[0]) / rank_to_value(at[120.0], edges[0])
        assert ratio == pytest.approx(120 / 90, rel=0.01)  # the same notes per second
    asks = [m.asks_per_second(Emotion(0.0, a), mode="calibrated") for a in (-1.0, -0.6, 0.0, 0.6, 1.0)]
    assert asks == sorted(asks)
    e = Emotion(0.2, 0.9)
    assert EmotionMap.from_json(m.to_json()).asks_per_second(e, mode="calibrated") == pytest.approx(m.asks_per_second(e, mode="calibrated"))
    assert m.ranks(e).tolist() == tiny_map().ranks(e).tolist()  # smooth and EmoGen's maps are unchanged
    assert m.ranks(e, mode="emogen").tolist() == tiny_map().ranks(e, mode="emogen").tolist()
    with pytest.raises(ValueError, match="four quadrants"):
        timed_attributes(ATTRS, edges, {**lab, "emopia_q": np.where(q == 4, 3, q)})
    model = SymbolicLM(replace(TINY, attributes=ATTRS, bin_edges=tuple(map(tuple, edges))))
    assert SymbolicGenerator(model, m, SamplingConfig(mapping="calibrated")).attribute_bins(Emotion(0.6, 0.6)).shape == (2,)
    with pytest.raises(CheckpointError, match="train map --calibrate"):
        SymbolicGenerator(model, tiny_map(), SamplingConfig(mapping="calibrated"))


def test_mode_context_puts_the_moved_bar_in_the_decoders_context(gen):
    """`SamplingConfig.mode_context`: a bar the mode rule moved replaces the decoder's own in
    its context (tokens and KV cache), so the next bar follows the mode that was played.
    Without it the context keeps what the decoder wrote."""
    from moodlane.engine.symbolic.tokens import decode

    def last_bar(state):
        start = max(i for i, t in enumerate(state.tokens) if t == BAR)
        return decode(np.array(state.tokens[start:]), qpm=120.0)

    sad = Conditions(Emotion(-0.8, 0.0))
    for ctx in (True, False):
        g = SymbolicGenerator(gen.model, gen.map, replace(gen.sampling, mode_context=ctx))
        state, moved = g.init_state(5), None
        for _ in range(12):
            chunk, state = g.generate_chunk(state, sad)
            wrote = decode(np.array(chunk.tokens), qpm=120.0)
            if sorted(wrote.pitch.tolist()) != sorted(chunk.notes.pitch.tolist()):
                moved = (wrote, chunk.notes)
                break
        assert moved is not None, "the rule moved no bar of random music in 12"
        context = last_bar(state)
        assert sorted(context.pitch.tolist()) == sorted((moved[1] if ctx else moved[0]).pitch.tolist())
        assert state.cache.length == len(state.tokens) == len(state.attrs)
        # the cache holds exactly what a fresh pass over the context computes
        fresh = state.clone()
        g._refill(fresh, reserve=1)
        assert fresh.tokens == state.tokens
        bins = g._conditions(sad.emotion)
        emb = g.model.attribute_embedding(torch.from_numpy(bins))[:, None]
        assert torch.allclose(g._feed(state, [BAR], bins, emb), g._feed(fresh, [BAR], bins, emb), atol=1e-4)
