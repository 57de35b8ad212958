"""`moodlane codec roundtrip` and `moodlane predict audio` on the shipped files, and their
answers to bad input: one line, exit status 2, no partial output."""

import json

import numpy as np
import pytest
import soundfile as sf

from moodlane.engine.audio.codec import load_codec
from moodlane.engine.synth import render_notes
from tests.conftest import make_notes
from tests.test_cli import run


def _piece(fast: bool, seconds: float = 12.0):
    """Loud fast staccato in a major key, or soft slow held notes in a minor key."""
    rows = []
    if fast:
        qpm, n = 160.0, int(seconds * 160 / 60 * 4)
        for i in range(n):
            rows.append((i / 4, 0.2, [60, 64, 67, 72][i % 4] + 12 * (i % 8 > 3), 110))
    else:
        qpm = 60.0
        for b in range(int(seconds)):
            for p in [57, 60, 64] if b % 2 == 0 else [53, 57, 60]:
                rows.append((b, 1.0, p - 12, 35))
    return make_notes(rows, qpm=qpm)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for name, fast in (("fast", True), ("slow", False)):
        pcm = render_notes(_piece(fast), sample_rate=44100, tail_s=0.5).mean(axis=1)
        sf.write(d / f"{name}.wav", pcm, 44100)
    return d


def test_codec_roundtrip_on_the_shipped_codec(clips, tmp_path, capsys):
    out = tmp_path / "rt.wav"
    code, stdout, err = run(["codec", "roundtrip", str(clips / "fast.wav"), "-o", str(out), "--json", "--no-transcribe"], capsys)
    assert code == 0, err
    assert "resampled 44100 Hz -> 24000 Hz" in err
    res = json.loads(stdout)
    codec = load_codec()
    assert codec.cfg.kind == "spectral" and res["codec_sha256"] == codec.sha256  # the default: the shipped spectral codec
    assert {f"codec {b:g} kbps" for b in codec.cfg.bandwidths} <= set(res["rows"])
    rows = [res["rows"][f"codec {b:g} kbps"] for b in codec.cfg.bandwidths]
    assert rows[-1]["lsd_db"] < rows[0]["lsd_db"] and rows[-1]["chroma"] > rows[0]["chroma"]  # more codebooks, closer
    lm_rate = res["rows"][f"codec {codec.cfg.lm_codebooks * codec.cfg.kbps_per_codebook:g} kbps"]
    if "opus 6 kbps" in res["rows"]:  # the shipped codec keeps the pitch classes at the LM's 3 kbps better than Opus at 6
        assert lm_rate["chroma"] > res["rows"]["opus 6 kbps"]["chroma"]
    assert all(r["encode_x_realtime"] > 0 and r["decode_x_realtime"] > 0 for r in rows)  # speed: a benchmark figure
    y, sr = sf.read(out)
    assert sr == codec.sample_rate and abs(len(y) / sr - 12.5) < 0.1
    assert np.sqrt(np.mean(y**2)) > 0.01


def test_predict_audio_hears_arousal_and_writes_json_and_plot(clips, tmp_path, capsys):
    png = tmp_path / "p.png"
    code, stdout, err = run(["predict", "audio", str(clips / "fast.wav"), str(clips / "slow.wav"), "--json", "--plot", str(png)], capsys)
    assert code == 0, err
    fast, slow = (json.loads(line) for line in stdout.splitlines())
    assert set(fast) == {"file", "valence", "arousal", "windows"}
    assert all(len(w) == 3 and -1 <= w[1] <= 1 and -1 <= w[2] <= 1 for w in fast["windows"])
    assert len(fast["windows"]) >= 4
    assert fast["arousal"] > slow["arousal"] + 0.2
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def bad_inputs(tmp_path):
    sr = 24000
    (tmp_path / "garbage.wav").write_bytes(b"RIFF....WAVEjunk")
    sf.write(tmp_path / "empty.wav", np.zeros(0), sr)
    sf.write(tmp_path / "silent.wav", np.zeros(sr * 5), sr)
    sf.write(tmp_path / "short.wav", 0.1 * np.sin(np.arange(sr) / 10), sr)
    return tmp_path


@pytest.mark.parametrize(
    "name,message",
    [
        ("garbage.wav", "not a readable audio file"),
        ("empty.wav", "holds no audio"),
        ("silent.wav", "is silent"),
        ("missing.wav", "no such file"),
    ],
)
def test_bad_audio_one_line_exit_2_no_output(bad_inputs, capsys, name, message):
    for cmd in (
        ["codec", "roundtrip", str(bad_inputs / name), "-o", str(bad_inputs / "out.wav")],
        ["predict", "audio", str(bad_inputs / name), "--plot", str(bad_inputs / "out.png")],
    ):
        code, _, err = run(cmd, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (bad_inputs / "out.wav").exists() and not (bad_inputs / "out.png").exists()


def test_clip_shorter_than_a_window(bad_inputs, capsys):
    code, _, err = run(["predict", "audio", str(bad_inputs / "short.wav")], capsys)
    assert code == 2 and "shorter than one 2.99 s window" in err


def test_bad_checkpoints(bad_inputs, clips, capsys, tmp_path):
    from moodlane.engine.audio.codec import PACKAGE_WEIGHTS

    wav = str(clips / "slow.wav")
    out = tmp_path / "o.wav"
    code, _, err = run(["codec", "roundtrip", wav, "-o", str(out), "--codec-checkpoint", str(tmp_path / "nope")], capsys)
    assert code == 2 and "does not exist" in err and not out.exists()
    (tmp_path / "c.safetensors").write_bytes(b"\x05" * 100)
    (tmp_path / "c.json").write_bytes((PACKAGE_WEIGHTS / "codec.json").read_bytes())
    code, _, err = run(["codec", "roundtrip", wav, "-o", str(out), "--codec-checkpoint", str(tmp_path / "c")], capsys)
    assert code == 2 and "not a readable safetensors file" in err and not out.exists()
    # the shipped weights under a config of another architecture
    (tmp_path / "c.safetensors").write_bytes((PACKAGE_WEIGHTS / "codec.safetensors").read_bytes())
    cfg = json.loads((PACKAGE_WEIGHTS / "codec.json").read_text())
    cfg["config"]["n_filters"] = 8
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    code, _, err = run(["codec", "roundtrip", wav, "-o", str(out), "--codec-checkpoint", str(tmp_path / "c")], capsys)
    assert code == 2 and "not a codec of this architecture" in err and not out.exists()
    code, _, err = run(["predict", "audio", wav, "--predictor", str(tmp_path / "none")], capsys)
    assert code == 2 and "predictor checkpoint" in err and "does not exist" in err


def test_bench_codec_names_the_cpu_and_times_a_live_chunk(capsys):
    code, stdout, err = run(["bench", "codec", "--seconds", "2", "--repeats", "1"], capsys)
    assert code == 0, err
    res = json.loads(stdout[stdout.index("{") :])
    assert res["cpu"] and res["codec"].startswith("moodlane-spectral-codec (")
    assert set(res["speed"]) == {"1.5 kbps", "3 kbps", "6 kbps"} and res["live_chunk_decode_ms"] > 0
    assert all(r["encode_x_realtime"] > 0 and r["decode_x_realtime"] > 0 for r in res["speed"].values())
