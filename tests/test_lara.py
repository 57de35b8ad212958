"""LARA-Gen: the LM (MusicGen parity, KV cache, time-varying AV memory), text encoder,
generator, training loop, and the evaluation on tiny configs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from moodlane.engine.audio.checkpoint import LMCheckpointError, check_pair, codec_signature, load_lm, save_lm
from moodlane.engine.audio.codec import TINY, Codec, build_model
from moodlane.engine.audio.generator import AudioSampling, LaraGenerator
from moodlane.engine.audio.lm import IGNORE, TINY_LM, KVCache, LaraLM, delay, lara_loss, undelay
from moodlane.engine.automation import EmotionCurve
from moodlane.engine.chunk import Conditions
from moodlane.engine.emotion import Emotion
from moodlane.engine.session import join, render_chunks

CODEC = dataclasses.replace(TINY, ratios=(8, 5, 4), bandwidths=(0.6, 1.2))  # 50 frames/s: few LM steps per second of audio
CFG = dataclasses.replace(TINY_LM, n_q=CODEC.lm_codebooks, card=CODEC.bins, frame_rate=CODEC.frame_rate)


class FakeText:
    """Deterministic text states: a hash of the text (no model files needed)."""

    dim = CFG.text_dim

    def __call__(self, texts):
        out = torch.stack([torch.randn(3, self.dim, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts])
        return out, torch.ones(len(texts), 3, dtype=torch.bool)


def tiny_codec() -> Codec:
    """A random tiny codec whose output depends on its codes (unit-gain convolutions, random codebooks)."""
    from moodlane.engine.training.codec import init_weights

    torch.manual_seed(0)
    model = build_model(CODEC)
    init_weights(model)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(".embed"):
                buf.normal_()
    return Codec(CODEC, model.eval(), {"weights_sha256": "b" * 64})


def tiny_generator(seed=0, sampling=AudioSampling()) -> LaraGenerator:
    codec = tiny_codec()
    torch.manual_seed(seed)
    return LaraGenerator(LaraLM(CFG), codec, FakeText(), sampling)


def tiny_musicgen(tmp_path):
    tr = pytest.importorskip("transformers", reason="transformers (the dev extra) builds the reference MusicGen")
    dec = tr.MusicgenDecoderConfig(
        vocab_size=64, max_position_embeddings=128, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2, hidden_size=32,
        num_codebooks=4, dropout=0.0, pad_token_id=64, bos_token_id=64,
    )  # fmt: skip
    t5 = tr.T5Config(vocab_size=100, d_model=24, d_ff=32, num_layers=1, num_heads=2, d_kv=12)
    enc = tr.EncodecConfig(
        target_bandwidths=[10.0], num_filters=4, codebook_size=64, codebook_dim=16, hidden_size=16, upsampling_ratios=[8, 4],
        sampling_rate=8000, audio_channels=1, num_lstm_layers=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = tr.MusicgenForConditionalGeneration(tr.MusicgenConfig(text_encoder=t5, audio_encoder=enc, decoder=dec)).eval()
    model.save_pretrained(tmp_path)
    return model


def test_musicgen_weights_load_and_logits_match_transformers(tmp_path):
    from moodlane.engine.audio.musicgen import load_decoder, load_hf_codec

    ref = tiny_musicgen(tmp_path)
    lm, _ = load_decoder(tmp_path)
    codes = torch.randint(0, 64, (2, 4, 10), generator=torch.Generator().manual_seed(1))
    inputs, _ = delay(codes, lm.special)
    text = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        theirs = ref(input_ids=text, attention_mask=mask, decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
        states = ref.text_encoder(input_ids=text, attention_mask=mask).last_hidden_state
        mem = lm.memory(states, mask.bool())
        mine, _ = lm(inputs, mem)
        # and step by step through the KV cache
        cache = KVCache(lm.cfg, 2, inputs.shape[-1])
        steps = torch.cat([lm(inputs[:, :, i : i + 1], mem, cache)[0] for i in range(inputs.shape[-1])], dim=2)
    theirs = theirs.reshape(2, 4, -1, 64)
    assert (mine - theirs).abs().max().item() < 1e-4
    assert (steps - theirs).abs().max().item() < 1e-4
    codec = load_hf_codec(tmp_path)  # the folder's EnCodec behind MoodLane's codec interface
    assert codec.decode(codes[0]).shape == (1, 10 * codec.hop)
    check_pair(lm.cfg, codec, str(tmp_path))


def test_musicgen_folder_with_missing_files_is_one_clear_error(tmp_path, capsys):
    from moodlane.daw_bridge.cli import main
    from moodlane.engine.audio.musicgen import MusicGenFolderError, load_decoder

    tiny_musicgen(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(MusicGenFolderError, match="model.safetensors"):
        load_decoder(tmp_path)
    out = tmp_path / "x.wav"
    capsys.readouterr()  # transformers' own progress output
    assert main(["render", "--engine", "audio", "--lm-checkpoint", str(tmp_path), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors" in err[0]
    assert not out.exists()


def test_minilm_matches_transformers():
    tr = pytest.importorskip("transformers", reason="transformers is the reference BERT")
    from moodlane.engine.audio.text import MiniLM, minilm_folder

    mine = MiniLM()
    texts = ["solo acoustic piano, slow", "strings"]
    x, mask = mine(texts)
    tok = tr.AutoTokenizer.from_pretrained(str(minilm_folder()))
    ref = tr.AutoModel.from_pretrained(str(minilm_folder())).eval()
    with torch.no_grad():
        y = ref(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state
    assert x.shape == y.shape
    assert (x - y).abs().masked_fill(~mask[..., None], 0).max().item() < 1e-4


def test_delay_pattern_round_trips():
    codes = torch.arange(2 * 3 * 5).view(2, 3, 5)
    inputs, targets = delay(codes, 99)
    assert inputs.shape == targets.shape == (2, 3, 7)
    assert (inputs[:, :, 0] == 99).all()  # every codebook starts from the special token
    assert targets[0, 2, 1].item() == IGNORE  # codebook 2 runs two steps late
    assert torch.equal(undelay(targets.masked_fill(targets == IGNORE, 99)), codes)
    assert torch.equal(inputs[:, :, 1:], targets[:, :, :-1].masked_fill(targets[:, :, :-1] == IGNORE, 99))


def test_av_memory_moves_in_time_and_changes_the_output():
    torch.manual_seed(0)
    lm = LaraLM(CFG).eval()
    with torch.no_grad():
        lm.av.mlp[-1].weight.mul_(100.0)  # a trained encoder's tokens are far from zero
    text, mask = FakeText()(["x"])
    inputs, _ = delay(torch.randint(0, CFG.card, (1, CFG.n_q, 12)), lm.special)
    s = inputs.shape[-1]
    va = torch.zeros(1, s, 2)
    va[:, s // 2 :] = torch.tensor([0.9, 0.9])
    with torch.no_grad():
        moving, _ = lm(inputs, lm.memory(text, mask, va))
        fixed, _ = lm(inputs, lm.memory(text, mask, torch.zeros(1, 1, 2)))
        dropped, _ = lm(inputs, lm.memory(text, mask, va, torch.tensor([False])))
        none, _ = lm(inputs, lm.memory(text, mask, None))
    assert torch.allclose(moving[:, :, : s // 2], fixed[:, :, : s // 2], atol=1e-5)  # the past does not see the future's AV
    assert (moving[:, :, s // 2 :] - fixed[:, :, s // 2 :]).abs().max() > 1e-4  # 10x the past's bound: it sees the AV
    assert torch.allclose(dropped, none, atol=1e-5)  # dropped AV tokens are invisible


def test_lara_loss_is_minus_cosine():
    proxy = torch.nn.Identity()
    h = torch.randn(2, 5, 4)
    valid = torch.ones(2, 5)
    assert lara_loss(proxy, h, 3 * h, valid).item() == pytest.approx(-1.0, abs=1e-5)
    assert lara_loss(proxy, h, -h, valid).item() == pytest.approx(1.0, abs=1e-5)


def test_generator_is_seeded_continues_and_follows_the_curve():
    gen = tiny_generator()
    curve = EmotionCurve.from_points([(0.0, Emotion(-0.8, -0.8)), (12.0, Emotion(0.8, 0.8))])
    chunks, qpm = render_chunks(gen, curve, 12.0, seed=3, qpm=480.0, prompt="solo piano")
    piece = join(chunks, qpm)
    assert piece.sample_rate == CODEC.sample_rate
    assert piece.pcm.shape[0] == 3 * CODEC.sample_rate // 2 + gen.tail  # three bars of 0.5 s, and the last tail
    assert chunks[0].emotion != chunks[-1].emotion  # the AV memory changed between chunks
    assert all(c.audio.tail == gen.tail for c in chunks)
    again, _ = render_chunks(tiny_generator(), curve, 12.0, seed=3, qpm=480.0, prompt="solo piano")
    np.testing.assert_array_equal(join(again, qpm).pcm, piece.pcm)  # same seed, same audio
    other, _ = render_chunks(tiny_generator(), curve, 12.0, seed=4, qpm=480.0, prompt="solo piano")
    assert not np.array_equal(join(other, qpm).pcm, piece.pcm)


def test_state_clone_continues_bit_identically_past_a_cache_refill():
    gen = tiny_generator()
    state = gen.init_state(5)
    cond = Conditions(Emotion(0.2, 0.4), 120.0, "organ")
    for _ in range(2):  # 2 s chunks at 50 frames/s overflow the 48-step window: refills happen
        _, state = gen.generate_chunk(state, cond)
    snap = state.clone()
    a, _ = gen.generate_chunk(state, cond)
    b, _ = gen.generate_chunk(snap, cond)
    np.testing.assert_array_equal(a.audio.pcm, b.audio.pcm)
    assert state.tokens.shape[1] < state.steps  # old tokens are trimmed


@pytest.mark.parametrize("rows,cfg,av_cfg", [(1, 1.0, 0.0), (2, 3.0, 0.0), (3, 3.0, 2.0)])
def test_guidance_rows(rows, cfg, av_cfg):
    gen = tiny_generator(sampling=AudioSampling(cfg=cfg, av_cfg=av_cfg, top_k=5))
    chunk, state = gen.generate_chunk(gen.init_state(0), Conditions(Emotion(0.5, -0.5), 240.0, "harp"))
    assert state.cache.k[0].shape[0] == rows
    assert np.isfinite(chunk.audio.pcm).all()


def test_sampling_values_are_checked():
    for bad in ({"cfg": float("nan")}, {"top_k": 0}, {"temperature": 0.0}, {"av_cfg": -1.0}):
        with pytest.raises(ValueError):
            AudioSampling(**bad)


def test_checkpoint_roundtrip_and_bad_checkpoints(tmp_path):
    gen = tiny_generator()
    save_lm(tmp_path / "lm", gen.model, {"codec": codec_signature(gen.codec), "emotion": "av"})
    model, meta = load_lm(tmp_path / "lm")
    assert meta["codec"]["n_q"] == CODEC.lm_codebooks
    for (k, v), (_, w) in zip(gen.model.state_dict().items(), model.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-3), k  # fp16 on disk
    (tmp_path / "lm.safetensors").write_bytes(b"junk")
    with pytest.raises(LMCheckpointError, match="checksum"):
        load_lm(tmp_path / "lm")
    with pytest.raises(LMCheckpointError, match="does not exist"):
        load_lm(tmp_path / "nope")
    narrow = dataclasses.replace(CODEC, lm_codebooks=1)
    wide = Codec(narrow, build_model(narrow))
    with pytest.raises(LMCheckpointError, match="codec"):
        check_pair(CFG, wide, "lm")


def fake_encoded(root, clips=6, seconds=2.0, codec_sha="b" * 64):
    """A manifest and encoded tokens for the tiny codec: half labelled, one a VGMIDI-style curve."""
    from moodlane.engine.training.audio_data import PROGRAMS

    rng = np.random.default_rng(0)
    fr = CODEC.frame_rate
    recs = []
    for i in range(clips):
        split = "valid" if i % 3 == 2 else "train"
        labels = None
        if i % 2 == 0:
            labels = {"kind": "quadrant", "quadrant": 1, "valence": 0.6, "arousal": 0.6, "coarse": True}
        if i == 4:
            labels = {"kind": "curve", "points": [[0.0, -0.5, -0.5], [1.0, 0.5, 0.5]], "per": "bar"}
        inst = PROGRAMS[i % 2][1]
        recs.append(
            {
                "id": f"set/c{i}",
                "path": f"audio/set/c{i}.wav",
                "sample_rate": CODEC.sample_rate,
                "duration": seconds,
                "split": split,
                "labels": labels,
                "text": f"solo {inst}, slow, low register, sparse",
                "instrument": inst,
            }
        )
        (root / "audio" / "set").mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * CODEC.sample_rate)) / CODEC.sample_rate
        sf.write(root / "audio" / "set" / f"c{i}.wav", 0.2 * np.sin(2 * np.pi * (110 + 30 * i) * t), CODEC.sample_rate)
        n = int(seconds * fr)
        times = np.arange(0.25, seconds, 0.5)
        d = {
            "codes": rng.integers(0, CODEC.bins, (CODEC.lm_codebooks, n)).astype(np.uint16),
            "frame_rate": np.array(fr),
            "feature_times": times.astype(np.float32),
            "features": rng.normal(size=(len(times), 200)).astype(np.float16),
            "codec_sha256": np.array(codec_sha),
            "codec_name": np.array(CODEC.name),
        }
        (root / "encoded" / "set").mkdir(parents=True, exist_ok=True)
        np.savez(root / "encoded" / "set" / f"c{i}.npz", **d)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_train_resumes_and_exports_a_loadable_lm(tmp_path):
    from moodlane.engine.training.lara import LaraTrainConfig, TextBank, TokenSet, make_batch, train_lara

    fake_encoded(tmp_path)
    sig = codec_signature(tiny_codec())
    cfg = dataclasses.replace(CFG, feature_dim=200)
    tc = LaraTrainConfig(steps=2, batch_size=2, valid_crops=4, save_every=1, warmup=1)
    rec = train_lara(tmp_path, tmp_path / "run", tmp_path / "lm", sig, tc, cfg, text_encoder=FakeText(), progress=False)
    assert rec["steps"] == 2 and "labelled" in rec["data"]
    rec = train_lara(
        tmp_path,
        tmp_path / "run",
        tmp_path / "lm",
        sig,
        dataclasses.replace(tc, steps=3),
        cfg,
        text_encoder=FakeText(),
        resume=True,
        progress=False,
    )
    model, meta = load_lm(tmp_path / "lm")
    assert meta["training"]["steps"] == 3 and len(meta["history"]) == 3
    assert np.isfinite(meta["history"][-1]["valid_ce"])
    # batches: per-step VA from the curve, AV off for unlabelled clips, text words only in the baseline
    data = TokenSet(tmp_path, "train", cfg.n_q, cfg.context)
    b = make_batch(data, TextBank(FakeText()), cfg, dataclasses.replace(tc, p_av_drop=0.0, p_text_drop=0.0), np.random.default_rng(0), 16)
    assert b.inputs.shape == (16, cfg.n_q, cfg.context) and b.features.shape == (16, cfg.context, 200)
    assert not b.av_on.all() and b.av_on.any()
    base = make_batch(data, TextBank(FakeText()), cfg, dataclasses.replace(tc, emotion="text"), np.random.default_rng(0), 4)
    assert not base.av_on.any()


def test_valence_contrast_is_the_hinge_on_the_flipped_valence_gap_and_trains_it(tmp_path):
    """`losses(..., margin)`: the gap is each labelled crop's cross-entropy with its valence
    negated minus the true one's, crops with the AV dropped or no valence are left out, the
    contrast is relu(margin x |valence| - gap); a few steps on it alone widen the gap, while
    the plain cross-entropy path leaves the contrast at zero."""
    from moodlane.engine.audio.lm import ce_per_crop
    from moodlane.engine.training.lara import LaraTrainConfig, TextBank, TokenSet, losses, make_batch

    fake_encoded(tmp_path, clips=9)
    cfg = dataclasses.replace(CFG, feature_dim=200)
    tc = LaraTrainConfig(p_av_drop=0.0, p_text_drop=0.0)
    data = TokenSet(tmp_path, "train", cfg.n_q, cfg.context)
    b = make_batch(data, TextBank(FakeText()), cfg, tc, np.random.default_rng(1), 12)
    b.av_on[0] = False  # a dropped emotion is never contrasted
    b.va[1] = torch.tensor([0.0, 0.7])  # nor a crop without valence
    assert b.heard[b.av_on].all()  # listeners' labels (the fake set has no pseudo-labels)
    b.heard[2] = False  # nor a crop labelled only by the symbolic judge (a pseudo-label)
    torch.manual_seed(0)
    model = LaraLM(cfg)
    plain = losses(model, b, cfg.lara_layer)
    assert plain.contrast.item() == 0.0 and torch.isnan(plain.gap)
    r = losses(model, b, cfg.lara_layer, margin=0.5)
    assert torch.allclose(r.ce, plain.ce) and torch.allclose(r.lara, plain.lara)
    sel = b.av_on & b.heard & (b.va[..., 0].abs().mean(1) > 0.05)
    assert not sel[0] and not sel[1] and not sel[2] and sel.sum() >= 3
    with torch.no_grad():
        true = ce_per_crop(model(b.inputs, model.memory(b.text, b.text_mask, b.va, b.av_on))[0], b.targets)[sel]
        flipped_va = b.va[sel] * torch.tensor([-1.0, 1.0])
        flip = ce_per_crop(model(b.inputs[sel], model.memory(b.text[sel], b.text_mask[sel], flipped_va, b.av_on[sel]))[0], b.targets[sel])
    gap = flip - true
    assert torch.allclose(r.gap, gap.mean(), atol=1e-6)
    assert torch.allclose(r.contrast, torch.relu(0.5 * b.va[sel][..., 0].abs().mean(1) - gap).mean(), atol=1e-6)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss = losses(model, b, cfg.lara_layer, margin=0.5).contrast
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = losses(model, b, cfg.lara_layer, margin=0.5)
    assert after.gap.item() > r.gap.item() + 0.05 and after.contrast.item() < r.contrast.item()
    with pytest.raises(ValueError, match="valence_contrast must be >= 0"):
        LaraTrainConfig(valence_contrast=-1.0)


def test_instrument_weights_draw_more_crops_of_that_instrument(tmp_path):
    """Weighting an instrument multiplies its share of crops per hour; an unknown name is one
    line naming the instruments there are; the valid split is not weighted by training."""
    from moodlane.engine.training.audio_data import PROGRAMS
    from moodlane.engine.training.data import DataError
    from moodlane.engine.training.lara import TokenSet

    fake_encoded(tmp_path, clips=9)
    first = PROGRAMS[0][1]
    plain = TokenSet(tmp_path, "train", 1, 5)
    heavy = TokenSet(tmp_path, "train", 1, 5, ((first, 3.0),))

    def share(ts):
        return sum(p for c, p in zip(ts.clips, ts.p) if c.rec["instrument"] == first)

    a = share(plain)
    assert 0 < a < 1 and np.isclose(share(heavy), 3 * a / (3 * a + (1 - a)))
    rng = np.random.default_rng(0)
    drawn = [heavy.crop(rng, 5, 5)[3].startswith(f"solo {first}") for _ in range(2000)]
    assert abs(np.mean(drawn) - share(heavy)) < 0.04
    assert heavy.hours == plain.hours
    with pytest.raises(DataError, match=r"no train clips of instrument \['kazoo'\]; the clips have"):
        TokenSet(tmp_path, "train", 1, 5, (("kazoo", 2.0),))


def test_pseudo_labels_stand_in_for_missing_labels_only_when_asked(tmp_path):
    """`--pseudo-labels`: an unlabelled clip's crops carry its pseudo-label curve instead of
    NaN (emotion dropped); labelled clips keep theirs; asking with none there is one line."""
    from moodlane.engine.training.audio_data import read_manifest, write_manifest
    from moodlane.engine.training.data import DataError
    from moodlane.engine.training.lara import TokenSet

    fake_encoded(tmp_path, clips=9)
    with pytest.raises(DataError, match="no train clip has pseudo_labels: run `moodlane data pseudo-label"):
        TokenSet(tmp_path, "train", 1, 5, pseudo=True)
    recs = read_manifest(tmp_path)
    for r in recs:
        if not r["labels"]:
            r["pseudo_labels"] = {"kind": "curve", "points": [[0.0, -0.7, 0.2]], "per": "bar", "source": "symbolic judge"}
    write_manifest(tmp_path, recs)
    plain, pseudo = TokenSet(tmp_path, "train", 1, 5), TokenSet(tmp_path, "train", 1, 5, pseudo=True)
    unlabelled = sum(1 for c in plain.clips if not c.rec["labels"])
    assert unlabelled > 0 and plain.pseudo_labelled == 0 and pseudo.pseudo_labelled == unlabelled
    rng = np.random.default_rng(0)
    va_plain = np.stack([plain.crop(rng, 5, 5)[1] for _ in range(200)])
    va_pseudo = np.stack([pseudo.crop(rng, 5, 5)[1] for _ in range(200)])
    assert np.isnan(va_plain).any() and not np.isnan(va_pseudo).any()
    assert np.isclose(va_pseudo, [-0.7, 0.2]).all(-1).any(axis=1).any()  # some crops carry the pseudo curve


def test_pseudo_stretch_spreads_the_pseudo_labels_about_their_mean(tmp_path):
    """`--pseudo-stretch K`: each pseudo-labelled bar moves K times as far from the split's mean
    bar, clipped to [-1, 1]; real labels and the manifest on disk are untouched."""
    from moodlane.engine.training.audio_data import read_manifest, write_manifest
    from moodlane.engine.training.lara import TokenSet

    fake_encoded(tmp_path, clips=9)
    recs = read_manifest(tmp_path)
    for i, r in enumerate(r for r in recs if not r["labels"] and r["split"] == "train"):
        v = (0.1, 0.3)[i % 2]
        r["pseudo_labels"] = {"kind": "curve", "points": [[0.0, v, 0.0], [0.05, v, 0.9]], "per": "bar"}
    write_manifest(tmp_path, recs)
    plain, wide = TokenSet(tmp_path, "train", 1, 5, pseudo=True), TokenSet(tmp_path, "train", 1, 5, pseudo=True, stretch=2.0)
    before = {c.rec["id"]: np.asarray(c.rec["pseudo_labels"]["points"])[:, 1:] for c in plain.clips if not c.rec["labels"]}
    after = {c.rec["id"]: np.asarray(c.rec["pseudo_labels"]["points"])[:, 1:] for c in wide.clips if not c.rec["labels"]}
    assert len({float(p[0, 0]) for p in before.values()}) == 2  # both valences are among the train clips
    mean = np.concatenate(list(before.values())).mean(0)
    for cid, pts in before.items():
        assert np.allclose(after[cid], np.clip(mean + 2 * (pts - mean), -1, 1))
    assert max(float(p[:, 1].max()) for p in after.values()) == 1.0  # 0.45 + 2 x 0.45 is clipped
    assert np.std(np.concatenate(list(after.values()))[:, 0]) > 1.9 * np.std(np.concatenate(list(before.values()))[:, 0])
    labelled = {c.rec["id"]: c.rec["labels"] for c in plain.clips if c.rec["labels"]}
    assert labelled == {c.rec["id"]: c.rec["labels"] for c in wide.clips if c.rec["labels"]}
    assert read_manifest(tmp_path) == recs  # the records on disk stay as the judge read them


def test_twin_stretch_moves_a_mode_twin_further_from_its_original(tmp_path):
    """`--twin-stretch K`: a mode twin's label moves K times the judged change from its
    original's label, bar by bar, clipped; a twin whose original is in another split keeps
    its label; real labels and the manifest on disk are untouched; without pseudo-labels it
    is refused."""
    from moodlane.engine.training.audio_data import read_manifest, write_manifest
    from moodlane.engine.training.lara import LaraTrainConfig, TokenSet

    fake_encoded(tmp_path, clips=9)
    recs = read_manifest(tmp_path)
    by_id = {r["id"]: r for r in recs}
    assert by_id["set/c0"]["labels"]["valence"] == 0.6 and by_id["set/c2"]["split"] == "valid"
    # c1 (train) is c0's twin (train, Q1 at +0.6/+0.6); c3 (train) is the twin of c2 (valid)
    by_id["set/c1"].update(twin_of="set/c0", pseudo_labels={"kind": "curve", "points": [[0.0, 0.4, 0.6], [0.05, 0.5, 0.62]], "per": "bar"})
    by_id["set/c3"].update(twin_of="set/c2", pseudo_labels={"kind": "curve", "points": [[0.0, 0.3, 0.6]], "per": "bar"})
    by_id["set/c7"].update(pseudo_labels={"kind": "curve", "points": [[0.0, 0.1, -0.2]], "per": "bar"})  # judge only
    write_manifest(tmp_path, recs)
    plain = TokenSet(tmp_path, "train", 1, 5, pseudo=True)
    wide = TokenSet(tmp_path, "train", 1, 5, pseudo=True, twin_stretch=3.0)
    got = {c.rec["id"]: np.asarray(c.rec["pseudo_labels"]["points"]) for c in wide.clips if c.rec.get("pseudo_labels")}
    assert np.allclose(got["set/c1"], [[0.0, 0.0, 0.6], [0.05, 0.3, 0.66]])  # 0.6 + 3 x (-0.2), 0.6 + 3 x (0.02)
    assert np.allclose(got["set/c3"], [[0.0, 0.3, 0.6]])  # its original is held out
    far = TokenSet(tmp_path, "train", 1, 5, pseudo=True, twin_stretch=10.0)
    assert np.asarray(next(c for c in far.clips if c.rec["id"] == "set/c1").rec["pseudo_labels"]["points"])[0, 1] == -1.0
    assert {c.rec["id"]: c.rec["labels"] for c in plain.clips} == {c.rec["id"]: c.rec["labels"] for c in wide.clips}
    rng = np.random.default_rng(0)
    crops = [wide.crop(rng, 5, 5) for _ in range(400)]
    assert any(np.isclose(va[0], [0.0, 0.6]).all() for _, va, _, _, _ in crops)  # training sees the moved label
    # heard: listeners' labels and twins, not the judge's reading of an unlabelled clip
    judged = [c.heard for c in crops if np.isclose(c.va[0], [0.1, -0.2]).all()]
    assert judged and not any(judged)
    assert all(c.heard for c in crops if not np.isnan(c.va[0]).any() and not np.isclose(c.va[0], [0.1, -0.2]).all())
    assert read_manifest(tmp_path) == recs
    with pytest.raises(ValueError, match="set pseudo_labels too"):
        LaraTrainConfig(twin_stretch=2.0)
    with pytest.raises(ValueError, match="twin_stretch must be > 0"):
        LaraTrainConfig(twin_stretch=0.0, pseudo_labels=True)


def test_train_with_another_config_will_not_resume(tmp_path):
    from moodlane.engine.training.lara import LaraTrainConfig, train_lara

    fake_encoded(tmp_path)
    sig = codec_signature(tiny_codec())
    cfg = dataclasses.replace(CFG, feature_dim=200)
    tc = LaraTrainConfig(steps=1, batch_size=2, valid_crops=2, save_every=1, warmup=1)
    train_lara(tmp_path, tmp_path / "run", tmp_path / "lm", sig, tc, cfg, text_encoder=FakeText(), progress=False)
    with pytest.raises(ValueError, match="another model config"):
        train_lara(
            tmp_path,
            tmp_path / "run",
            tmp_path / "lm",
            sig,
            tc,
            dataclasses.replace(cfg, dim=16),
            text_encoder=FakeText(),
            resume=True,
            progress=False,
        )


def test_eval_audio_reports_grid_ramp_prompts_and_frechet(tmp_path):
    from moodlane.engine.audio.predictor import load_predictor
    from moodlane.engine.training.lara_eval import eval_audio
    from moodlane.engine.training.stats import frechet

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    assert frechet(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet(a, b + 2.0) > frechet(a, b) + 10.0  # a shifted mean is far
    fake_encoded(tmp_path, clips=6, seconds=4.0)
    gens = [("a", tiny_generator(0)), ("b", tiny_generator(1))]
    res = eval_audio(
        gens,
        load_predictor(),
        tmp_path,
        tmp_path / "out",
        grid=2,
        seconds=4.0,
        ramp_seconds=6.0,
        real_clips=4,
        symbolic=False,
        progress=False,
        paired=False,
    )
    assert set(res["models"]) == {"a", "b"}
    m = res["models"]["a"]
    assert m["grid"]["points"] == 4 and set(m["grid"]["arousal"]) == {"pearson", "spearman"}
    assert len(m["ramp"]["windows"]) >= 2 and "arousal_spearman" in m["ramp"]
    assert set(m["prompts"]["clips"]) and 0 <= m["prompts"]["accuracy"] <= 1
    assert np.isfinite(m["fd_to_held_out"]) and np.isfinite(m["fd_codec_ceiling"])  # the ceiling: each LM's own codec
    assert (tmp_path / "out" / "results.json").is_file() and (tmp_path / "out" / "ramp.png").is_file()
    assert (tmp_path / "out" / "grid_b.png").is_file()
    assert m["grid"]["seeds_per_point"] == 1 and "one sample per point" in m["grid"]["note"]
    assert len(m["grid"]["arousal_spearman_ci95"]) == 2 and "paired_seed" not in m
    assert res["real_reference"]["clips"] <= 4 and set(m["level"]["generated"]) == {"too_loud", "runaway", "silent", "median_rms"}
    assert m["sampling"]["av_cfg"] == 0.0
    w = m["witness"]  # the fake set's held-out piano clip; aiSFX and Basic Pitch only with the [eval] set-up
    assert w["renders"] >= 1 and all(isinstance(w[k], dict) or w[k].startswith("skipped: ") for k in ("sfx_fd", "transcription"))
    res = eval_audio(gens[:1], load_predictor(), tmp_path, tmp_path / "out2", grid=2, seconds=3.0, ramp_seconds=4.0, real_clips=4,
                     symbolic=False, progress=False, seeds=2, witnesses=False, ramp_seeds=2)  # fmt: skip
    m = res["models"]["a"]
    assert m["grid"]["seeds_per_point"] == 2 and "note" not in m["grid"] and "witness" not in m
    assert m["ramp"]["seeds"] == 2 and len(m["ramp"]["arousal_spearman_per_seed"]) == 2
    assert m["paired_seed"]["clips"] == 8 and {"valence_vs_flipped", "arousal_vs_dropped"} <= set(m["paired_seed"])


class LoudnessPredictor:
    """Hears arousal as loudness (what the mock audio engine does with arousal), valence as 0."""

    def window_features(self, pcm, sr):
        return pcm, None

    def predict_features(self, f, x):
        import types

        return types.SimpleNamespace(mean=(0.0, float(np.sqrt(np.mean(f**2))) * 10 - 1))


def test_paired_seed_sees_an_emotion_that_is_used_and_one_that_is_not():
    """The mock engine plays louder with arousal and ignores `av_dropped`: flipping arousal
    moves the predicted arousal with an interval above 0; dropping it changes nothing (0)."""
    from moodlane.engine.mock import MockAudioGenerator
    from moodlane.engine.training.lara_eval import paired_seed, predict_mean, render_pcm

    gen = MockAudioGenerator(sample_rate=8000)
    gen.meta = {}
    axis = np.linspace(-0.8, 0.8, 3)
    rows = []
    for i, (v, a) in enumerate((v, a) for v in axis for a in axis):
        pcm = render_pcm(gen, EmotionCurve.constant(Emotion(v, a)), 2.0, i, "x")
        rows.append((v, a, *predict_mean(LoudnessPredictor(), pcm, 8000), i, 0))
    res = paired_seed(gen, LoudnessPredictor(), np.array(rows), 2.0, progress=False)
    up = res["arousal_vs_flipped"]
    assert up["mean"] > 0.1 and up["ci95"][0] > 0, up
    assert res["arousal_vs_dropped"]["mean"] == 0.0 and res["arousal_vs_dropped"]["ci95"] == [0.0, 0.0]
    assert res["valence_vs_flipped"]["mean"] == 0.0  # this predictor hears no valence


def _ddp_rank(rank, root, port):
    import os

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from moodlane.engine.training.lara import LaraTrainConfig, train_lara

    torch.set_num_threads(1)
    cfg = dataclasses.replace(CFG, feature_dim=200)
    tc = LaraTrainConfig(steps=2, batch_size=2, valid_crops=2, save_every=2, warmup=1, valence_contrast=1.0)
    train_lara(root, root / f"run{rank}", root / "lm", codec_signature(tiny_codec()), tc, cfg, text_encoder=FakeText(), progress=False)
    torch.distributed.destroy_process_group()


def test_data_parallel_training_on_two_cpu_ranks(tmp_path):
    """torchrun's environment, gloo on the CPU: two ranks, their gradients averaged, rank 0 writes."""
    import socket

    import torch.multiprocessing as mp

    fake_encoded(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(tmp_path, port), nprocs=2, join=True)
    assert (tmp_path / "lm.safetensors").is_file() and not (tmp_path / "run1" / "train_state.pt").exists()
    meta = json.loads((tmp_path / "lm.json").read_text())
    assert meta["training"]["device"] == "cpu x 2" and meta["training"]["steps"] == 2
    assert meta["training"]["train_config"]["valence_contrast"] == 1.0 and "train_contrast" in meta["history"][-1]
    assert "valid_valence_gap" in meta["history"][-1]  # None or a number: the fake valid split may hold no labelled crop


