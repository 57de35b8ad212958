"""`moodlane export onnx` and `render --backend onnx` on the shipped LM: the ONNX render
reproduces PyTorch's with greedy decoding; a missing, corrupt or mismatched export is an
error naming the file with `--backend onnx`, and a fallback to PyTorch with a warning that
names it with `--backend auto`."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli

from moodlane.presets import PRESET_DIR

pytest.importorskip("onnx", reason="the ONNX exporter needs the onnx package (the dev extra)")
pytest.importorskip("onnxruntime", reason="the runtime backend needs onnxruntime (the onnx extra)")

RAMP = str(PRESET_DIR / "automation" / "ramp_q3_q1.json")
run = run_cli


@pytest.fixture
def shipped_export(shipped_onnx):
    return shipped_onnx


def render(tmp_path, capsys, name: str, *extra: str) -> tuple[np.ndarray, str]:
    out = tmp_path / f"{name}.wav"
    args = ["render", "--engine", "audio", "--automation", RAMP, "--bars", "2", "--top-k", "1", "-o", str(out), *extra]
    code, _, err = run(args, capsys)
    assert code == 0, err
    return sf.read(out, dtype="float32")[0], err


def test_export_writes_the_manifest_and_onnx_renders_what_pytorch_renders(shipped_export, tmp_path, capsys):
    m = json.loads((shipped_export / "manifest.json").read_text())
    assert set(m["files"]) == {"decoder", "decoder_int8", "memory", "codec_decoder", "text_encoder", "tokenizer"}
    assert m["sample_rate"] == 24000 and m["codebooks"] == 4
    assert max(v for k, v in m["parity"].items() if "int8" not in k) < 1e-4
    torch_pcm, err = render(tmp_path, capsys, "torch", "--backend", "torch")
    assert "backend: torch" in err
    onnx_pcm, err = render(tmp_path, capsys, "onnx", "--backend", "onnx", "--onnx", str(shipped_export))
    assert "backend: onnx" in err and "CPUExecutionProvider" in err
    assert onnx_pcm.shape == torch_pcm.shape
    # the same tokens: 16-bit WAVs a rounding step apart, or a few where Griffin-Lim's loop
    # carries the graph's float rounding (a spectral codec; measured 4 steps on lara5)
    steps = 16 if m["codec_config"].get("kind") == "spectral" else 2
    assert np.abs(onnx_pcm - torch_pcm).max() <= steps / 32768


def test_auto_uses_the_export_in_the_cache_folder(shipped_export, tmp_path, capsys):
    from moodlane.engine.audio.onnx_runtime import default_folder

    _, err = render(tmp_path, capsys, "auto-none")
    assert "backend: torch" in err and "WARNING" not in err  # no export: PyTorch, quietly
    assert json.loads(run(["info"], capsys)[1])["lara_onnx"]["exported"] is False
    sha = json.loads((shipped_export / "manifest.json").read_text())["source"]["lm_sha256"]
    cache = default_folder(sha)
    assert str(cache.parent) == os.environ["MOODLANE_ONNX_CACHE"]
    shutil.copytree(shipped_export, cache)
    try:
        _, err = render(tmp_path, capsys, "auto")
        assert "backend: onnx" in err
        info = json.loads(run(["info"], capsys)[1])["lara_onnx"]
        assert info["exported"] and info["folder"] == str(cache) and info["parity"]["decoder_max_abs"] < 1e-4
    finally:
        shutil.rmtree(cache)


def refused(tmp_path, capsys, name: str, *extra: str) -> str:
    out = tmp_path / f"{name}.wav"
    args = ["render", "--engine", "audio", "--automation", RAMP, "--bars", "2", "--top-k", "1", "-o", str(out), *extra]
    code, _, err = run(args, capsys)
    assert code == 2 and not out.exists(), err
    assert "--backend onnx" in err and "--backend auto" in err  # says what to do instead
    return err


def test_explicit_onnx_refuses_missing_corrupt_and_mismatched_exports_and_auto_falls_back(shipped_export, tmp_path, capsys):
    err = refused(tmp_path, capsys, "missing", "--backend", "onnx", "--onnx", str(tmp_path / "nowhere"))
    assert "nowhere/manifest.json does not exist" in err
    bad = tmp_path / "bad"
    shutil.copytree(shipped_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["source"]["lm_sha256"] = "0" * 64
    (bad / "manifest.json").write_text(json.dumps(m))
    assert "exported from another LM checkpoint" in refused(tmp_path, capsys, "mismatch", "--backend", "onnx", "--onnx", str(bad))
    _, err = render(tmp_path, capsys, "mismatch-auto", "--backend", "auto", "--onnx", str(bad))
    assert "exported from another LM checkpoint" in err and "using PyTorch" in err and "backend: torch" in err
    shutil.copy(shipped_export / "manifest.json", bad / "manifest.json")
    with open(bad / "memory.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 64)
    assert f"{bad / 'memory.onnx'} is corrupt" in refused(tmp_path, capsys, "corrupt", "--backend", "onnx", "--onnx", str(bad))
    _, err = render(tmp_path, capsys, "corrupt-auto", "--onnx", str(bad))
    assert f"{bad / 'memory.onnx'} is corrupt" in err and "backend: torch" in err


def test_int8_renders_on_onnx_only(shipped_export, tmp_path, capsys):
    pcm, err = render(tmp_path, capsys, "int8", "--backend", "onnx", "--onnx", str(shipped_export), "--precision", "int8")
    assert "backend: onnx int8" in err and pcm.shape[0] == 2 * 2 * 24000 + 480
    # not digital silence: greedy decoding of the ramp's sad-calm start is quiet music (the
    # shipped LM's peak is 0.005 there on fp32 and int8 alike), so the floor is -60 dBFS
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 1e-3


def test_cuda_provider_asked_for_on_a_cpu_machine_is_a_notice(shipped_export, tmp_path, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    _, err = render(tmp_path, capsys, "cuda", "--backend", "onnx", "--onnx", str(shipped_export), "--providers", "cuda,cpu")
    assert "CUDAExecutionProvider is not available" in err and "providers used: CPUExecutionProvider" in err


@pytest.mark.slow
def test_bench_onnx_reports_both_backends_side_by_side(shipped_export, capsys):
    code, out, err = run(["bench", "onnx", "--onnx", str(shipped_export), "--seconds", "2", "--repeats", "1", "--trials", "0"], capsys)
    assert code == 0, err
    result = json.loads(out)
    speed = result["speed"]
    assert {"torch, 1 thread", "onnx cpu, 1 thread", "onnx cpu int8, 1 thread"} <= set(speed)
    for row in speed.values():
        assert row["x_realtime"] > 0 and row["lm_step_ms"] > 0 and row["first_audio_s"] > 0 and row["peak_rss_mb"] > 100, row
    assert "onnx fp32" in speed["onnx cpu, 1 thread"]["backend"] and "torch" in speed["torch, 1 thread"]["backend"]
    assert 0 < result["int8_fidelity"]["top1_agreement"] <= 1 and result["cpu"]
