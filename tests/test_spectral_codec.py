"""The spectral codec (STFT magnitude coded, phase by fast Griffin-Lim), the listening
witnesses (note F1, large-window log-spectral distance, chroma), and codec provenance: tokens
and LMs name the codec that made them, and another codec is refused by name."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from moodlane.engine.audio.codec import Codec, CodecError, build_model, check_codec, load_codec
from moodlane.engine.audio.spectral import (
    LOG_FLOOR,
    TINY_SPECTRAL,
    SpectralCodecConfig,
    SpectralCodecModel,
    fast_kmeans,
    griffin_lim,
    log_magnitude,
    stft_magnitude,
)
from moodlane.engine.training.witness import Notes, chroma_similarity, listen, log_spectral_distance, note_f1
from tests.fake_data import render_tiny_audio

SR = TINY_SPECTRAL.sample_rate


def tones(pitches, seconds=1.0, sr=SR, amp=0.1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return sum(amp * np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) for p in pitches).astype(np.float32)


def trained_tiny(seed=0) -> Codec:
    """A tiny spectral codec initialised from PCA of a few chords (no gradient steps)."""
    torch.manual_seed(seed)
    m = SpectralCodecModel(TINY_SPECTRAL)
    x = torch.from_numpy(np.stack([tones(c) for c in ([60, 64, 67], [57, 60, 64], [62, 65, 69], [55, 59, 62])]))
    m.init_from_pca(log_magnitude(stft_magnitude(x, TINY_SPECTRAL)).transpose(1, 2).reshape(-1, TINY_SPECTRAL.freq_bins), 400, 5)
    return Codec(TINY_SPECTRAL, m.eval(), {"weights_sha256": "c" * 64})


def test_griffin_lim_recovers_a_signal_from_its_magnitude():
    cfg = TINY_SPECTRAL
    x = torch.from_numpy(tones([60, 64, 67, 72], seconds=1.0))[None]
    mag = stft_magnitude(x, cfg)
    y = griffin_lim(log_magnitude(mag), cfg, iters=32)
    assert y.shape[1] == (mag.shape[-1] - 1) * cfg.hop
    err = torch.linalg.norm(stft_magnitude(y, cfg) - mag) / torch.linalg.norm(mag)  # spectral convergence
    assert err < 0.15
    # more iterations help, and zero iterations (the phase-advance start alone) is worse
    assert err < torch.linalg.norm(stft_magnitude(griffin_lim(log_magnitude(mag), cfg, iters=0), cfg) - mag) / torch.linalg.norm(mag)
    # deterministic: the same magnitude gives the same audio
    assert torch.equal(y, griffin_lim(log_magnitude(mag), cfg, iters=32))


@pytest.mark.parametrize("cfg", [TINY_SPECTRAL, SpectralCodecConfig()], ids=["tiny", "shipped"])
def test_griffin_lims_stft_pair_is_torchs(cfg):
    """The loop's written-out STFT pair is `torch.stft`/`torch.istft` (centred, Hann): with no
    iterations it is torch's inverse of the phase-advance start, and one iteration is that
    start projected through torch's STFT and back onto the magnitude."""
    g = torch.Generator().manual_seed(0)
    logmag = torch.randn(2, cfg.freq_bins, 40, generator=g) - 4
    mag = (torch.exp(logmag) - LOG_FLOOR).clamp_min(0) * (cfg.n_fft / 4)
    k = torch.arange(cfg.freq_bins, dtype=torch.float64)[:, None]
    t = torch.arange(7, 47, dtype=torch.float64)[None]
    start = torch.polar(mag, torch.remainder(2 * math.pi * k * cfg.hop / cfg.n_fft * t, 2 * math.pi).float())
    win = torch.hann_window(cfg.n_fft)
    length = 39 * cfg.hop
    istft = lambda s: torch.istft(s, cfg.n_fft, cfg.hop, window=win, center=True, length=length)  # noqa: E731
    ref0 = istft(start)
    torch.testing.assert_close(griffin_lim(logmag, cfg, first_frame=7, iters=0), ref0, atol=1e-4, rtol=1e-4)
    proj = torch.stft(ref0, cfg.n_fft, cfg.hop, window=win, return_complex=True, center=True)
    proj = proj * 1.99  # momentum from a zero previous projection
    ref1 = istft(proj / (proj.abs() + 1e-8) * mag)
    torch.testing.assert_close(griffin_lim(logmag, cfg, first_frame=7, iters=1), ref1, atol=1e-4, rtol=1e-3)


