"""ONNX export and the onnxruntime backend (`export/`): parity with PyTorch on a tiny LM
and codec, the manifest, and every way an export can be missing, corrupt or mismatched."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import types

import numpy as np
import pytest
import torch
from test_lara import CFG, CODEC, FakeText, tiny_codec, tiny_generator

from moodlane.engine.audio.generator import AudioSampling
from moodlane.engine.audio.lm import LaraLM
from moodlane.engine.chunk import Conditions
from moodlane.engine.emotion import Emotion

pytest.importorskip("onnx", reason="the ONNX exporter needs the onnx package (the dev extra)")
ort = pytest.importorskip("onnxruntime", reason="the runtime backend needs onnxruntime (the onnx extra)")

from moodlane.engine.audio.onnx_runtime import OnnxExportError, choose_providers, load_onnx_lara  # noqa: E402
from moodlane.export.onnx import export_lara, memory_names, past_names  # noqa: E402

GREEDY = AudioSampling(top_k=1)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny LM + codec exported once: (folder, manifest)."""
    out = tmp_path_factory.mktemp("onnx")
    gen = tiny_generator(seed=3, sampling=GREEDY)
    gen.meta = {"weights_sha256": "a" * 64, "format_version": 1}
    gen.codec.meta = {"weights_sha256": "b" * 64}
    return out, export_lara(gen, out)


def record_logits(gen) -> list[torch.Tensor]:
    """Every guided-logits call of the generator's loop, in order."""
    seen: list[torch.Tensor] = []
    step = gen._logits

    def wrapped(*args):
        seen.append(step(*args))
        return seen[-1]

    gen._logits = wrapped
    return seen


