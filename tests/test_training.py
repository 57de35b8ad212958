"""The train, eval and bench jobs end to end on a small rule-built data folder."""

import json

import numpy as np
import pytest

from moodlane.daw_bridge.cli import main
from moodlane.engine.emotion import Emotion
from moodlane.engine.symbolic.attributes import FEATURE_NAMES, INDEX
from moodlane.engine.symbolic.emotion_map import EmotionMap
from moodlane.engine.symbolic.selection import forest_cv_accuracy, select_attributes
from moodlane.engine.training.data import DataError, emopia, resolve_data_dir, vgmidi
from tests.fake_data import build


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return build(tmp_path_factory.mktemp("data"))


def test_readers(fake):
    e = emopia(fake)
    assert len(e) == 48 and {i.quadrant for i in e} == {1, 2, 3, 4}
    assert len({i.group for i in e}) == 24  # clips of one song share a group
    v = vgmidi(fake)
    assert len(v) == 4 and v[0].valence.shape == (8,)
    assert v[0].valence[0] == pytest.approx(np.mean([0.5, 0.55, 0.6]))


def test_resolve_data_dir_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("MOODLANE_DATA", raising=False)
    with pytest.raises(DataError, match="MOODLANE_DATA"):
        resolve_data_dir(None)
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    with pytest.raises(DataError, match="emopia"):
        resolve_data_dir(tmp_path)