def test_fast_kmeans_is_lloyds_algorithm():
    """Same result as a plain Lloyd's loop (explicit differences, as encodec computes them)
    from the same start, and it lowers the within-cluster error."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g) + torch.randint(0, 4, (300, 1), generator=g) * 5.0
    means, bins = fast_kmeans(x, 16, 8)
    ref = x[torch.randperm(300, generator=torch.Generator().manual_seed(0))[:16]].clone()
    start = ref.clone()
    for _ in range(8):
        b = ((x[:, None] - ref[None]) ** 2).sum(-1).argmin(1)
        for k in range(16):
            if (b == k).any():
                ref[k] = x[b == k].mean(0)
    torch.testing.assert_close(means, ref, atol=1e-4, rtol=1e-4)
    assert int(bins.sum()) == 300
    inertia = lambda m: float(torch.cdist(x, m).min(1).values.pow(2).sum())  # noqa: E731
    assert inertia(means) < 0.9 * inertia(start)


def test_pca_init_reconstructs_unquantised_and_codebooks_reduce_the_error():
    c = trained_tiny()
    x = torch.from_numpy(tones([60, 64, 67]))[None]
    with torch.no_grad():
        target = c.model.features(x)
        unq = c.model.synthesize(c.model.embed(target))
        errs = [(c.model.decode_logmag(c.model.encode(x, n_q=k).transpose(0, 1)) - target).abs().mean() for k in (1, 2, 4)]
    assert (unq - target).abs().mean() < 0.05  # PCA of the chords it was fitted on
    assert errs[0] >= errs[1] >= errs[2]  # each residual codebook removes error


def test_spectral_codec_shapes_bandwidths_and_chunk_phase():
    c = trained_tiny()
    assert c.frame_rate == 50 and c.cfg.kbps_per_codebook == 0.3 and c.context_frames == 2  # 1 block of kernel 3, + 1
    x = tones([60, 64, 67], seconds=2.0)
    codes = c.encode(x)
    assert codes.shape == (1, 2, 101) and codes.dtype == torch.int64 and int(codes.max()) < 64
    assert c.encode(x, kbps=1.2).shape[1] == 4
    y = c.decode(codes, length=len(x))
    assert y.shape == (1, len(x)) and np.isfinite(y).all() and np.abs(y).max() > 0.01
    with pytest.raises(CodecError, match="not one of"):
        c.encode(x, kbps=0.9)
    # a chunk decoded on its own, told where it starts, agrees with the whole piece away from its edges
    first, hop, ctx = 41, c.cfg.hop, c.context_frames  # a start whose phase advance is not a whole turn
    part = c.decode(codes[:, :, first:], first_frame=first)[0]
    whole = c.decode(codes)[0]
    mid = slice(ctx * hop, (100 - first - ctx) * hop)
    a, b = part[mid], whole[first * hop :][mid]
    assert np.corrcoef(a, b)[0, 1] > 0.9
    wrong = c.decode(codes[:, :, first:], first_frame=0)[0][mid]  # a start phase from another position agrees less
    assert np.corrcoef(a, b)[0, 1] > np.corrcoef(wrong, b)[0, 1]


def test_spectral_codec_saves_and_loads_with_its_checksum(tmp_path):
    from moodlane.engine.atomic import save_stem
    from moodlane.engine.audio.codec import export_state

    c = trained_tiny()
    from safetensors.torch import save

    save_stem(tmp_path / "c", save(export_state(c.model)), {"config": TINY_SPECTRAL.to_json()})
    d = load_codec(tmp_path / "c")
    assert d.cfg == TINY_SPECTRAL and len(d.sha256) == 64 and d.meta["path"] == str(tmp_path / "c")
    x = tones([62, 65, 69])
    assert (c.encode(x) == d.encode(x)).float().mean() > 0.9  # fp16 weights
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["weights_sha256"] = "0" * 64
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(CodecError, match="does not match"):
        load_codec(tmp_path / "c")


def test_train_spectral_codec_steps_resume_and_pca_init(tmp_path):
    from moodlane.engine.training.codec import CodecTrainConfig, train_codec

    out = render_tiny_audio(tmp_path)
    tc = CodecTrainConfig(steps=2, save_every=1, pca_seconds=4)
    rec = train_codec(out, tmp_path / "w", tmp_path / "c", tc, tiny=True, progress=False)
    assert rec["steps"] == 2 and np.isfinite(rec["final"]["logmag_l1"]) and 0 < rec["init"]["pca_variance_explained"] <= 1
    c = load_codec(tmp_path / "c")
    assert c.cfg == TINY_SPECTRAL
    rec2 = train_codec(out, tmp_path / "w", tmp_path / "c", CodecTrainConfig(steps=3, save_every=1), tiny=True, resume=True, progress=False)
    assert rec2["steps"] == 3 and json.loads((tmp_path / "c.json").read_text())["training"]["steps"] == 3


def test_spectral_loss_falls_on_a_fixed_batch():
    """The loss and its gradients reach the network: a few steps on one batch lower it."""
    from moodlane.engine.training.codec import spectral_losses

    torch.manual_seed(0)
    m = SpectralCodecModel(TINY_SPECTRAL).train()  # random init: the loss alone must teach it
    x = torch.from_numpy(np.stack([tones([60, 63, 67]), tones([59, 62, 65])]))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    amp = torch.autocast("cpu", enabled=False)
    first = None
    for _ in range(30):
        rec, commit = spectral_losses(m, x, 2, 0.0, amp)
        first = first if first is not None else rec.item()
        opt.zero_grad()
        (rec + 0.1 * commit).backward()
        opt.step()
    assert spectral_losses(m, x, 2, 0.0, amp)[0].item() < 0.7 * first


def test_witnesses_see_pitch():
    a = tones([60, 64, 67], seconds=2.0, sr=24000)
    shifted = tones([61, 65, 68], seconds=2.0, sr=24000)  # the same chord a semitone up
    assert log_spectral_distance(a, a, 24000) == 0.0
    assert log_spectral_distance(a, shifted, 24000) > 3.0 > log_spectral_distance(a, 0.9 * a, 24000)
    assert chroma_similarity(a, a, 24000) == pytest.approx(1.0)
    assert chroma_similarity(a, shifted, 24000) < 0.5 < chroma_similarity(a, 0.3 * a, 24000)


def test_note_f1_scores_onsets_and_pitch():
    pytest.importorskip("mir_eval", reason="note F1 uses mir_eval (the [eval] extra)")
    ref = Notes.from_midi_pitches([0.0, 0.5, 1.0], [0.4, 0.9, 1.4], [60, 64, 67])
    assert note_f1(ref, ref)["f1"] == 1.0
    late = Notes.from_midi_pitches([0.0, 0.5, 1.2], [0.4, 0.9, 1.4], [60, 64, 67])  # one onset 200 ms off
    assert note_f1(ref, late)["f1"] == pytest.approx(2 / 3, abs=1e-3)
    wrong = Notes.from_midi_pitches([0.0, 0.5, 1.0], [0.4, 0.9, 1.4], [60, 65, 67])  # one pitch a semitone off
    assert note_f1(ref, wrong)["f1"] == pytest.approx(2 / 3, abs=1e-3)
    assert ref.window(0.4, 1.0).onset.tolist() == pytest.approx([0.1, 0.6])


class FakeTranscriber:
    """Notes where a chord's pitches are loudest: enough to test the plumbing of note F1."""

    name = "fake"

    def __call__(self, pcm, sr):
        from moodlane.engine.training.witness import chroma

        c = chroma(pcm, sr).mean(0)
        pcs = np.argsort(c)[-3:]
        return Notes.from_midi_pitches(np.zeros(3), np.ones(3), 60 + pcs)