def test_onnx_logits_tokens_and_audio_match_pytorch_over_a_va_change(tiny_export):
    folder, _ = tiny_export
    ref = tiny_generator(seed=3, sampling=GREEDY)
    onx = load_onnx_lara(folder, GREEDY, text_encoder=FakeText())
    assert onx.lm.name == "onnx" and onx.model is None
    seen_t, seen_o = record_logits(ref), record_logits(onx)
    st, so = ref.init_state(5), onx.init_state(5)
    chunks = []
    for e in (Emotion(-0.8, -0.6), Emotion(-0.8, -0.6), Emotion(0.9, 0.7)):  # the emotion changes mid-way
        ct, st = ref.generate_chunk(st, Conditions(e, 120.0, "piano"))
        co, so = onx.generate_chunk(so, Conditions(e, 120.0, "piano"))
        chunks.append((ct, co))
    assert len(seen_t) == len(seen_o) >= 100
    assert st.cache.length < st.steps  # the window filled and was rebuilt from its recent half at least once
    worst = max(float((a - b).abs().max()) for a, b in zip(seen_t, seen_o))
    assert worst <= 1e-4
    assert torch.equal(st.tokens, so.tokens) and st.offset == so.offset
    for ct, co in chunks:
        np.testing.assert_allclose(ct.audio.pcm, co.audio.pcm, atol=1e-4)
    # the change reached the logits: the two halves of the piece are not the same model call
    assert not torch.equal(seen_t[len(seen_t) // 3], seen_t[-len(seen_t) // 3])


def test_state_clone_on_onnx_continues_identically(tiny_export):
    folder, _ = tiny_export
    gen = load_onnx_lara(folder, AudioSampling(top_k=8), text_encoder=FakeText())
    c = Conditions(Emotion(0.2, 0.5), 120.0, "x")
    _, s = gen.generate_chunk(gen.init_state(1), c)
    snap = s.clone()
    a, _ = gen.generate_chunk(s, c)
    b, _ = gen.generate_chunk(snap, c)
    np.testing.assert_array_equal(a.audio.pcm, b.audio.pcm)


def test_codec_decoder_matches_at_lengths_other_than_the_traced_one(tiny_export):
    folder, _ = tiny_export
    sess = ort.InferenceSession(str(folder / "codec_decoder.onnx"), providers=["CPUExecutionProvider"])
    codec = tiny_codec()
    for frames in (17, 30, 123):
        codes = torch.randint(0, CODEC.bins, (2, CODEC.lm_codebooks, frames))
        got = sess.run(["audio"], {"codes": codes.numpy()})[0]
        want = codec.decode(codes)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_manifest_names_shapes_rates_and_checksums(tiny_export):
    folder, m = tiny_export
    cfg = tiny_generator().cfg
    assert m == json.loads((folder / "manifest.json").read_text())
    assert m["kind"] == "lara-onnx" and m["opset"] == 17 and m["codebooks"] == cfg.n_q and m["card"] == cfg.card
    assert m["sample_rate"] == CODEC.sample_rate and m["frame_rate"] == pytest.approx(CODEC.frame_rate)
    assert m["source"]["lm_sha256"] == "a" * 64 and m["source"]["codec_sha256"] == "b" * 64
    dec = m["graphs"]["decoder"]
    assert list(dec["inputs"]) == ["input_ids", *past_names(cfg.n_layer), *memory_names(LaraLM(CFG))]
    assert dec["inputs"]["past.layers.0.self_attn.key"]["shape"] == ["batch", cfg.n_head, "past", cfg.head_dim]
    assert dec["outputs"]["logits"]["shape"] == ["batch", cfg.n_q, cfg.card]
    assert list(dec["outputs"])[1:] == past_names(cfg.n_layer, "present")
    assert list(m["graphs"]["memory"]["outputs"]) == list(dec["inputs"])[1 + 2 * cfg.n_layer :]
    sess = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(dec["inputs"])
    fp32 = {k: v for k, v in m["parity"].items() if "int8" not in k}
    assert max(fp32.values()) <= 1e-4 and m["parity"]["decoder_int8_logits_max_abs"] > 0
    assert "text_encoder" not in m["files"]  # the stand-in text encoder stays in PyTorch


def test_int8_decoder_is_smaller_and_generates(tiny_export):
    folder, m = tiny_export
    assert (folder / "decoder.int8.onnx").stat().st_size < (folder / "decoder.onnx").stat().st_size
    gen = load_onnx_lara(folder, AudioSampling(top_k=4), text_encoder=FakeText(), precision="int8")
    assert gen.meta["precision"] == "int8"
    chunk, _ = gen.generate_chunk(gen.init_state(0), Conditions(Emotion(0.3, 0.3), 120.0, "x"))
    assert np.isfinite(chunk.audio.pcm).all() and chunk.audio.frames == int(2.0 * CODEC.sample_rate)
    with pytest.raises(ValueError, match="precision"):
        load_onnx_lara(folder, text_encoder=FakeText(), precision="fp16")


def test_missing_corrupt_and_mismatched_exports_are_named(tiny_export, tmp_path):
    folder, _ = tiny_export
    with pytest.raises(OnnxExportError, match="manifest.json does not exist"):
        load_onnx_lara(tmp_path / "nothing", text_encoder=FakeText())
    with pytest.raises(OnnxExportError, match="another LM checkpoint"):
        load_onnx_lara(folder, lm_sha="c" * 64, text_encoder=FakeText())
    with pytest.raises(OnnxExportError, match="another codec checkpoint"):
        load_onnx_lara(folder, codec_sha="c" * 64, text_encoder=FakeText())
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    data = bytearray((broken / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(OnnxExportError, match=r"decoder\.onnx is corrupt"):
        load_onnx_lara(broken, text_encoder=FakeText())
    (broken / "decoder.onnx").write_bytes(b"not onnx")
    m = json.loads((broken / "manifest.json").read_text())
    m["files"]["decoder"]["sha256"] = hashlib.sha256(b"not onnx").hexdigest()
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OnnxExportError, match=r"decoder\.onnx: onnxruntime cannot load it"):
        load_onnx_lara(broken, text_encoder=FakeText())
    (broken / "codec_decoder.onnx").unlink()
    with pytest.raises(OnnxExportError, match=r"codec_decoder\.onnx cannot be read"):
        m["files"]["decoder"] = json.loads((folder / "manifest.json").read_text())["files"]["decoder"]
        (broken / "manifest.json").write_text(json.dumps(m))
        shutil.copy(folder / "decoder.onnx", broken / "decoder.onnx")
        load_onnx_lara(broken, text_encoder=FakeText())
    (broken / "manifest.json").write_text("{")
    with pytest.raises(OnnxExportError, match="not a MoodLane ONNX manifest"):
        load_onnx_lara(broken, text_encoder=FakeText())


def test_cuda_asked_for_without_it_falls_back_to_cpu_with_a_notice(tiny_export, monkeypatch, caplog):
    folder, _ = tiny_export
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback is for machines without it")
    available, chosen, notices = choose_providers(["cuda", "cpu"])
    assert chosen == ["CPUExecutionProvider"] and "CUDAExecutionProvider is not available" in notices[0]
    assert choose_providers(None)[2] == []  # the default order: no CUDA is the everyday case, not news
    # an onnxruntime that lists CUDA but cannot start it (onnxruntime-gpu without the CUDA libraries)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="moodlane.engine.audio.onnx_runtime"):
        gen = load_onnx_lara(folder, GREEDY, text_encoder=FakeText())
    assert gen.lm.describe()["providers_used"] == ["CPUExecutionProvider"] and gen.lm.device == "cpu"
    assert any("CUDAExecutionProvider could not start" in r.message for r in caplog.records)
    chunk, _ = gen.generate_chunk(gen.init_state(0), Conditions(Emotion(0, 0)))
    assert np.isfinite(chunk.audio.pcm).all()


def test_export_refuses_what_it_cannot_write(tiny_export):
    from moodlane.export.onnx import ExportError

    folder, _ = tiny_export
    onx = load_onnx_lara(folder, text_encoder=FakeText())
    with pytest.raises(ExportError, match="runs on ONNX already"):
        export_lara(onx, folder / "again")
    gen = tiny_generator()
    gen.codec = types.SimpleNamespace(sample_rate=8000, frame_rate=50.0, meta={})  # no torch model: a MusicGen folder's HFCodec, say
    with pytest.raises(ExportError, match="MusicGen folder"):
        export_lara(gen, folder / "again")


def test_export_enforces_parity_and_needs_onnxruntime_to_check_it(tmp_path, monkeypatch):
    import moodlane.export.onnx as ex

    gen = tiny_generator(seed=3, sampling=GREEDY)
    gen.meta = {"weights_sha256": "a" * 64, "format_version": 1}
    gen.codec.meta = {"weights_sha256": "b" * 64}
    real = ex.measure_parity
    monkeypatch.setattr(ex, "measure_parity", lambda files, checks: {**real(files, checks), "decoder_logits_max_abs": 0.5})
    with pytest.raises(ex.ExportError, match="does not match PyTorch.*decoder_logits 5.00e-01"):
        export_lara(gen, tmp_path / "off")
    assert not list((tmp_path / "off").glob("*"))  # nothing written
    monkeypatch.setattr(ex, "measure_parity", lambda files, checks: {**real(files, checks), "decoder_int8_logits_max_abs": 0.5})
    assert export_lara(gen, tmp_path / "int8")["parity"]["decoder_int8_logits_max_abs"] == 0.5  # int8: reported only
    monkeypatch.setattr(ex, "measure_parity", real)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # not installed
    with pytest.raises(ex.ExportError, match="onnxruntime is not installed"):
        export_lara(gen, tmp_path / "unchecked")


def test_spectral_codec_exports_its_network_and_shares_the_phase_step(tmp_path):
    """A spectral codec: the graph gives the log magnitude (parity within 1e-4 at any length),
    the phase comes from the same Griffin-Lim on both backends, so chunks agree."""
    from test_spectral_codec import trained_tiny

    from moodlane.engine.audio.spectral import TINY_SPECTRAL

    TINY_SPECTRAL_BINS = TINY_SPECTRAL.freq_bins

    gen = tiny_generator(seed=4, sampling=GREEDY)
    gen.codec = trained_tiny()
    gen.meta = {"weights_sha256": "a" * 64, "format_version": 1, "codec": {"sha256": gen.codec.sha256}}
    m = export_lara(gen, tmp_path)
    assert m["codec_config"]["kind"] == "spectral" and list(m["graphs"]["codec_decoder"]["outputs"]) == ["logmag"]
    assert m["parity"]["codec_decoder_max_abs"] <= 1e-4
    sess = ort.InferenceSession(str(tmp_path / "codec_decoder.onnx"), providers=["CPUExecutionProvider"])
    for frames in (9, 41):
        codes = torch.randint(0, 64, (1, 2, frames))
        want = gen.codec.model.decode_logmag(codes).detach().numpy()
        np.testing.assert_allclose(sess.run(["logmag"], {"codes": codes.numpy()})[0], want, atol=1e-4)
    onx = load_onnx_lara(tmp_path, GREEDY, text_encoder=FakeText())
    assert onx.codec.context_frames == gen.codec.context_frames
    st, so = gen.init_state(2), onx.init_state(2)
    for e in (Emotion(-0.5, -0.5), Emotion(0.7, 0.6)):
        ct, st = gen.generate_chunk(st, Conditions(e, 120.0, "piano"))
        co, so = onx.generate_chunk(so, Conditions(e, 120.0, "piano"))
        assert torch.equal(st.tokens, so.tokens)
        np.testing.assert_allclose(ct.audio.pcm, co.audio.pcm, atol=1e-4)
    # the phase step runs outside the graph, so it follows the codec's JSON as it is now
    fewer = dataclasses.replace(TINY_SPECTRAL, gl_iters=1)
    onx1 = load_onnx_lara(tmp_path, GREEDY, text_encoder=FakeText(), codec_cfg=fewer)
    assert onx.codec.cfg.gl_iters == TINY_SPECTRAL.gl_iters and onx1.codec.cfg.gl_iters == 1
    gen.codec.cfg = fewer
    ct, _ = gen.generate_chunk(gen.init_state(2), Conditions(Emotion(0.7, 0.6), 120.0, "piano"))
    co, _ = onx1.generate_chunk(onx1.init_state(2), Conditions(Emotion(0.7, 0.6), 120.0, "piano"))
    np.testing.assert_allclose(ct.audio.pcm, co.audio.pcm, atol=1e-4)
    c4, _ = onx.generate_chunk(onx.init_state(2), Conditions(Emotion(0.7, 0.6), 120.0, "piano"))
    assert np.abs(c4.audio.pcm - co.audio.pcm).max() > 1e-3
    gen.codec.cfg = TINY_SPECTRAL
    # the decoder bound is in the graph: the manifest records it, and a codec with another is refused
    from moodlane.engine.audio.codec import ceiling_record
    from moodlane.engine.audio.onnx_runtime import OnnxExportError

    assert m["source"]["codec_bound_sha256"] is None
    with pytest.raises(OnnxExportError, match="another decoder bound .logmag_ceiling none, the codec's eeeeeeeeeeee"):
        load_onnx_lara(tmp_path, GREEDY, text_encoder=FakeText(), codec_bound="e" * 64)
    record = ceiling_record([-3.0] * TINY_SPECTRAL_BINS)
    gen.codec.model.ceiling.fill_(-3.0)
    gen.codec.meta["logmag_ceiling"] = record
    m = export_lara(gen, tmp_path / "bounded")
    assert m["source"]["codec_bound_sha256"] == record["sha256"] and m["parity"]["codec_decoder_max_abs"] <= 1e-4
    sess = ort.InferenceSession(str(tmp_path / "bounded" / "codec_decoder.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(["logmag"], {"codes": torch.randint(0, 64, (1, 2, 30)).numpy()})[0].max() <= -3.0
    load_onnx_lara(tmp_path / "bounded", GREEDY, text_encoder=FakeText(), codec_bound=record["sha256"])
    with pytest.raises(OnnxExportError, match="another decoder bound"):
        load_onnx_lara(tmp_path / "bounded", GREEDY, text_encoder=FakeText(), codec_bound="")
    gen.meta["codec"]["sha256"] = "d" * 64  # an LM trained on another codec is never exported beside this one
    from moodlane.export.onnx import ExportError

    with pytest.raises(ExportError, match="trained with codec dddddddddddd"):
        export_lara(gen, tmp_path / "again")