def test_tokens_and_lms_are_tied_to_their_codec(tmp_path):
    """Tokens of one codec never train an LM for another, and an LM refuses a codec it was
    not trained with; both errors name both codecs."""
    from moodlane.engine.audio.checkpoint import check_lm_codec, lm_codec
    from moodlane.engine.audio.codec import LEGACY_CODEC, CodecError
    from moodlane.engine.training.lara import LaraTrainConfig, train_lara

    fake_encoded(tmp_path, codec_sha="e" * 64)
    sig = codec_signature(tiny_codec())  # codec bbbb...: not the one that made the tokens
    tc = LaraTrainConfig(steps=1, batch_size=2, valid_crops=2, save_every=1, warmup=1)
    cfg = dataclasses.replace(CFG, feature_dim=200)
    with pytest.raises(CodecError, match=r"made with codec moodlane-codec \(eeeeeeeeeeee\).*moodlane-codec \(bbbbbbbbbbbb\)"):
        train_lara(tmp_path, tmp_path / "run", tmp_path / "lm", sig, tc, cfg, text_encoder=FakeText(), progress=False)
    f = tmp_path / "encoded" / "set" / "c0.npz"
    np.savez(f, **{**dict(np.load(f)), "codec_sha256": np.array("b" * 64)})  # one clip of codec b beside codec e's
    with pytest.raises(ValueError, match="mixes the tokens of several codecs"):
        train_lara(tmp_path, tmp_path / "run", tmp_path / "lm", sig, tc, cfg, text_encoder=FakeText(), progress=False)
    # an LM records its codec; another codec of the same shapes is refused by name
    meta = {"codec": sig}
    check_lm_codec(CFG, meta, tiny_codec(), "lm")
    other = tiny_codec()
    other.meta = {"weights_sha256": "f" * 64}
    with pytest.raises(LMCheckpointError, match=r"lm was made with codec moodlane-codec \(bbbbbbbbbbbb\).*\(ffffffffffff\)"):
        check_lm_codec(CFG, meta, other, "lm")
    # LMs from before codecs were recorded by file ran on the first shipped codec
    assert lm_codec({"codec": {"name": "moodlane-codec"}}) == LEGACY_CODEC
    assert lm_codec({"codec": {"file": "codec_spectral"}}).name == "codec_spectral"


