import os
from pathlib import Path

import numpy as np
import pytest

from moodlane.engine.symbolic.notes import NoteArray

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MOODLANE_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _private_onnx_cache(tmp_path_factory):
    """Tests never see (nor write) the user's ONNX exports: the audio engine's `auto` backend
    would pick them up."""
    old = os.environ.get("MOODLANE_ONNX_CACHE")
    os.environ["MOODLANE_ONNX_CACHE"] = str(tmp_path_factory.mktemp("onnx-cache"))
    yield
    if old is None:
        os.environ.pop("MOODLANE_ONNX_CACHE", None)
    else:
        os.environ["MOODLANE_ONNX_CACHE"] = old


@pytest.fixture(scope="session")
def shipped_onnx(tmp_path_factory):
    """The shipped LM, codec and text encoder exported to ONNX once per test session."""
    pytest.importorskip("onnx", reason="the ONNX exporter needs the onnx package (the dev extra)")
    pytest.importorskip("onnxruntime", reason="the runtime backend needs onnxruntime (the onnx extra)")
    from moodlane.daw_bridge.cli import main

    out = tmp_path_factory.mktemp("shipped-onnx") / "export"
    assert main(["export", "onnx", "--out", str(out), "-q"]) == 0
    return out


def make_notes(rows, qpm=120.0, bpb=4.0):
    """rows: (start_beats, dur_beats, pitch, velocity)."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return NoteArray(a[:, 0], a[:, 1], a[:, 2].astype(np.int64), a[:, 3].astype(np.int64), qpm, bpb)


def run_cli(args, capsys):
    """`moodlane ARGS` in-process: (exit status, stdout, stderr); argparse's own rejections
    (SystemExit, also status 2) count as a status."""
    from moodlane.daw_bridge.cli import main

    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data_dir():
    if not (DATA / "emopia").is_dir():
        pytest.skip(f"needs the emotion-labelled data at {DATA} (set MOODLANE_DATA); absent on this machine")
    return DATA


@pytest.fixture(scope="session")
def jack_server():
    """A JACK server with its dummy driver (real MIDI ports and a real-time audio device on
    a machine without sound hardware), started here and stopped after the session unless
    one already runs."""
    from moodlane.daw_bridge.jack import JACK_MIDI, JackUnavailable, ensure_jack

    try:
        with ensure_jack() as started:
            os.environ.setdefault("MOODLANE_MIDI_BACKEND", JACK_MIDI)
            yield started
    except JackUnavailable as e:
        pytest.skip(f"needs a JACK server for real MIDI ports and audio: {e}")
