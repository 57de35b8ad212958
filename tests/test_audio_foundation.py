"""The audio foundation on tiny configs: rendered labelled audio, the codec, the external
music model and the Emotion Predictor. Seconds each; nothing here needs the real data."""

import json
import os

import numpy as np
import pytest
import torch

from moodlane.engine.audio import melspec
from moodlane.engine.audio.codec import TINY, Codec, CodecConfig, CodecError, build_model, export_state, load_codec
from moodlane.engine.audio.losses import mel_distance, si_snr
from moodlane.engine.audio.music_model import Features, load_music_model, to_frame_rate
from moodlane.engine.audio.predictor import Head, PredictorConfig, PredictorError, load_predictor, pool, save_predictor
from moodlane.engine.training.audio_data import EMOTION_WORDS, RenderJob, label_at, read_manifest, render_audio
from tests.fake_data import build


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A fake data folder rendered at 8 kHz (the tiny codec's rate)."""
    root = tmp_path_factory.mktemp("audio")
    data = build(root / "data", songs_per_quadrant=2)
    summary = render_audio(RenderJob(data=str(data), out=str(root / "audio"), sample_rate=8000, jobs=1), progress=False)
    return root / "audio", summary


def test_render_audio_manifest_labels_and_text(rendered):
    out, summary = rendered
    recs = read_manifest(out)
    assert summary["clips"] == len(recs) == 16 + 4 + 4 and not summary["errors"]
    assert summary["hours"] > 0
    by = {r["source"]: r for r in recs}
    assert by["emopia"]["labels"]["kind"] == "quadrant" and by["emopia"]["labels"]["coarse"] is True
    assert by["pop909"]["labels"] is None
    curve = next(r for r in recs if r["source"] == "vgmidi")["labels"]
    assert curve["kind"] == "curve"
    times = [p[0] for p in curve["points"]]
    assert times[0] == 0 and np.allclose(np.diff(times), 4 * 60 / 100, atol=1e-3)  # one point per 4/4 bar at 100 BPM
    for r in recs:
        assert (out / r["path"]).is_file() and r["sample_rate"] == 8000 and r["split"] in ("train", "valid")
        words = set(r["text"].replace(",", " ").split())
        assert not words & EMOTION_WORDS, r["text"]
        assert r["text"].startswith("solo ")
    # Timbre is not tied to emotion: several programs appear within one quadrant.
    q1 = {r["program"] for r in recs if r["labels"] and r["labels"].get("quadrant") == 1}
    assert len(q1) >= 2


def test_render_audio_resumes(rendered, tmp_path):
    out, _ = rendered
    first = read_manifest(out)[0]
    mtime = os.stat(out / first["path"]).st_mtime_ns
    data = out.parent / "data"
    summary = render_audio(RenderJob(data=str(data), out=str(out), sample_rate=8000, jobs=1), progress=False)
    assert summary["clips"] == 24 and os.stat(out / first["path"]).st_mtime_ns == mtime


def test_label_at_reads_curves_and_quadrants():
    rec = {"labels": {"kind": "curve", "points": [[0.0, 0.1, 0.2], [2.0, -0.5, 0.7]]}}
    assert np.allclose(label_at(rec, [0.5, 2.5, 9.0]), [[0.1, 0.2], [-0.5, 0.7], [-0.5, 0.7]])
    q = {"labels": {"kind": "quadrant", "valence": -0.6, "arousal": 0.6}}
    assert np.allclose(label_at(q, [1.0]), [[-0.6, 0.6]])
    assert np.isnan(label_at({"labels": None}, [1.0])).all()
    # pseudo labels are read only when asked for, and never over real ones
    pseudo = {"labels": None, "pseudo_labels": {"kind": "curve", "points": [[0.0, 0.3, -0.4]]}}
    assert np.isnan(label_at(pseudo, [1.0])).all() and np.allclose(label_at(pseudo, [1.0], pseudo=True), [[0.3, -0.4]])
    assert np.allclose(label_at({**q, "pseudo_labels": pseudo["pseudo_labels"]}, [1.0], pseudo=True), [[-0.6, 0.6]])


def test_pseudo_label_gives_unlabelled_clips_the_judges_reading_of_their_midi(rendered, tmp_path, capsys):
    """`data pseudo-label`: POP909 clips get per-bar curves from the shipped symbolic judge,
    in the manifest and the sidecars; labelled clips are untouched. The fake songs are played
    in the four quadrants' styles, so the judge must hear the happy-excited one (major,
    dense, loud) as happier and more excited than the sad-calm one (minor, sparse, soft)."""
    import shutil

    from conftest import run_cli

    out = tmp_path / "audio"
    shutil.copytree(rendered[0], out)
    before = {r["id"]: r for r in read_manifest(out)}
    code, stdout, err = run_cli(["data", "pseudo-label", "--out", str(out), "--data", str(rendered[0].parent / "data")], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["clips"] == summary["unlabelled"] == 4 and summary["missing_midi"] == 0 and summary["bars"] >= 4 * 12
    recs = {r["id"]: r for r in read_manifest(out)}
    for cid, r in recs.items():
        if before[cid]["labels"]:
            assert r == before[cid]
            continue
        lab = r["pseudo_labels"]
        assert r["labels"] is None and lab["kind"] == "curve" and lab["source"] == "symbolic judge"
        assert np.allclose(np.diff([p[0] for p in lab["points"]]), 4 * 60 / 100, atol=1e-3)  # one point per bar at 100 BPM
        assert json.loads((out / r["path"]).with_suffix(".json").read_text())["pseudo_labels"] == lab
    mean = {cid: np.mean([p[1:] for p in recs[cid]["pseudo_labels"]["points"]], axis=0) for cid in recs if not recs[cid]["labels"]}
    q1, q3 = mean["pop909/000"], mean["pop909/002"]  # songs 0 and 2: the Q1 and Q3 styles
    assert q1[0] > q3[0] and q1[1] > q3[1]


def test_mode_twins_play_the_training_clips_in_the_other_mode_and_move_their_labels(rendered, tmp_path, capsys):
    """`data render-audio --mode-twins SETS`: each training clip of those sets again in the
    parallel mode of its key, played by the same program with the same text and no label;
    held-out clips and other sets get none. `data pseudo-label` then gives a twin its
    original's label plus the change the judge reads: the major (happy) song's twin is
    sadder, the minor (sad) one's happier, and a VGMIDI twin follows its listeners' curve."""
    import shutil

    import soundfile as sf
    from conftest import run_cli

    from moodlane.engine.symbolic.judge import SymbolicJudge
    from moodlane.engine.training.audio_data import judge_labels, source_note_arrays

    out, data = tmp_path / "audio", rendered[0].parent / "data"
    shutil.copytree(rendered[0], out)
    base = ["data", "render-audio", "--out", str(out), "--data", str(data), "--sample-rate", "8000", "--jobs", "1"]
    code, _, err = run_cli([*base, "--sets", "pop909", "--mode-twins", "emopia"], capsys)
    assert code != 0 and "mode twins of emopia: not among the sets rendered" in err.strip().splitlines()[-1], err
    code, stdout, err = run_cli([*base, "--mode-twins", "vgmidi,pop909"], capsys)
    assert code == 0, err
    recs = {r["id"]: r for r in read_manifest(out)}
    twins = {k: r for k, r in recs.items() if "twin_of" in r}
    want = {k for k, r in recs.items() if r["source"] in ("vgmidi", "pop909") and r["split"] == "train" and "twin_of" not in r}
    assert json.loads(stdout)["clips"] == 24 + len(want) and set(twins) == {k + "~twin" for k in want} and want
    for t in twins.values():
        o = recs[t["twin_of"]]
        assert t["labels"] is None and t["split"] == "train" and t["source"] == o["source"]
        assert (t["program"], t["text"], t["duration"]) == (o["program"], o["text"], o["duration"])
        a, b = sf.read(out / o["path"])[0], sf.read(out / t["path"])[0]
        assert a.shape == b.shape and not np.allclose(a, b)  # the same length, other notes

    code, stdout, err = run_cli(["data", "pseudo-label", "--out", str(out), "--data", str(data)], capsys)
    assert code == 0, err
    assert json.loads(stdout)["mode_twins"] == len(twins)
    recs = {r["id"]: r for r in read_manifest(out)}
    judge = SymbolicJudge.shipped()
    notes = source_note_arrays(list(recs.values()), data)
    for k in twins:
        o, t = recs[recs[k]["twin_of"]], recs[k]
        got = np.asarray(t["pseudo_labels"]["points"])
        assert t["labels"] is None and json.loads((out / t["path"]).with_suffix(".json").read_text())["pseudo_labels"] == t["pseudo_labels"]
        judged = {c: np.asarray(judge_labels(notes[c], judge)["points"])[:, 1:] for c in (k, o["id"])}
        change = judged[k] - judged[o["id"]]
        expect = np.clip(label_at(o, got[:, 0], pseudo=True) + change, -1, 1)
        assert np.allclose(got[:, 1:], expect, atol=1e-3), k
    valence = {k: float(np.mean(np.asarray(r["pseudo_labels"]["points"])[:, 1])) for k, r in recs.items() if r.get("pseudo_labels")}
    moved = {k: valence[k] - valence[recs[k]["twin_of"]] for k in twins if recs[k]["twin_of"] in valence}  # POP909's
    for song, sign in (("pop909/000", -1), ("pop909/002", 1)):  # the Q1 style is major, the Q3 style minor
        assert sign * moved[song + "~twin"] > 0.1, moved  # both songs train in the fake folder


# ---- codec -----------------------------------------------------------------------------


def _tiny_codec(seed=0) -> Codec:
    torch.manual_seed(seed)
    return Codec(TINY, build_model(TINY).eval(), {"weights_sha256": f"{seed:064x}"})


def test_codec_shapes_and_bandwidths():
    c = _tiny_codec()
    assert c.frame_rate == 250 and TINY.kbps_per_codebook == 1.5
    x = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    codes = c.encode(x)
    assert codes.shape == (1, TINY.lm_codebooks, 250) and codes.dtype == torch.int64
    assert int(codes.max()) < TINY.bins
    assert c.encode(x, kbps=6.0).shape[1] == 4
    y = c.decode(codes, length=len(x))
    assert y.shape == (1, 8000) and np.isfinite(y).all()
    with pytest.raises(CodecError, match="not one of"):
        c.encode(x, kbps=4.5)
    with pytest.raises(CodecError, match="whole number of codebooks"):
        CodecConfig(bandwidths=(1.0,))


def test_codec_save_load_roundtrip_and_bad_checkpoints(tmp_path):
    from safetensors.torch import save_file

    c = _tiny_codec()
    # a real checkpoint is written by training: one step of the encoder's k-means init first
    c.model.train()
    c.model.quantizer.vq(c.model.encoder(torch.randn(2, 1, 4000) * 0.1), n_q=4)
    c.model.eval()
    save_file(export_state(c.model), tmp_path / "c.safetensors")
    (tmp_path / "c.json").write_text(json.dumps({"config": TINY.to_json()}))
    d = load_codec(tmp_path / "c")
    x = np.random.default_rng(1).normal(0, 0.1, 4000).astype(np.float32)
    # shipped weights are fp16: nearly every code and sample survives the round trip
    assert (c.encode(x) == d.encode(x)).float().mean() > 0.9
    assert np.abs(c.roundtrip(x) - d.roundtrip(x)).max() < 0.05 * np.abs(c.roundtrip(x)).max() + 1e-3
    with pytest.raises(CodecError, match="does not exist"):
        load_codec(tmp_path / "missing")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 40)
    (tmp_path / "bad.json").write_text(json.dumps({"config": TINY.to_json()}))
    with pytest.raises(CodecError, match="not a readable safetensors"):
        load_codec(tmp_path / "bad")
    other = CodecConfig(n_filters=8, dimension=16, ratios=(4, 4, 2), lstm=0, n_q=4, bins=64, bandwidths=(3.0, 6.0), sample_rate=8000)
    (tmp_path / "c.json").write_text(json.dumps({"config": other.to_json()}))
    with pytest.raises(CodecError, match="not a codec of this architecture"):
        load_codec(tmp_path / "c")


def test_official_encodec_checkpoint_loads_from_a_local_file(tmp_path):
    from moodlane.engine.audio.codec import OFFICIAL_24K

    m = build_model(OFFICIAL_24K)
    assert 14e6 < sum(p.numel() for p in m.parameters()) < 16e6  # EnCodec 24 kHz: 14.9 M
    torch.save(m.state_dict(), tmp_path / "encodec_24khz-d7cc33bc.th")
    c = load_codec(tmp_path / "encodec_24khz-d7cc33bc.th")
    assert c.cfg.name == "encodec_24khz" and c.frame_rate == 75
    assert c.encode(np.zeros(3200, np.float32), kbps=6.0).shape == (1, 8, 10)  # hop 320
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError, match="not a readable EnCodec checkpoint"):
        load_codec(tmp_path / "junk.th")