def test_a_musicgen_folder_renders_without_untrained_av_tokens_and_never_on_onnx(tmp_path, monkeypatch):
    """A MusicGen folder was not trained with MoodLane's AV tokens: loaded to render, it has
    no AV encoder (fresh ones would put noise in every cross-attention layer), so its output
    does not depend on the emotion; an explicit ONNX backend is refused, not swapped."""
    from moodlane.engine.audio.checkpoint import LMCheckpointError, load_lara
    from moodlane.engine.audio.musicgen import load_decoder

    tiny_musicgen(tmp_path)
    monkeypatch.setattr("moodlane.engine.audio.checkpoint.load_text_encoder", lambda kind, folder=None: None)
    seen = {}

    def spy(folder, **kw):
        seen.update(kw)
        return load_decoder(folder, **kw)

    monkeypatch.setattr("moodlane.engine.audio.musicgen.load_decoder", spy)
    gen = load_lara(tmp_path, backend="torch")
    assert seen == {"av_tokens": 0} and gen.model.av is None and gen.model.cfg.av_tokens == 0
    states, mask = torch.randn(1, 5, 24), torch.ones(1, 5, dtype=torch.bool)
    a = gen.model.memory(states, mask, torch.tensor([[[0.8, 0.8]]]))
    b = gen.model.memory(states, mask, torch.tensor([[[-0.8, -0.8]]]))
    assert a.av_add is None and b.av_add is None
    with pytest.raises(LMCheckpointError, match="--backend onnx.*--backend torch"):
        load_lara(tmp_path, backend="onnx")


