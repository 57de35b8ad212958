"""The command line: renders, determinism, and one-line errors with exit status 2 and no
partial output files."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli

from moodlane.engine.symbolic.notes import parse_midi

run = run_cli


def test_render_mock_writes_a_tempo_aligned_midi(tmp_path, capsys):
    out = tmp_path / "a.mid"
    code, stdout, _ = run(
        ["render", "--generator", "mock", "--valence", "0.5", "--arousal", "0.2", "--bars", "4", "--tempo", "100", "-o", str(out), "-q"],
        capsys,
    )
    assert code == 0 and stdout == ""
    notes = parse_midi(out.read_bytes())
    assert notes.qpm == pytest.approx(100) and notes.n_bars == 4


def test_same_seed_same_file_with_the_shipped_model(tmp_path, capsys):
    a, b, c = (tmp_path / f"{x}.mid" for x in "abc")
    for path, seed in ((a, 5), (b, 5), (c, 6)):
        assert run(["render", "--preset", "tense", "--bars", "4", "--seed", str(seed), "-o", str(path), "-q"], capsys)[0] == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert parse_midi(a.read_bytes()).qpm == pytest.approx(126, abs=0.01)  # the preset's tempo


def test_automation_file_sets_length_and_moves(tmp_path, capsys):
    auto = tmp_path / "ramp.csv"
    auto.write_text("beats,valence,arousal\n0,-0.6,-0.6\n28,0.6,0.6\n")
    code, stdout, _ = run(["render", "--generator", "mock", "--automation", str(auto), "-o", str(tmp_path / "r.mid")], capsys)
    assert code == 0
    # 28 beats = 7 bars; each bar takes the emotion at its downbeat (bar 7 starts at beat 24)
    assert "7 bars" in stdout and "-0.60/-0.60 -> +0.43/+0.43" in stdout


def test_seconds_round_up_to_bars(tmp_path, capsys):
    code, stdout, _ = run(["render", "--generator", "mock", "--seconds", "9", "--tempo", "120", "-o", str(tmp_path / "s.mid")], capsys)
    assert code == 0 and "5 bars" in stdout  # 9 s at 120 BPM = 4.5 bars


def test_wav_is_real_audio_at_the_right_pitch(tmp_path, capsys):
    pytest.importorskip("fluidsynth", reason="pyfluidsynth/libfluidsynth not installed")
    from moodlane.engine.synth import SynthError, render_notes
    from tests.conftest import make_notes

    try:
        audio = render_notes(make_notes([(0, 2, 69, 100)], qpm=60), sample_rate=22050, tail_s=0.5)
    except SynthError as e:
        pytest.skip(str(e))
    mono = audio[:22050, 0]
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    peak_hz = np.argmax(spec[20:]) + 20  # 1 Hz bins
    assert abs(peak_hz - 440) < 8 or abs(peak_hz - 880) < 16
    wav = tmp_path / "t.wav"
    assert run(["render", "--generator", "mock", "--bars", "2", "-o", str(tmp_path / "t.mid"), "--wav", str(wav), "-q"], capsys)[0] == 0
    data, sr = sf.read(wav)
    assert sr == 44100 and data.shape[1] == 2 and np.abs(data).max() > 0.01


BAD = [
    (["--valence", "nan"], "valence must be a finite number"),
    (["--valence", "1.5"], "valence must be a finite number in [-1, 1]"),
    (["--arousal", "inf"], "arousal must be a finite number"),
    (["--preset", "blissful"], "unknown preset 'blissful'"),
    (["--bars", "0"], "bars must be >= 1"),
    (["--tempo", "-5"], "tempo must be"),
    (["--preset", "tender", "--valence", "0.2"], "give one of"),
    (["--automation", "/nonexistent/auto.json"], "cannot read automation file"),
    (["--checkpoint", "/nonexistent/ck"], "checkpoint file /nonexistent/ck.json is missing"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, args, message):
    out = tmp_path / "x.mid"
    code, _, err = run(["render", *args, "-o", str(out)], capsys)
    assert code == 2
    assert message in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("a.json", b'{"points": [{"time": 0, "valence": 5, "arousal": 0}]}', "valence must be"),
        ("a.csv", b"when,valence,arousal\n0,0,0\n", "CSV header"),
        ("a.mid", b"MThd\x00\x00\x00\x06garbage", "not a readable MIDI file"),
        ("a.txt", b"hello", ".json, .csv or .mid"),
    ],
)
def test_malformed_automation_files(tmp_path, capsys, name, content, message):
    auto = tmp_path / name
    auto.write_bytes(content)
    out = tmp_path / "out.mid"
    code, _, err = run(["render", "--generator", "mock", "--automation", str(auto), "-o", str(out)], capsys)
    assert code == 2 and message in err and not out.exists()


def test_corrupt_checkpoint(tmp_path, capsys):
    from moodlane.engine.symbolic.checkpoint import DEFAULT_SYMBOLIC

    (tmp_path / "ck.json").write_bytes(DEFAULT_SYMBOLIC.with_suffix(".json").read_bytes())
    (tmp_path / "ck.safetensors").write_bytes(b"\x07" * 64)
    out = tmp_path / "o.mid"
    code, _, err = run(["render", "--checkpoint", str(tmp_path / "ck"), "-o", str(out)], capsys)
    assert code == 2 and "not a readable safetensors file" in err and not out.exists()


def test_failing_wav_leaves_no_midi_either(tmp_path, capsys):
    out = tmp_path / "o.mid"
    code, _, err = run(
        ["render", "--generator", "mock", "-o", str(out), "--wav", str(tmp_path / "o.wav"), "--soundfont", str(tmp_path / "none.sf2")],
        capsys,
    )
    assert code == 2 and "soundfont" in err and list(tmp_path.iterdir()) == []


def test_console_script_and_presets_listing():
    r = subprocess.run([sys.executable, "-m", "moodlane.daw_bridge.cli", "presets"], capture_output=True, text=True, check=True)
    assert "tender" in r.stdout and "Q4" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "moodlane.daw_bridge.cli", "render", "--preset", "nope", "-o", "/tmp/never.mid"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0


def test_info_reports_and_plots_the_training_record(tmp_path, capsys):
    png = tmp_path / "training.png"
    code, out, _ = run(["info", "--plot", str(png)], capsys)
    assert code == 0
    assert '"command": "moodlane train symbolic' in out and '"valid_loss"' in out
    import json

    info = json.loads(out)
    assert "train codec" in info["codec"]["training"]["command"] and info["codec"]["training"]["steps"] > 0
    spectral = info["codec_spectral"]
    assert spectral["config"]["kind"] == "spectral" and spectral["training"]["steps"] > 0 and spectral["training"]["init"]
    assert "train predictor" in info["predictor"]["training"]["command"] and info["predictor"]["training"]["results"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("command", [["render", "-o", "x.mid"], ["serve"], ["bench", "symbolic"]])
def test_sampling_flags_reach_the_generator_options(command):
    from moodlane.daw_bridge.cli import build_parser, generator_options
    from moodlane.engine.registry import load_generator

    for extra, texture in (([], True), (["--no-guide-texture"], False)):
        opts = generator_options(build_parser().parse_args([*command, "--guidance", "2", "--no-mode-rule", *extra]))
        assert (opts.guide_texture, opts.guidance, opts.mode_rule) == (texture, 2.0, False)
        if command[0] == "render":
            sampling = load_generator(opts).sampling
            assert (sampling.guide_texture, sampling.guidance, sampling.mode_rule) == (texture, 2.0, False)