def test_codec_figures_report_witnesses_beside_opus():
    pytest.importorskip("mir_eval", reason="note F1 uses mir_eval (the [eval] extra)")
    from moodlane.engine.training.audio_eval import codec_figures

    c = trained_tiny()
    x = tones([60, 64, 67], seconds=2.0)
    ref = Notes.from_midi_pitches(np.zeros(3), np.ones(3), [60, 64, 67])
    rows, audio = codec_figures(c, x, opus=True, ref_notes=ref, transcribe=FakeTranscriber())
    assert rows["original"]["note_f1"] == 1.0
    for kbps in TINY_SPECTRAL.bandwidths:
        r = rows[f"codec {kbps:g} kbps"]
        assert {"note_f1", "chroma", "lsd_db", "mel_distance", "si_snr_db", "decode_x_realtime"} <= set(r)
        assert len(audio[f"codec {kbps:g} kbps"]) == len(x)
    if "opus 6 kbps" in rows:  # ffmpeg present
        assert {"note_f1", "chroma", "lsd_db"} <= set(rows["opus 6 kbps"])
    assert listen(x, x, SR, None) == {"lsd_db": 0.0, "chroma": 1.0}


def test_check_codec_names_both_codecs():
    c = trained_tiny()
    check_codec("c" * 64, "moodlane-spectral-codec", c, "tokens")
    with pytest.raises(CodecError, match=r"made with codec moodlane-codec \(0123456789ab\).*moodlane-spectral-codec \(cccccccccccc\)"):
        check_codec("0123456789ab" + "0" * 52, "moodlane-codec", c, "tokens")
    with pytest.raises(CodecError, match="does not record which codec"):
        check_codec(None, None, c, "tokens")
    check_codec(None, None, c, "an old LM", missing_ok=True)