def test_av_encoder_is_smooth_and_the_first_lms_config_still_loads():
    """Neighbouring emotions get neighbouring tokens: at (0.8, 0.8) the token is closer to
    (0.6, 0.6) than to the other quadrant's (-0.6, 0.6), for every random initialisation
    tried. The first LM's encoder (8 octaves up to 64 pi) was not: it is kept, bit for bit,
    for configs written before `av_max_freq`."""
    from moodlane.engine.audio.lm import AVEncoder, LMConfig

    def cos(enc, p, q):
        t = enc(torch.tensor([p, q]))[0].flatten(1)
        return torch.nn.functional.cosine_similarity(t[0], t[1], dim=0).item()

    smooth, rough = LMConfig(dim=64), LMConfig.from_json({**LMConfig(dim=64).to_json(), "av_freqs": 8, "av_max_freq": 64.0})
    near_s, far_s, near_r = [], [], []
    for seed in range(8):
        torch.manual_seed(seed)
        enc = AVEncoder(smooth)
        near_s.append(cos(enc, [0.8, 0.8], [0.6, 0.6]))
        far_s.append(cos(enc, [0.8, 0.8], [-0.6, 0.6]))
        torch.manual_seed(seed)
        near_r.append(cos(AVEncoder(rough), [0.8, 0.8], [0.6, 0.6]))
    # measured: near 0.88-0.96, the other quadrant 0.18-0.68; the first LM's encoder, near 0.26-0.51
    assert min(near_s) > 0.85 and max(f - n for n, f in zip(near_s, far_s)) < -0.2, (near_s, far_s)
    assert sum(near_r) / 8 < 0.6, near_r
    old = {k: v for k, v in LMConfig().to_json().items() if k != "av_max_freq"}
    old["av_freqs"] = 8
    enc = AVEncoder(LMConfig.from_json(old))
    assert torch.equal(enc.freqs, torch.pi * 2.0 ** torch.arange(8.0) / 2.0)  # the first LM's features exactly