def test_forest_selects_the_informative_attribute():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(FEATURE_NAMES)))
    y = rng.integers(1, 5, 200)
    X[:, INDEX["velocity_mean"]] += 6 * y  # only this one carries the label
    names, imp = select_attributes(X, y, k=3)
    assert names[0] == "velocity_mean" and len(names) == 3
    acc, f1 = forest_cv_accuracy(X, y, np.arange(200) // 2, folds=4)
    assert acc > 0.9 and f1 > 0.9


def test_train_eval_bench_end_to_end(fake, tmp_path, capsys):
    ck = tmp_path / "ck" / "symbolic"
    args = [
        "train",
        "symbolic",
        "--data",
        str(fake),
        "--out",
        str(tmp_path / "run"),
        "--export",
        str(ck),
        "--tiny",
        "--steps",
        "6",
        "--attributes",
        "4",
    ]
    assert main(args) == 0
    rec = json.loads(ck.with_suffix(".json").read_text())
    assert rec["training"]["steps"] == 6 and [h["step"] for h in rec["training"]["history"]][-1] == 6
    assert len(rec["config"]["attributes"]) == 4 and len(rec["config"]["bin_edges"]) == 4
    emap = EmotionMap.load(ck.with_name("emotion_map.json"))
    assert emap.attributes == tuple(rec["config"]["attributes"])
    # loud, dense clips are Q1/Q2 in the fake data: arousal must raise those attributes
    if "velocity_mean" in emap.attributes:
        j = emap.attributes.index("velocity_mean")
        assert emap.ranks(Emotion(0, 0.8))[j] > emap.ranks(Emotion(0, -0.8))[j]
    capsys.readouterr()

    # resume: more steps continue from the saved state
    assert main(args[:-4] + ["--steps", "8", "--attributes", "4", "--resume"]) == 0
    assert json.loads(ck.with_suffix(".json").read_text())["training"]["steps"] == 8
    capsys.readouterr()

    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "symbolic",
                "--data",
                str(fake),
                "--checkpoint",
                str(ck),
                "--n",
                "1",
                "--grid-n",
                "1",
                "--bars",
                "4",
                "--density-n",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    obj = res["objective"]
    assert obj["pieces"] == 4 and set(obj["per_quadrant"]) == {"Q1", "Q2", "Q3", "Q4"}
    assert obj["accuracy"] == pytest.approx(np.mean(list(obj["per_quadrant"].values())), abs=1e-4)  # one piece per quadrant: 0 or 1 each
    assert all(v in (0.0, 1.0) for v in obj["per_quadrant"].values())
    dens = res["density"]
    assert len(dens["notes_per_beat_by_valence"]) == 5 and all(len(r) == 5 for r in dens["notes_per_beat_by_valence"].values())
    # one 4-bar piece per point: notes per beat x 16 beats is its note count (to the 3 decimals kept)
    assert all(abs(x * 16 - round(x * 16)) < 0.01 for r in dens["notes_per_beat_by_valence"].values() for x in r)
    assert dens["ratio_plus1_over_minus1"].keys() == dens["notes_per_beat_by_valence"].keys() and dens["tempo_bpm"] == 120.0
    assert len(res["va_grid"]["requested"]) == 25 and len(res["ramp"]["judged_arousal_per_bar"]) == 4
    assert res["judge"]["all"]["emopia_clips"] == 48
    recall = res["judge"]["all"]["per_quadrant_recall"]  # 12 fake clips per quadrant: the mean recall is the accuracy
    assert set(recall) == {"Q1", "Q2", "Q3", "Q4"} and np.mean(list(recall.values())) == pytest.approx(
        res["judge"]["all"]["quadrant_accuracy"], abs=1e-3
    )
    assert (out / "va_grid.png").stat().st_size > 10_000
    capsys.readouterr()

    assert main(["bench", "symbolic", "--checkpoint", str(ck), "--bars", "2", "--repeats", "1"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["bars"] == 2 and bench["precision_used"] in ("int8", "fp32") and bench["cpu"]
    # render = generate, then synthesise: no faster than either alone
    assert bench["render_x_realtime"] <= min(bench["generate_x_realtime"], bench["synth_x_realtime"])  # (to the 0.1 kept)


def test_train_judge(fake, tmp_path, capsys):
    path = tmp_path / "judge.json"
    assert main(["train", "judge", "--data", str(fake), "--out", str(tmp_path), "--export", str(path)]) == 0
    from moodlane.engine.symbolic.judge import SymbolicJudge

    judge = SymbolicJudge.load(path)
    from tests.fake_data import QUAD_STYLE, piece

    rng = np.random.default_rng(1)
    loud = judge.judge(piece(rng, *QUAD_STYLE[1]))
    soft = judge.judge(piece(rng, *QUAD_STYLE[3]))
    assert loud.arousal > soft.arousal


def test_train_symbolic_with_parts_writes_lead_tokens_and_renders_parts(fake, tmp_path, capsys):
    """`train symbolic --parts`: the vocabulary gains LEAD, the dataset's tokens carry it (the
    skyline lead of unmarked files), and the generator's notes say which are the lead's."""
    from moodlane.engine.automation import EmotionCurve
    from moodlane.engine.session import join, render_chunks
    from moodlane.engine.symbolic.generator import SymbolicGenerator
    from moodlane.engine.symbolic.tokens import LEAD, PARTS_VOCAB

    ck = tmp_path / "ck" / "symbolic"
    args = ["train", "symbolic", "--data", str(fake), "--out", str(tmp_path / "run"), "--export", str(ck)]
    assert main([*args, "--tiny", "--steps", "4", "--attributes", "4", "--parts"]) == 0
    capsys.readouterr()
    rec = json.loads(ck.with_suffix(".json").read_text())
    assert rec["config"]["vocab_size"] == PARTS_VOCAB and rec["training"]["parts"] is True
    d = np.load(tmp_path / "run" / "dataset.npz")
    assert bool(d["parts"]) and (d["tokens"] == LEAD).sum() > 0
    gen = SymbolicGenerator.load(ck)
    chunks, qpm = render_chunks(gen, EmotionCurve.constant(Emotion(0.5, 0.5)), 8, 0, 120.0)
    piece = join(chunks, qpm)
    assert piece.part is not None and piece.part.shape == piece.pitch.shape
    assert set(piece.part.tolist()) <= {0, 1}


def test_mode_twins_add_each_training_song_in_its_parallel_mode(fake, tmp_path, capsys):
    """`train symbolic --mode-twins`: every training file gains a twin in the other mode, with
    its own key attributes; validation files have none; the cache knows which it holds."""
    from moodlane.engine.training.data import all_midi, is_valid_split
    from moodlane.engine.training.symbolic import build_dataset

    attrs = ("mode_major_minus_minor", "note_density")
    plain = build_dataset(fake, attrs, tmp_path / "plain.npz", workers=1)
    twins = build_dataset(fake, attrs, tmp_path / "twins.npz", workers=1, mode_twins=True)
    n_train = sum(not is_valid_split(i.group) for i in all_midi(fake))
    assert not plain["twin"].any() and int(twins["twin"].sum()) == n_train
    assert not (twins["twin"] & twins["valid"]).any() and twins["valid"].sum() == plain["valid"].sum()
    bars = np.repeat(twins["twin"], twins["n_bars"])
    mode, density = twins["bar_values"][:, 0], twins["bar_values"][:, 1]
    originals = np.repeat(~twins["twin"] & ~twins["valid"], twins["n_bars"])
    assert np.allclose(np.sort(density[bars]), np.sort(density[originals]))  # same notes and rhythm
    assert mode[bars].mean() < mode[originals].mean()  # the rule-built data is major; its twins minor
    again = build_dataset(fake, attrs, tmp_path / "twins.npz", workers=1, mode_twins=False)
    assert not again["twin"].any()  # a cache with twins is not reused for a run without
    ck = tmp_path / "ck" / "symbolic"  # the command line reaches it, and the record says so
    args = ["train", "symbolic", "--data", str(fake), "--out", str(tmp_path / "run"), "--export", str(ck), "--tiny"]
    assert main([*args, "--steps", "2", "--attributes", "2", "--mode-twins", "--twin-splice", "0.5"]) == 0
    rec = json.loads(ck.with_suffix(".json").read_text())["training"]
    assert rec["train_config"]["mode_twins"] is True and f"{n_train} of the train pieces parallel-mode twins" in rec["data"]
    assert rec["train_config"]["twin_splice"] == 0.5
    from moodlane.engine.training.jobs import TrainJob, train_symbolic

    for bad in (TrainJob(data=str(fake), out=str(tmp_path), twin_splice=0.5), TrainJob(mode_twins=True, twin_splice=1.5)):
        with pytest.raises(ValueError, match="--twin-splice must be in \\[0, 1\\] and needs --mode-twins"):
            train_symbolic(bad)


def test_twin_splice_switches_mode_at_a_bar_line_with_the_attributes(fake, tmp_path):
    """`--twin-splice`: a spliced crop is its song up to a bar line and the twin after it, each
    token with its own source's attribute bins, so the context says one mode and the
    attributes, then the notes, the other; without it, no crop mixes the two."""
    from moodlane.engine.symbolic.attributes import quantile_edges
    from moodlane.engine.symbolic.tokens import BAR
    from moodlane.engine.training.symbolic import Batcher, build_dataset

    attrs = ("mode_major_minus_minor", "note_density")
    d = build_dataset(fake, attrs, tmp_path / "twins.npz", workers=1, mode_twins=True)
    edges = quantile_edges(d["bar_values"], 8)
    plain = Batcher(d, edges, 64, False, 0)
    with pytest.raises(ValueError, match="mode-twin"):
        Batcher(build_dataset(fake, attrs, tmp_path / "plain.npz", workers=1), edges, 64, False, 0, splice=0.5)
    b = Batcher(d, edges, 64, False, 0, splice=1.0)
    assert (b.partner >= 0).all() and (b.partner[b.partner] == np.arange(len(b.pieces))).all()

    def source(seg: np.ndarray, attr: np.ndarray, pieces: list) -> set:
        """Which pieces hold this crop's tokens and bins as a contiguous run, bar by bar."""
        found = set()
        for bar in np.split(np.arange(len(seg)), np.flatnonzero(seg == BAR)[1:]):
            if len(bar) < 2:
                continue
            hits = {
                j
                for j, (tok, att, _) in enumerate(pieces)
                for s in np.flatnonzero(tok == seg[bar[0]])
                if s + len(bar) <= len(tok) and (tok[s : s + len(bar)] == seg[bar]).all() and (att[s : s + len(bar)] == attr[bar]).all()
            }
            found.add(frozenset(hits))
        return found

    switched = 0
    for _ in range(20):
        pi = int(b.rng.integers(len(b.pieces)))
        seg, attr = b._crop(pi)
        assert len(seg) <= 65
        sources = source(seg, attr, b.pieces)
        assert all(h & {pi, int(b.partner[pi])} for h in sources)  # every bar from the song or its twin
        switched += any(pi not in h for h in sources)
    assert switched >= 10  # most crops of more than one bar switch to the twin
    for _ in range(20):
        pi = int(plain.rng.integers(len(plain.pieces)))
        seg, attr = plain._crop(pi)
        assert all(pi in h for h in source(seg, attr, plain.pieces))


def test_song_key_gives_every_bar_the_whole_songs_key(fake, tmp_path):
    """`train symbolic --song-key`: the key attributes are one value per song, the whole song's
    (a twin's is the other mode's); the other attributes stay per window."""
    from types import SimpleNamespace

    from moodlane.engine.symbolic.attributes import features
    from moodlane.engine.symbolic.tokens import decode
    from moodlane.engine.training.symbolic import _piece, build_dataset
    from tests.conftest import make_notes

    # four bars of C major, then four of C minor: the windows disagree, the song has one key
    chords = [(60, 64, 67)] * 4 + [(60, 63, 67)] * 4
    notes = make_notes([(4 * b + k, 1, p + 12 * (k % 2), 80) for b, ch in enumerate(chords) for k in range(4) for p in ch])
    item = SimpleNamespace(load=lambda: notes, group="song")
    attrs = ("mode_major_minus_minor", "note_density")
    tokens, per_bar, _ = _piece(item, attrs)
    _, song, _ = _piece(item, attrs, song_key=True)
    assert per_bar[0, 0] > per_bar[-1, 0]  # major at the start, minor at the end
    assert np.all(song[:, 0] == features(decode(tokens, notes.qpm))[INDEX["mode_major_minus_minor"]])
    assert np.allclose(song[:, 1], per_bar[:, 1])  # density per window as before

    twins = build_dataset(fake, attrs, tmp_path / "song.npz", workers=1, mode_twins=True, song_key=True)
    assert bool(twins["song_key"])
    off = np.concatenate([[0], np.cumsum(twins["n_bars"])])
    first = twins["bar_values"][off[:-1], 0]
    assert first[twins["twin"]].mean() < first[~twins["twin"] & ~twins["valid"]].mean()


def test_warm_start_keeps_the_old_vocabulary_and_adds_lead():
    from dataclasses import replace

    import torch

    from moodlane.engine.symbolic.model import TINY, SymbolicLM
    from moodlane.engine.symbolic.tokens import PARTS_VOCAB, VOCAB_SIZE
    from moodlane.engine.training.symbolic import warm_start

    old = SymbolicLM(replace(TINY, attributes=("velocity_mean",), vocab_size=VOCAB_SIZE))
    new = SymbolicLM(replace(TINY, attributes=("velocity_mean",), vocab_size=PARTS_VOCAB))
    lead_row = new.wte.weight[VOCAB_SIZE].clone()
    warm_start(new, old)
    assert torch.equal(new.wte.weight[:VOCAB_SIZE], old.wte.weight) and torch.equal(new.wte.weight[VOCAB_SIZE], lead_row)
    assert torch.equal(new.lm_head.weight[:VOCAB_SIZE], old.lm_head.weight)
    with pytest.raises(ValueError, match="--init: wte.weight"):
        warm_start(old, new)  # a smaller vocabulary cannot hold the larger one's rows


def test_warm_start_with_an_added_attribute_plays_as_before_until_trained():
    """`--init STEM --add-attribute NAME`: the new attribute's table starts at zero, so every
    bin of it gives the old model's logits; an `init` whose attributes do not lead is refused."""
    from dataclasses import replace

    import torch

    from moodlane.engine.symbolic.model import TINY, SymbolicLM
    from moodlane.engine.training.symbolic import warm_start

    old = SymbolicLM(replace(TINY, attributes=("velocity_mean", "note_density"))).eval()
    new = SymbolicLM(replace(TINY, attributes=("velocity_mean", "note_density", "minor_chord_share"))).eval()
    warm_start(new, old)
    idx = torch.randint(0, TINY.vocab_size, (1, 12))
    a_old = torch.randint(0, TINY.n_bins + 1, (1, 12, 2))
    with torch.no_grad():
        want = old(idx, a_old)[0]
        for b in (0, TINY.n_bins - 1, TINY.n_bins):
            a_new = torch.cat([a_old, torch.full((1, 12, 1), b)], -1)
            assert torch.allclose(new(idx, a_new)[0], want, atol=1e-6)
    assert new.attr[2].weight.abs().sum() == 0 and new.attr[2].weight.requires_grad
    swapped = SymbolicLM(replace(TINY, attributes=("note_density", "velocity_mean", "minor_chord_share")))
    with pytest.raises(ValueError, match="must lead"):
        warm_start(swapped, old)


def test_train_symbolic_init_with_an_added_attribute(fake, tmp_path, capsys):
    """`train symbolic --init STEM --add-attribute NAME`: the new model conditions on the old
    attributes and the new one, with bin edges for each; an unknown name is refused."""
    from moodlane.engine.training.jobs import TrainJob, train_symbolic

    ck, ck2 = tmp_path / "ck" / "symbolic", tmp_path / "ck2" / "symbolic"
    common = ["train", "symbolic", "--data", str(fake), "--steps", "2"]
    assert main([*common, "--out", str(tmp_path / "run"), "--export", str(ck), "--tiny", "--attributes", "3"]) == 0
    args = [*common, "--out", str(tmp_path / "run2"), "--export", str(ck2), "--init", str(ck), "--add-attribute", "minor_chord_share"]
    assert main(args) == 0
    capsys.readouterr()
    old, new = (json.loads(c.with_suffix(".json").read_text())["config"] for c in (ck, ck2))
    assert new["attributes"] == [*old["attributes"], "minor_chord_share"] and len(new["bin_edges"]) == 4
    with pytest.raises(ValueError, match="--add-attribute: \\['minor_mood'\\]"):
        train_symbolic(TrainJob(data=str(fake), out=str(tmp_path), add_attributes=("minor_mood",)))


def test_calibrated_mapping_and_train_map_calibrate(fake, tmp_path, capsys):
    """A trained map carries the EMOPIA calibration of its time-based attributes; `train map
    --calibrate` adds it to a map without one and changes nothing else; `--mapping calibrated`
    refuses a map without it in one line."""
    ck = tmp_path / "ck" / "symbolic"
    base = ["--data", str(fake), "--out", str(tmp_path / "run"), "--export", str(ck)]
    assert main(["train", "symbolic", *base, "--tiny", "--steps", "2"]) == 0
    path = ck.with_name("emotion_map.json")
    d = json.loads(path.read_text())
    assert EmotionMap.from_json(d).calibrated and d["version"] == 3
    for t in d["timed"].values():
        t.pop("per_second"), t.pop("emopia_median_per_quadrant")
    path.write_text(json.dumps(d))
    render = ["render", "--checkpoint", str(ck), "--mapping", "calibrated", "--bars", "2", "-q"]
    capsys.readouterr()
    assert main([*render, "-o", str(tmp_path / "a.mid")]) == 2
    assert "train map --calibrate" in capsys.readouterr().err and not (tmp_path / "a.mid").exists()
    assert main(["train", "map", "--calibrate", *base]) == 0
    calibrated = json.loads(path.read_text())
    assert EmotionMap.from_json(calibrated).calibrated
    assert {k: v for k, v in calibrated.items() if k not in ("timed", "meta")} == {k: v for k, v in d.items() if k not in ("timed", "meta")}
    assert main([*render, "-o", str(tmp_path / "b.mid")]) == 0 and (tmp_path / "b.mid").stat().st_size > 0
