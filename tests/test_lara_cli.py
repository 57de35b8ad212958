"""`moodlane render --engine audio` on the shipped LM and codec, and its bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli

from moodlane.engine.audio.checkpoint import DEFAULT_LM
from moodlane.presets import PRESET_DIR

RAMP = PRESET_DIR / "automation" / "ramp_q3_q1.json"


run = run_cli


def test_render_audio_with_a_prompt_and_automation_on_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "out.wav"
    args = [
        "render",
        "--engine",
        "audio",
        "--prompt",
        "solo piano",
        "--automation",
        str(RAMP),
        "--bars",
        "2",
        "--seed",
        "7",
        "-o",
        str(out),
    ]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    pcm, sr = sf.read(out)
    assert sr == 24000 and abs(len(pcm) / sr - 4.0) < 0.05  # two bars at the default 120 BPM
    assert np.abs(pcm).max() > 1e-3  # not silence
    assert "V/A -0.80/-0.80 ->" in stdout  # the automation moved between the chunks
    again = tmp_path / "again.wav"
    assert run(args[:-1] + [str(again)], capsys)[0] == 0
    assert out.read_bytes() == again.read_bytes()  # same seed, same file


def test_render_audio_takes_a_preset_and_its_prompt(tmp_path, capsys):
    out = tmp_path / "p.wav"
    code, _, err = run(["render", "--engine", "audio", "--preset", "tender", "--bars", "1", "--cfg", "1", "-o", str(out), "-q"], capsys)
    assert code == 0, err
    assert sf.info(out).duration == pytest.approx(4 * 60 / 72, abs=0.05)  # one bar at the preset's 72 BPM


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--prompt", "  "], "prompt is empty"),
        (["--prompt", "x" * 501], "at most 500"),
        (["--valence", "1.5"], "valence"),
        (["--arousal", "nan"], "arousal"),
        (["--top-k", "0"], "top-k"),
        (["--cfg", "inf"], "cfg"),
    ],
)
def test_bad_audio_render_inputs_are_one_line_and_no_file(tmp_path, capsys, extra, needle):
    out = tmp_path / "bad.wav"
    code, _, err = run(["render", "--engine", "audio", "--bars", "1", "-o", str(out), *extra], capsys)
    assert code == 2
    assert needle in err.strip().splitlines()[-1]  # argparse's usage lines, then one line naming the problem
    assert not out.exists()


def test_corrupt_or_mismatched_lm_checkpoints(tmp_path, capsys):
    import dataclasses

    from moodlane.engine.audio.checkpoint import codec_signature, save_lm
    from moodlane.engine.audio.codec import TINY, Codec, build_model
    from moodlane.engine.audio.lm import TINY_LM, LaraLM

    shutil.copy(DEFAULT_LM.with_suffix(".json"), tmp_path / "bad.json")
    (tmp_path / "bad.safetensors").write_bytes(b"\0" * 64)
    out = tmp_path / "o.wav"
    code, _, err = run(["render", "--engine", "audio", "--lm-checkpoint", str(tmp_path / "bad"), "--bars", "1", "-o", str(out)], capsys)
    assert code == 2 and "bad.safetensors" in err and not out.exists()
    # an LM for a 2-codebook, 64-bin codec asked to decode through the shipped 1024-bin codec
    small = LaraLM(dataclasses.replace(TINY_LM, n_q=2, card=64, frame_rate=75.0, text_dim=384))
    save_lm(tmp_path / "small", small, {"codec": codec_signature(Codec(TINY, build_model(TINY))), "emotion": "av"})
    code, _, err = run(["render", "--engine", "audio", "--lm-checkpoint", str(tmp_path / "small"), "--bars", "1", "-o", str(out)], capsys)
    assert code == 2 and "codec" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_shipped_lm_refuses_a_codec_it_was_not_trained_with(tmp_path, capsys):
    """The shipped LM's tokens are one codec's: decoding them with the other shipped codec
    would be garbage, so it is an error that names both (and the default pairs them right)."""
    from moodlane.engine.audio.checkpoint import lm_codec
    from moodlane.engine.audio.codec import DEFAULT_CODEC, LEGACY_CODEC, load_codec

    meta = json.loads(DEFAULT_LM.with_suffix(".json").read_text())
    assert lm_codec(meta) in (DEFAULT_CODEC, LEGACY_CODEC) and len(meta["codec"]["sha256"]) == 64
    other = LEGACY_CODEC if lm_codec(meta) == DEFAULT_CODEC else DEFAULT_CODEC
    out = tmp_path / "o.wav"
    code, _, err = run(["render", "--engine", "audio", "--codec-checkpoint", str(other), "--bars", "1", "-o", str(out)], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and not out.exists()
    assert f"{meta['codec']['name']} ({meta['codec']['sha256'][:12]})" in last and load_codec(other).cfg.name in last


def test_shipped_lm_records_how_it_was_trained():
    meta = json.loads(DEFAULT_LM.with_suffix(".json").read_text())
    rec = meta["training"]
    assert rec["command"].startswith("moodlane train audio") and rec["steps"] > 0 and rec["wall_s"] > 0
    assert meta["codec"]["n_q"] == meta["config"]["n_q"] and meta["emotion"] == "av"
    assert meta["history"][-1]["valid_ce"] < meta["history"][0]["valid_ce"]  # it learned


def test_eval_lm_specs_name_the_runtime():
    from moodlane.daw_bridge.audio_cli import _lm_label
    from moodlane.engine.audio.checkpoint import LMCheckpointError

    assert _lm_label("shipped") == ("shipped", None, "torch", "fp32")
    assert _lm_label("q=shipped@int8") == ("q", None, "onnx", "int8")
    assert _lm_label("runs/lara2/lm@onnx") == ("lm@onnx", "runs/lara2/lm", "onnx", "fp32")
    with pytest.raises(LMCheckpointError, match="runtime after @"):
        _lm_label("shipped@gpu")


def test_train_audio_flags_reach_the_training_config(tmp_path, capsys, monkeypatch):
    """`--lr`, `--dim`, `--layers`, `--context`, `--lara-layer` reach the trainer; a warm
    start refuses a new shape (one line naming both) and applies context and LARA layer."""
    import dataclasses

    import torch

    from moodlane.engine.audio.checkpoint import codec_signature, save_lm
    from moodlane.engine.audio.codec import TINY, Codec, build_model
    from moodlane.engine.audio.lm import TINY_LM, LaraLM

    seen: dict = {}

    def fake_train(audio, out, stem, sig, tc, cfg, **kw):
        seen.update(tc=tc, cfg=cfg, init=kw.get("init"), text=kw.get("text_encoder"))
        return {"ok": True}

    monkeypatch.setattr("moodlane.engine.training.lara.train_lara", fake_train)
    base = ["train", "audio", "--audio", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "5"]
    code, _, err = run([*base, "--lr", "1e-3", "--dim", "64", "--layers", "3", "--context", "200", "--lara-layer", "2"], capsys)
    assert code == 0, err
    tc, cfg = seen["tc"], seen["cfg"]
    assert tc.lr == 1e-3 and tc.steps == 5 and tc.label_jitter > 0
    assert (cfg.dim, cfg.ffn, cfg.n_layer, cfg.context, cfg.lara_layer) == (64, 256, 3, 200, 2)
    assert (cfg.av_freqs, cfg.av_max_freq) == (2, 1.0)  # new LMs get the smooth AV encoder
    code, _, err = run(base, capsys)
    assert code == 0 and seen["tc"].lr == 6e-4 and seen["tc"].minutes == 0 and seen["text"] is None  # the defaults
    assert seen["tc"].instrument_weights == () and seen["tc"].pseudo_labels is False and seen["tc"].seed == 0
    assert seen["tc"].pseudo_stretch == 1.0 and seen["tc"].twin_stretch == 1.0
    code, _, err = run([*base, "--pseudo-labels", "--pseudo-stretch", "2", "--twin-stretch", "3", "--seed", "3"], capsys)
    assert code == 0 and seen["tc"].pseudo_labels is True and seen["tc"].pseudo_stretch == 2.0 and seen["tc"].seed == 3, err
    assert seen["tc"].twin_stretch == 3.0
    assert seen["tc"].valence_contrast == 0.0 and seen["tc"].contrast_margin == 0.05
    code, _, err = run([*base, "--valence-contrast", "2", "--contrast-margin", "0.03"], capsys)
    assert code == 0 and (seen["tc"].valence_contrast, seen["tc"].contrast_margin) == (2.0, 0.03), err
    for bad in ("piano", "piano=0", "=2", "piano=x"):
        code, _, err = run([*base, "--instrument-weight", bad], capsys)
        assert code == 2 and "argument --instrument-weight: instrument weight must be" in err.strip().splitlines()[-1], (bad, err)
    # a pack carries its text states: they stand in for the encoder, and --minutes reaches the trainer
    from moodlane.engine.training.lara import TEXTS, TextTable

    states = np.zeros((1, 2, 384), np.float16)
    np.savez(tmp_path / TEXTS, encoder=np.array("minilm"), texts=np.array('["solo harp"]'), states=states, lengths=np.array([2]))
    code, _, err = run([*base, "--minutes", "7.5", "--instrument-weight", "acoustic piano=3", "--instrument-weight", "harp=0.5"], capsys)
    assert code == 0, err
    assert seen["tc"].instrument_weights == (("acoustic piano", 3.0), ("harp", 0.5))
    assert seen["tc"].minutes == 7.5 and isinstance(seen["text"], TextTable) and seen["text"](["solo harp"])[1].all()
    (tmp_path / TEXTS).unlink()

    torch.manual_seed(0)
    small = LaraLM(dataclasses.replace(TINY_LM, context=48, lara_layer=1))
    save_lm(tmp_path / "small", small, {"codec": codec_signature(Codec(TINY, build_model(TINY))), "emotion": "av"}, half=False)
    code, _, err = run([*base, "--init", str(tmp_path / "small"), "--dim", "64"], capsys)
    assert code == 2 and "keeps its shape (dim 32, ffn 64; asked dim 64, ffn 256)" in err and len(err.strip().splitlines()) == 1
    code, _, err = run([*base, "--init", str(tmp_path / "small"), "--context", "40", "--lara-layer", "2", "--lr", "2e-4"], capsys)
    assert code == 0, err
    assert (seen["cfg"].context, seen["cfg"].lara_layer, seen["tc"].lr) == (40, 2, 2e-4)
    assert seen["init"].cfg == seen["cfg"] and seen["init"].pos_table.shape[0] == 40
    for k, v in small.state_dict().items():
        if k != "pos_table":
            assert torch.equal(seen["init"].state_dict()[k], v), k  # the same weights


def test_the_shipped_lms_tokens_depend_on_the_emotion():
    """Same prompt, same seed, same history: the shipped LM's next-token distribution moves
    with valence/arousal (excited against calm, happy against sad), and not at all when the
    AV tokens are dropped. A paired check on the logits themselves, not a cross-entropy over
    a thousand tokens."""
    import torch

    from moodlane.engine.audio.checkpoint import load_lara

    gen = load_lara(backend="torch")
    lm = gen.model
    text, mask = gen.text(["solo acoustic piano"])
    steps = torch.full((1, lm.cfg.n_q, 20), lm.special)
    torch.manual_seed(0)
    steps[:, :, 1:] = torch.randint(0, lm.cfg.card, (1, lm.cfg.n_q, 19))

    def dist(v: float, a: float, on: bool = True) -> torch.Tensor:
        with torch.no_grad():
            mem = lm.memory(text, mask, torch.tensor([[[v, a]]]), torch.tensor([on]))
            logits, _ = lm(steps, mem)
        return torch.softmax(logits[0, :, -1], dim=-1)  # (K, card): the next token of each codebook

    def tv(p: torch.Tensor, q: torch.Tensor) -> float:  # total variation, averaged over codebooks
        return 0.5 * (p - q).abs().sum(-1).mean().item()

    excited, calm = dist(0.0, 0.8), dist(0.0, -0.8)
    happy, sad = dist(0.8, 0.0), dist(-0.8, 0.0)
    # measured on the shipped LM (the first codec's): 0.018 and 0.032 of probability mass moved
    assert tv(excited, calm) > 0.01 and tv(happy, sad) > 0.01, (tv(excited, calm), tv(happy, sad))
    assert tv(dist(0.8, 0.8, on=False), dist(-0.8, -0.8, on=False)) < 1e-6  # dropped: the emotion is gone


def test_eval_audio_takes_lists_of_guidance_scales():
    from moodlane.daw_bridge.cli import build_parser
    from moodlane.engine.audio.generator import AV_CFG, CFG

    args = build_parser().parse_args(["eval", "audio", "--cfg", "1.5,3", "--av-cfg", "0, 2"])
    assert args.cfg == [1.5, 3.0] and args.av_cfg == [0.0, 2.0]
    args = build_parser().parse_args(["eval", "audio"])
    assert args.cfg == [CFG] and args.av_cfg == [AV_CFG]
    for bad in ("1,nan", "", "1,30"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["eval", "audio", "--av-cfg", bad])


def test_data_pack_and_train_audio_errors_are_one_line(tmp_path, capsys):
    code, _, err = run(["data", "pack", "--out", str(tmp_path / "missing"), "--pack-out", str(tmp_path / "p")], capsys)
    assert code == 2 and "manifest.jsonl does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["train", "audio", "--audio", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), "--steps", "1"], capsys)
    assert code == 2 and "manifest.jsonl does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["data", "pack", "--out", str(tmp_path)], capsys)
    assert code == 2 and "needs --pack-out" in err