def test_quadrant_labels_are_jittered_inside_their_quadrant_and_curves_are_kept():
    from moodlane.engine.training.lara import Clip, TokenSet

    def clip(labels):
        rec = {"labels": labels, "text": "solo piano"}
        return Clip(rec, np.zeros((4, 600), np.uint16), np.array([0.0]), np.zeros((1, 8), np.float16), 75.0)

    ts = object.__new__(TokenSet)
    ts.clips = [clip({"kind": "quadrant", "valence": -0.6, "arousal": 0.6})]
    ts.p = np.ones(1)
    ts.pseudo = False
    rng = np.random.default_rng(0)
    got = np.array([ts.crop(rng, 100, 103, jitter=0.3)[1] for _ in range(200)])  # (crops, steps, 2)
    assert np.all(got == got[:, :1])  # one offset per crop: constant over its steps
    v, a = got[:, 0, 0], got[:, 0, 1]
    assert v.max() < 0 and a.min() > 0  # never leaves the quadrant
    assert v.min() < -0.85 and v.max() > -0.35 and a.min() < 0.35 and a.max() > 0.85  # spread over its middle
    assert np.allclose(ts.crop(rng, 100, 103)[1], [-0.6, 0.6])  # no jitter: the label as it is
    ts.clips = [clip({"kind": "curve", "points": [[0.0, -0.5, 0.2], [4.0, 0.5, 0.9]]})]
    curve = ts.crop(rng, 600, 600, jitter=0.3)[1]
    assert np.allclose(curve[0], [-0.5, 0.2]) and np.allclose(curve[-1], [0.5, 0.9])  # per-bar curves untouched
    assert {tuple(r) for r in curve.astype(np.float64).round(3).tolist()} == {(-0.5, 0.2), (0.5, 0.9)}