def test_torchaudio_is_needed_nowhere_else():
    """One place knows torchaudio exists: the encodec import in codec.py."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    users = sorted(
        str(p.relative_to(root))
        for d in ("engine", "daw_bridge", "export", "presets")
        for p in (root / d).rglob("*.py")
        if "import torchaudio" in p.read_text()
    )
    assert users == ["engine/audio/codec.py"]
    _tiny_codec()  # builds through the stub when the real torchaudio cannot import


def test_train_codec_two_steps_on_tiny_audio(rendered, tmp_path):
    from moodlane.engine.training.codec import CodecTrainConfig, train_codec

    out, _ = rendered
    rec = train_codec(
        out, tmp_path / "w", tmp_path / "c", CodecTrainConfig(steps=2, save_every=1), CodecConfig(), tiny=True, progress=False
    )
    assert rec["steps"] == 2 and np.isfinite(rec["final"]["mel"])
    c = load_codec(tmp_path / "c")
    assert c.cfg == TINY and json.loads((tmp_path / "c.json").read_text())["training"]["steps"] == 2
    rec2 = train_codec(
        out, tmp_path / "w", tmp_path / "c", CodecTrainConfig(steps=3, save_every=1), CodecConfig(), tiny=True, resume=True, progress=False
    )
    assert rec2["steps"] == 3 and len(json.loads((tmp_path / "c.json").read_text())["training"]["final"]) == 4


def test_measures():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, 16000).astype(np.float32)
    assert mel_distance(x, x, 16000) == pytest.approx(0.0, abs=1e-6)
    noisy = x + rng.normal(0, 0.01, len(x)).astype(np.float32)
    assert si_snr(x, noisy) == pytest.approx(20.0, abs=0.5)
    assert si_snr(x, 3 * noisy) == pytest.approx(si_snr(x, noisy), abs=1e-6)  # scale-invariant
    assert mel_distance(x, noisy, 16000) < mel_distance(x, rng.normal(0, 0.1, len(x)), 16000)


# ---- external music model ------------------------------------------------------------


def test_log_mel_puts_a_tone_in_the_right_band():
    t = np.arange(16000) / 16000
    mel = melspec.log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    assert mel.shape == (1 + 16000 // 256, 96)
    centres = np.linspace(0, 1, 98)[1:-1]  # not exact; the band with 1 kHz lies in the lower half
    band = int(np.argmax(mel[10]))
    fb = melspec.mel_filterbank()
    peak_hz = np.argmax(fb[band]) * 16000 / 512
    assert abs(peak_hz - 1000) < 100 and len(centres) == 96


def test_shipped_musicnn_features_and_frame_rate_helper():
    model = load_music_model()
    assert model.name == "musicnn-msd" and len(model.tag_names) == 50 and "happy" in model.tag_names
    rng = np.random.default_rng(0)
    pcm = rng.normal(0, 0.05, 16000 * 8).astype(np.float32)
    f = model.features(pcm, hop_s=1.0)
    assert f.embedding.shape == (len(f), 200) and f.tags.shape == (len(f), 50) and len(f) == 6
    assert np.all((f.tags >= 0) & (f.tags <= 1)) and np.allclose(np.diff(f.times), 1.0, atol=0.02)
    assert len(model.features(pcm[:16000])) == 0  # shorter than one 3 s window
    frames = to_frame_rate(f, 75.0, 600)
    assert frames.shape == (600, 200)
    k = int(round(f.times[2] * 75 - 0.5))
    assert np.allclose(frames[k], f.embedding[2], atol=0.05 * np.abs(f.embedding).max())


def test_a_model_from_a_local_folder_plugs_in(tmp_path):
    onnx = pytest.importorskip("onnx", reason="building a stand-in ONNX model needs the onnx package")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4000, 8], np.random.default_rng(0).normal(0, 0.01, 32000).astype(np.float32).tolist())
    node = helper.make_node("MatMul", ["audio", "w"], ["embedding"])
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["n", 4000])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 8])],
        [w],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model.onnx")
    spec = {"name": "stand-in", "sample_rate": 8000, "window_s": 0.5, "embedding": "embedding"}
    (tmp_path / "music_model.json").write_text(json.dumps(spec))
    m = load_music_model(tmp_path)
    f = m.features(np.ones(8000 * 3, np.float32), hop_s=0.5)
    assert m.dim == 8 and f.embedding.shape == (6, 8) and f.tags is None


# ---- Emotion Predictor ------------------------------------------------------------------


def test_pool_is_windowed_mean_and_std():
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    p = pool(x, 2)
    for i in range(7):
        w = x[max(0, i - 2) : i + 3]
        assert np.allclose(p[i, :3], w.mean(0), atol=1e-5) and np.allclose(p[i, 3:], w.std(0), atol=1e-4)


def _head(dim, rng):
    return Head(
        np.zeros(2 * dim, np.float32),
        np.ones(2 * dim, np.float32),
        rng.normal(0, 0.3, (2 * dim, 4)).astype(np.float32),
        np.zeros(4, np.float32),
        rng.normal(0, 0.3, (4, 2)).astype(np.float32),
        np.zeros(2, np.float32),
    )


def test_predictor_save_load_and_bad_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    cfg = PredictorConfig(dim=5, hidden=4)
    head = _head(5, rng)
    save_predictor(tmp_path / "p", cfg, head, {"note": "test"})
    p = load_predictor(tmp_path / "p")
    f = Features(np.arange(6) * 1.5 + 1.5, rng.normal(size=(6, 5)).astype(np.float32), None, 3.0, 1.5)
    pred = p.predict_features(f)
    assert pred.valence.shape == (6,) and np.all(np.abs(pred.valence) <= 1)
    assert np.allclose(pred.valence, head(pool(f.embedding, 2))[:, 0])
    j = pred.to_json("x.wav")
    assert set(j) == {"file", "valence", "arousal", "windows"} and len(j["windows"]) == 6 and len(j["windows"][0]) == 3
    (tmp_path / "p.json").write_text(json.dumps({"config": PredictorConfig(dim=9).to_json()}))
    with pytest.raises(PredictorError, match="do not match"):
        load_predictor(tmp_path / "p")
    with pytest.raises(PredictorError, match="does not exist"):
        load_predictor(tmp_path / "nothing")


def test_fit_head_learns_a_planted_relation():
    from moodlane.engine.training.predictor import PredictorTrainConfig, fit_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = np.tanh(np.stack([x[:, 0], -x[:, 1]], 1) * 0.8)
    groups = np.array([f"song{i // 10}" for i in range(600)])
    head, fit = fit_head(x, y, groups, PredictorTrainConfig(epochs=200))
    pred = head(rng.normal(size=(200, 6)).astype(np.float32))
    test_x = rng.normal(size=(200, 6)).astype(np.float32)
    pred = head(test_x)
    assert np.corrcoef(pred[:, 0], test_x[:, 0])[0, 1] > 0.8 and np.corrcoef(pred[:, 1], -test_x[:, 1])[0, 1] > 0.8
    assert fit["epochs"] >= 10


def test_data_encode_writes_tokens_and_window_features(rendered, monkeypatch):
    from moodlane.engine.training.encode import encode_all

    out, _ = rendered
    codec = _tiny_codec()
    s = encode_all(codec, out, kbps=3.0, progress=False)
    assert s["encoded_now"] == s["clips"] == 24 and s["codebooks"] == 2
    rec = read_manifest(out)[0]
    d = np.load(out / "encoded" / (rec["id"] + ".npz"))
    assert d["codes"].dtype == np.uint16 and d["codes"].shape[0] == 2
    assert abs(d["codes"].shape[1] - rec["duration"] * codec.frame_rate) <= 1
    assert d["features"].shape[1] == 200 and len(d["feature_times"]) == len(d["features"])
    assert str(d["codec_sha256"]) == codec.sha256 and str(d["codec_name"]) == TINY.name  # provenance
    assert encode_all(codec, out, kbps=3.0, progress=False)["encoded_now"] == 0  # resumes
    other = _tiny_codec(seed=1)  # another codec's tokens are not "already encoded": they are made again
    import moodlane.engine.training.encode as enc

    calls = []
    monkeypatch.setattr(enc, "features_of", lambda *a, **k: calls.append(1) or pytest.fail("features computed again"))
    assert encode_all(other, out, kbps=3.0, progress=False)["encoded_now"] == 24
    assert not calls  # the music model's features do not depend on the codec: kept, not computed again
    again = np.load(out / "encoded" / (rec["id"] + ".npz"))
    assert str(again["codec_sha256"]) == other.sha256 and np.array_equal(again["features"], d["features"])
    with pytest.raises(ValueError, match="no weights file"):
        encode_all(Codec(TINY, other.model), out, kbps=3.0, progress=False)