def test_build_model_picks_the_family():
    assert isinstance(build_model(TINY_SPECTRAL), SpectralCodecModel)


def test_eval_codec_scores_held_out_excerpts_against_their_midi(tmp_path):
    """`eval codec`: held-out excerpts, the source notes of each excerpt from the data folder,
    a table with the original's own note F1, and the 0-2.5 kHz spectrogram PNG."""
    pytest.importorskip("mir_eval", reason="note F1 uses mir_eval (the [eval] extra)")
    from moodlane.engine.training.audio_data import read_manifest, source_notes
    from moodlane.engine.training.audio_eval import eval_codec

    out = render_tiny_audio(tmp_path)
    held = [r for r in read_manifest(out) if r["split"] == "valid"]
    notes = source_notes(held, out.parent / "data")
    assert set(notes) == {r["id"] for r in held} and all(len(n) > 0 for n in notes.values())
    res = eval_codec(
        trained_tiny(), out, tmp_path / "eval", clips=2, seconds=2.0, progress=False, data=out.parent / "data", transcribe=FakeTranscriber()
    )
    table = res["table"]
    assert res["clips"] >= 1 and res["codec_sha256"] == "c" * 64 and "fake" in res["note_f1"]
    assert 0 <= table["original"]["note_f1"] <= 1 and {"note_f1", "chroma", "lsd_db"} <= set(table["codec 0.6 kbps"])
    assert (tmp_path / "eval" / "codec_spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "eval" / "codec_results.json").read_text())["table"] == table


def test_spectral_encode_frames_and_short_clips():
    """Frame f is centred on sample f * hop: T // hop + 1 frames, even for a clip shorter than
    half a window; `data encode` codes a long clip in one piece (no frame repeated at joins)."""
    from moodlane.engine.training.encode import encode_clip

    c = trained_tiny()
    assert c.encode(tones([60], seconds=0.01)).shape[-1] == 80 // 160 + 1  # 80 samples < n_fft / 2
    x = tones([60, 64], seconds=65.0)  # longer than the 30 s pieces a SEANet codec is encoded in

    class NoModel:  # features passed in: the music model is not needed
        pass

    d = encode_clip(c, NoModel(), x, SR, 2, features={"feature_times": np.zeros(1), "features": np.zeros((1, 2))})
    assert d["codes"].shape == (2, len(x) // 160 + 1)
    np.testing.assert_array_equal(d["codes"], c.encode(x)[0].numpy())


def test_note_stats_see_keys_density_and_spread():
    from moodlane.engine.training.witness import Notes, note_stats

    def notes(pitches, step=0.5):
        t = np.arange(len(pitches)) * step
        return Notes.from_midi_pitches(t, t + 0.4, pitches)

    scale = note_stats(notes([60, 62, 64, 65, 67, 69, 71, 72] * 2), 8.0)
    chromatic = note_stats(notes(list(range(60, 72)) * 2), 12.0)
    triad = note_stats(notes([57, 60, 64] * 4, step=0.25), 3.0)  # A minor, 4 notes a second
    assert scale["notes_per_s"] == 2.0 and triad["notes_per_s"] == 4.0
    assert scale["key_clarity"] > 0.85 and triad["key_clarity"] > 0.6 and chromatic["key_clarity"] == 0.0
    assert abs(chromatic["pc_entropy"] - np.log2(12)) < 1e-3 and triad["pc_entropy"] == pytest.approx(np.log2(3), abs=1e-3)
    assert scale["median_note_s"] == pytest.approx(0.4)  # a drone is few long notes
    drone = note_stats(Notes.from_midi_pitches([0.0, 0.1, 4.0], [8.0, 8.0, 4.2], [60, 67, 64]), 8.0)
    assert drone["median_note_s"] == pytest.approx(7.9) and drone["notes_per_s"] < 0.5
    empty = note_stats(notes([]), 5.0)
    assert empty["notes_per_s"] == 0.0 and np.isnan(empty["key_clarity"]) and np.isnan(empty["median_note_s"])


def test_sfx_embedding_is_512_wide_per_block_and_tells_sounds_apart():
    pytest.importorskip("aisfx", reason="the aiSFX embedding is an [eval] witness (MOODLANE_EVAL=1 bash scripts/setup.sh)")
    pytest.importorskip("librosa", reason="the aiSFX spectrogram needs librosa (the [eval] extra)")
    from moodlane.engine.training.witness import sfx_embedding

    sr = 24000
    t = np.arange(6 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = (0.1 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)
    e = sfx_embedding()
    a, a2, b = e(tone, sr), e(tone * 0.5, sr), e(noise, sr)
    assert a.shape == (4, 512) and e(tone[: sr // 2], sr).shape == (1, 512)  # 6 s: blocks at 0, 1.16, 2.32, 3.48 s
    assert np.allclose(a, a2, atol=1e-4)  # peak-normalised: loudness is not timbre
    d_same, d_other = np.linalg.norm(a.mean(0) - a2.mean(0)), np.linalg.norm(a.mean(0) - b.mean(0))
    assert d_other > 10 * max(d_same, 1e-3)


def test_decoder_bound_holds_unknown_token_mixes_and_leaves_real_clips_alone(tmp_path):
    """`logmag_ceiling` is the largest log magnitude decoded from real clips' tokens, plus a
    margin: those clips decode exactly as before, a token mix no clip has is held under it,
    and the codec's JSON carries it (the weights file, and so the tokens, are unchanged)."""
    from safetensors.torch import save

    from moodlane.engine.atomic import save_stem
    from moodlane.engine.audio.codec import ceiling_record, ceiling_sha, export_state
    from moodlane.engine.audio.spectral import logmag_ceiling

    c = trained_tiny()
    real = [c.encode(tones(p))[0] for p in ([60, 64, 67], [57, 60, 64], [62, 65, 69])]
    ceiling = logmag_ceiling(c.model, real, margin=0.5)
    free = [c.model.decode_logmag(x[None], bounded=False)[0] for x in real]
    assert torch.allclose(ceiling, torch.stack([f.amax(-1) for f in free]).amax(0) + 0.5)
    c.model.ceiling.copy_(ceiling)
    for x, f in zip(real, free):
        assert torch.equal(c.model.decode_logmag(x[None])[0], f)  # under the bound: untouched
    odd = torch.randint(0, TINY_SPECTRAL.bins, (1, TINY_SPECTRAL.n_q, 50))  # mixes no real frame has
    loud = c.model.decode_logmag(odd, bounded=False)
    held = c.model.decode_logmag(odd)
    assert bool((held <= ceiling[:, None]).all()) and bool((loud > ceiling[:, None]).any())

    save_stem(tmp_path / "c", save(export_state(c.model)), {"config": TINY_SPECTRAL.to_json()})
    plain = load_codec(tmp_path / "c")
    assert torch.isinf(plain.model.ceiling).all() and ceiling_sha(plain.meta) is None
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["logmag_ceiling"] = ceiling_record(ceiling.tolist(), margin=0.5)
    (tmp_path / "c.json").write_text(json.dumps(meta))
    bounded = load_codec(tmp_path / "c")
    assert bounded.sha256 == plain.sha256 and ceiling_sha(bounded.meta) == meta["logmag_ceiling"]["sha256"]
    assert torch.allclose(bounded.model.ceiling, ceiling, atol=1e-4)
    meta["logmag_ceiling"]["values"] = meta["logmag_ceiling"]["values"][:-1]
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(CodecError, match="logmag_ceiling has 128 values; this codec decodes 129 bins"):
        load_codec(tmp_path / "c")


def test_codec_bound_command_records_the_ceiling_from_the_training_tokens(tmp_path, capsys):
    """`moodlane codec bound`: the training split's tokens (at the LM's and the full number
    of codebooks) give the ceiling, written into the codec's JSON; tokens of another codec
    are refused."""
    import soundfile as sf
    from safetensors.torch import save

    from moodlane.daw_bridge.cli import main
    from moodlane.engine.atomic import save_stem
    from moodlane.engine.audio.codec import export_state
    from moodlane.engine.audio.spectral import logmag_ceiling
    from moodlane.engine.training.audio_data import read_manifest

    out = render_tiny_audio(tmp_path)
    save_stem(tmp_path / "c", save(export_state(trained_tiny().model)), {"config": TINY_SPECTRAL.to_json()})
    c = load_codec(tmp_path / "c")
    train = [r for r in read_manifest(out) if r["split"] == "train"]
    codes = {}
    for r in train:
        pcm, _ = sf.read(out / r["path"], dtype="float32")
        codes[r["id"]] = c.encode(pcm, n_q=TINY_SPECTRAL.n_q)[0].numpy()
        (out / "encoded" / r["id"]).parent.mkdir(parents=True, exist_ok=True)
        np.savez(out / "encoded" / (r["id"] + ".npz"), codes=codes[r["id"]], codec_sha256=np.array(c.sha256))
    args = ["codec", "bound", "--audio", str(out), "--codec-checkpoint", str(tmp_path / "c"), "--clips", "0", "--margin", "0.25"]
    assert main(args) == 0
    assert "decoder bound recorded" in capsys.readouterr().out
    rec = json.loads((tmp_path / "c.json").read_text())["logmag_ceiling"]
    want = logmag_ceiling(c.model, [torch.as_tensor(x[:k].astype(np.int64)) for x in codes.values() for k in (2, 4)], 0.25)
    assert rec["clips"] == len(train) and rec["codebooks"] == [2, 4] and rec["margin"] == 0.25
    np.testing.assert_allclose(rec["values"], want.numpy(), atol=1e-3)
    assert torch.allclose(load_codec(tmp_path / "c").model.ceiling, want, atol=1e-3)
    np.savez(out / "encoded" / (train[0]["id"] + ".npz"), codes=codes[train[0]["id"]], codec_sha256=np.array("f" * 64))
    with pytest.raises(ValueError, match="encoded by another codec"):
        main(args)