def test_witness_reports_fd_beside_the_codec_ceiling_and_transcription_stats():
    """The independent judges with stand-ins (a spectral-centroid 'embedding', a transcriber
    that finds notes by loudness): noise is far from sine renders in that embedding, the
    ratio is against the codec's reconstructions, and statistics come back for all three sets."""
    from moodlane.engine.symbolic.judge import SymbolicJudge
    from moodlane.engine.training.lara_eval import witness
    from moodlane.engine.training.witness import Notes

    codec = tiny_codec()
    sr = codec.sample_rate
    rng = np.random.default_rng(0)
    t = np.arange(2 * sr) / sr

    def embed(pcm, rate):
        spec = np.abs(np.fft.rfft(pcm.reshape(4, -1), axis=1))
        f = np.fft.rfftfreq(pcm.size // 4, 1 / rate)
        return np.stack([(spec * f).sum(1) / spec.sum(1) / 1000, np.log(spec.sum(1))], axis=1)

    def transcribe(pcm, rate):
        n = max(1, int(np.abs(pcm).mean() * 40))
        on = np.arange(n) * 0.2
        return Notes.from_midi_pitches(on, on + 0.1, ([60, 64, 67] * n)[:n])

    renders = []
    for k in range(4):
        pcm = (0.3 * np.sin(2 * np.pi * (220 + 20 * k) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        renders.append((pcm, sr))
    noise = [(0.3 * rng.standard_normal(t.size)).astype(np.float32) for _ in range(4)]
    hiss = [((0.3 * rng.standard_normal(t.size)).astype(np.float32), sr) for _ in range(3)]
    res = witness(
        noise,
        sr,
        renders,
        codec,
        codec.cfg.lm_codebooks,
        2.0,
        transcribe=transcribe,
        embed=embed,
        instruments={"sine": renders, "hiss": hiss},
        judge=SymbolicJudge.shipped(),
        rows=np.array([(v, 0.5, 0.0, 0.0, i, 0) for i, v in enumerate((-0.8, -0.3, 0.3, 0.8))]),
    )
    assert res["transcribed_emotion"]["clips"] == 4  # the grid clips' transcriptions, judged
    heard = res["heard_as"]
    assert heard["generated"] == {"clips": 4, "shares": {"hiss": 1.0, "sine": 0.0}}  # noise sounds like the hiss renders
    assert heard["rule_accuracy_on_renders"] == 1.0 and heard["chance"] == 0.5
    assert heard["renders_per_instrument"] == {"hiss": 3, "sine": 4}
    assert sum(heard["codec_reconstructions"]["shares"].values()) == pytest.approx(1.0)
    fd = res["sfx_fd"]
    assert fd["generated_to_renders"] > 3  # white noise against sines: centroids about 1.8 kHz apart (squared: 3.2)
    assert fd["ratio"] == pytest.approx(fd["generated_to_renders"] / fd["codec_reconstructions_to_renders"], rel=1e-2)
    tr = res["transcription"]
    assert set(tr["generated"]) == {"notes_per_s", "key_clarity", "pc_entropy", "median_note_s"} and tr["renders"]["notes_per_s"] > 0
    assert tr["renders"]["median_note_s"] == pytest.approx(0.1)
    assert set(tr["codec_reconstructions"]) == set(tr["generated"])


def test_transcribed_emotion_hears_mode_and_pace_in_the_notes():
    """The witness on other data: the shipped symbolic judge over transcribed notes hears a
    major arpeggio as happier than a minor one and a fast loud one as more excited than a slow
    soft one, so its Spearman against the requests is high; a clip without notes is left out."""
    from moodlane.engine.symbolic.judge import SymbolicJudge
    from moodlane.engine.training.lara_eval import transcribed_emotion
    from moodlane.engine.training.witness import Notes, judged_emotion

    judge = SymbolicJudge.shipped()

    def clip(happy: bool, excited: bool) -> Notes:
        step = 0.125 if excited else 0.5
        chord = [60, 64, 67, 72] if happy else [60, 63, 67, 72]  # C major or C minor
        on = np.arange(int(8 / step)) * step
        return Notes.from_midi_pitches(on, on + step, [chord[i % 4] for i in range(len(on))], np.full(len(on), 100 if excited else 45))

    rows, notes = [], []
    for point, (v, a) in enumerate([(-0.8, -0.8), (-0.8, 0.8), (0.8, -0.8), (0.8, 0.8)]):
        for k in range(2):
            rows.append((v, a, 0.0, 0.0, point, k))
            notes.append(clip(v > 0, a > 0))
    rows.append((0.0, 0.0, 0.0, 0.0, 4, 0))
    notes.append(Notes(np.zeros(0), np.zeros(0), np.zeros(0)))
    assert judged_emotion(judge, notes[-1], 120.0) is None
    r = np.array(rows)
    res = transcribed_emotion(judge, notes, r, r[:, 4])
    assert res["clips"] == 8 and res["valence_spearman"] > 0.8 and res["arousal_spearman"] > 0.8, res
    assert len(res["valence_spearman_ci95"]) == 2
    flat = transcribed_emotion(judge, [clip(True, True)] * 8 + notes[-1:], r, r[:, 4])  # the same notes whatever was asked
    assert flat["valence_spearman"] is None and flat["arousal_spearman"] is None
    assert "too few" in transcribed_emotion(judge, notes[:3], r[:3], r[:3, 4])["note"]


def test_levels_flag_a_runaway_drone_and_silence():
    from moodlane.engine.training.lara_eval import levels

    sr = 8000
    rng = np.random.default_rng(0)
    renders = [(0.05 * rng.normal(size=4 * sr).astype(np.float32), sr) for _ in range(3)]
    t = np.arange(4 * sr) / sr
    drone = np.concatenate([0.05 * rng.normal(size=2 * sr), 0.9 * np.sin(2 * np.pi * 470 * t[: 2 * sr])])
    silent = np.zeros(4 * sr)
    res = levels([drone, silent], sr, renders)
    assert res["generated"]["too_loud"] == pytest.approx(0.25)  # 2 of 8 windows
    assert res["generated"]["runaway"] == pytest.approx(0.25) and res["renders"]["runaway"] == 0.0
    assert res["generated"]["silent"] == pytest.approx(0.5)
    assert res["renders"]["too_loud"] <= 1 / 12 and res["renders"]["silent"] == 0.0  # the 99th percentile of 12 windows


class LabelReader:
    """A predictor that hears each fake clip's pitch as arousal (higher clip, higher arousal)."""

    def window_features(self, pcm, sr):
        return pcm, sr

    def predict_features(self, f, sr):
        import types

        hz = np.argmax(np.abs(np.fft.rfft(f))) * sr / len(f)
        return types.SimpleNamespace(mean=(0.0, float(hz)))


def test_real_reference_scores_the_predictor_on_held_out_labelled_clips(tmp_path):
    """Held-out labelled clips (quadrant centres, and a VGMIDI-style curve averaged over the
    clip) judged like the grid: a predictor that hears arousal gets Spearman 1 on it, and
    unlabelled, training and too-short clips are left out."""
    import json

    from moodlane.engine.training.lara_eval import real_reference

    sr, recs = 8000, []
    (tmp_path / "audio").mkdir()
    labels = [(0.6, 0.6), (-0.6, -0.6), (0.6, -0.6), (-0.6, 0.6), None, "curve"]
    for i, lab in enumerate(labels + [(0.6, 0.6)]):
        a = 0.0 if lab is None else 0.5 if lab == "curve" else lab[1]
        if lab == "curve":
            lab = {"kind": "curve", "points": [[0.0, 0.0, 0.0], [1.0, 0.5, 1.0]], "per": "bar"}  # mean over 2 s: 0.25, 0.5
        elif lab is not None:
            lab = {"kind": "quadrant", "valence": lab[0], "arousal": lab[1]}
        t = np.arange(2 * sr) / sr
        sf.write(tmp_path / "audio" / f"c{i}.wav", 0.2 * np.sin(2 * np.pi * (400 + 200 * a) * t), sr)
        split = "train" if i == 6 else "valid"
        recs.append({"id": f"c{i}", "path": f"audio/c{i}.wav", "sample_rate": sr, "duration": 2.0, "split": split, "labels": lab})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = real_reference(LabelReader(), tmp_path, 2.0, 10)
    assert res["clips"] == 5 and res["arousal"]["spearman"] == pytest.approx(1.0)
    assert res["valence"]["spearman"] is None  # this predictor hears no valence
    assert len(res["arousal_spearman_ci95"]) == 2
    assert "transcribed_emotion" not in res  # no judge given
    from moodlane.engine.symbolic.judge import SymbolicJudge

    judged = real_reference(LabelReader(), tmp_path, 2.0, 10, SymbolicJudge.shipped())["transcribed_emotion"]
    assert isinstance(judged, dict) or judged.startswith("skipped: "), judged  # Basic Pitch only with the [eval] set-up
    assert real_reference(LabelReader(), tmp_path, 3.0, 10)["clips"] == 0  # shorter than asked
    assert "note" in real_reference(LabelReader(), tmp_path, 2.0, 3)


def test_spread_takes_clips_through_the_whole_set():
    from moodlane.engine.training.lara_eval import spread

    recs = [{"i": i} for i in range(100)]
    assert [r["i"] for r in spread(recs, 5)] == [0, 25, 50, 74, 99]
    assert spread(recs[:3], 5) == recs[:3]


def test_a_pack_keeps_codes_targets_and_texts_and_trains_without_an_encoder(tmp_path):
    """`moodlane data pack`: the LM's codebooks exactly, the LARA targets within half a
    quantisation step, the text states of every training text; labelled clips first under
    a budget; and `train_lara` runs on it with the pack's text table as its encoder."""
    from moodlane.engine.training.lara import TEXTS, LaraTrainConfig, TextTable, TokenSet, train_lara
    from moodlane.engine.training.pack import pack_tokens

    src, dst = tmp_path / "src", tmp_path / "pack"
    fake_encoded(src, clips=9)
    rec = pack_tokens(src, dst, FakeText(), "minilm", n_q=CFG.n_q, valid_clips=2, progress=False)
    assert rec["train_clips"] == rec["train_of"] == 6 and rec["valid_clips"] == 2 and rec["codebooks"] == CFG.n_q
    assert 0 < rec["feature_error_max_over_std"] < 0.02
    for split in ("train", "valid"):
        packed, plain = TokenSet(dst, split, CFG.n_q, 8), TokenSet(src, split, CFG.n_q, 8)
        by_id = {c.rec["id"]: c for c in plain.clips}
        for c in packed.clips:
            ref = by_id[c.rec["id"]]
            assert np.array_equal(c.codes, ref.codes)
            f = ref.features.astype(np.float32)
            step = (f.max(0) - f.min(0)) / 255
            assert np.all(np.abs(c.features - f) <= step / 2 + 1e-4)
    table = TextTable(dst / TEXTS)
    first = json.loads((dst / "manifest.jsonl").read_text().splitlines()[0])["text"]
    texts = [first, first.split(",")[0]]
    states, mask = table(texts)
    want, _ = FakeText()(texts)
    assert table.encoder == "minilm" and mask.all() and torch.allclose(states, want, atol=1e-2)
    with pytest.raises(KeyError, match="no states for"):
        table(["solo theremin"])

    one = (dst / "encoded" / "set" / "c0.npz").stat().st_size / 1e6  # a budget for the valid clips and about 2 more
    small = pack_tokens(src, tmp_path / "small", FakeText(), "minilm", n_q=CFG.n_q, max_mb=4.5 * one, valid_clips=2, progress=False)
    kept = [json.loads(x) for x in (tmp_path / "small" / "manifest.jsonl").read_text().splitlines()]
    train = [r for r in kept if r["split"] == "train"]
    labelled = [bool(r["labels"]) for r in train]
    assert 1 <= small["train_clips"] < 6 and labelled == sorted(labelled, reverse=True)  # labelled ones first
    assert small["train_labelled"] == sum(labelled) >= 1
    with pytest.raises(ValueError, match="already holds a pack"):
        pack_tokens(src, dst, FakeText(), "minilm", n_q=CFG.n_q, progress=False)
    with pytest.raises(ValueError, match="holds no training clip"):
        pack_tokens(src, tmp_path / "none", FakeText(), "minilm", n_q=CFG.n_q, max_mb=1e-6, valid_clips=1, progress=False)

    cfg = dataclasses.replace(CFG, feature_dim=200)
    tc = LaraTrainConfig(steps=2, batch_size=2, valid_crops=4, save_every=1, warmup=1)
    out = train_lara(dst, tmp_path / "run", tmp_path / "lm", codec_signature(tiny_codec()), tc, cfg, text_encoder=table, progress=False)
    assert out["steps"] == 2 and np.isfinite(out["final"]["valid_ce"])
    # a time budget ends training before its steps, with the weights of the last step written
    timed = dataclasses.replace(tc, steps=1_000_000, save_every=1_000_000, minutes=0.01)
    out = train_lara(
        dst, tmp_path / "run2", tmp_path / "lm2", codec_signature(tiny_codec()), timed, cfg, text_encoder=table, progress=False
    )
    assert 1 <= out["steps"] < 1_000_000 and 0.6 <= out["wall_s"] < 30
    assert load_lm(tmp_path / "lm2")[1]["training"]["steps"] == out["steps"]
