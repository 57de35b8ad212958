"""Listening witnesses for codecs: figures that see the notes, built on nothing the codec
trains toward.

* **note F1**: an automatic transcription of the audio (Basic Pitch, Spotify, Apache-2.0: its
  ONNX model on onnxruntime, from the `[eval]` extra) scored against the source MIDI with
  mir_eval (onsets within 50 ms, pitch within 50 cents, offsets ignored);
* **large-window log-spectral distance** (dB): 4096-sample STFT (5.9 Hz bins at 24 kHz) on
  a linear frequency axis, where single partials are resolved (64-band mels are not);
* **chroma similarity**: frame-wise cosine of 12 pitch-class profiles from the same STFT.

The transcriber is optional: without it the other figures are still reported and the note F1
says why it is missing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

WINDOW = 4096
EVAL_HINT = 'pip install -e ".[eval]" && pip install --no-deps basic-pitch==0.4.0 (or MOODLANE_EVAL=1 bash scripts/setup.sh)'


class TranscriberMissing(RuntimeError):
    """Basic Pitch (the `[eval]` extra) is not installed."""


@dataclass(frozen=True)
class Notes:
    """Notes in seconds: onsets, offsets, pitches in Hz."""

    onset: np.ndarray
    offset: np.ndarray
    hz: np.ndarray

    def window(self, start: float, seconds: float) -> Notes:
        """Notes whose onset lies in [start, start + seconds), shifted to start at 0."""
        keep = (self.onset >= start) & (self.onset < start + seconds)
        return Notes(self.onset[keep] - start, np.minimum(self.offset[keep], start + seconds) - start, self.hz[keep])

    def __len__(self) -> int:
        return len(self.onset)

    @classmethod
    def from_midi_pitches(cls, onset, offset, pitch) -> Notes:
        hz = 440.0 * 2.0 ** ((np.asarray(pitch, np.float64) - 69.0) / 12.0)
        return cls(np.asarray(onset, np.float64), np.asarray(offset, np.float64), hz)


def _spectrum(x: np.ndarray, sr: int, n_fft: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrogram (frames, bins) with hop n_fft / 4, and the bin frequencies."""
    from scipy.signal import stft

    _, _, z = stft(np.asarray(x, np.float64), fs=sr, window="hann", nperseg=n_fft, noverlap=n_fft - n_fft // 4, boundary=None, padded=False)
    return (np.abs(z) ** 2).T, np.fft.rfftfreq(n_fft, 1.0 / sr)


def log_spectral_distance(ref: np.ndarray, est: np.ndarray, sr: int, n_fft: int = WINDOW, top_hz: float = 8000.0) -> float:
    """Mean over frames of the RMS difference of dB power spectra (bins up to `top_hz`),
    with a floor 80 dB below the reference's loudest bin so silence does not dominate."""
    n = min(len(ref), len(est))
    pr, f = _spectrum(ref[:n], sr, n_fft)
    pe, _ = _spectrum(est[:n], sr, n_fft)
    keep = f <= top_hz
    floor = pr[:, keep].max() * 1e-8 + 1e-20
    dr = 10 * np.log10(pr[:, keep] + floor)
    de = 10 * np.log10(pe[:, keep] + floor)
    return float(np.mean(np.sqrt(np.mean((dr - de) ** 2, axis=1))))


@functools.cache
def _chroma_map(sr: int, n_fft: int) -> np.ndarray:
    """(bins, 12): each bin from A0 (27.5 Hz) to 4.2 kHz to its nearest pitch class."""
    f = np.fft.rfftfreq(n_fft, 1.0 / sr)
    m = np.zeros((len(f), 12))
    ok = (f >= 27.5) & (f <= 4200.0)
    pc = np.mod(np.round(12 * np.log2(f[ok] / 440.0)) + 9, 12).astype(int)  # 0 = C
    m[np.flatnonzero(ok), pc] = 1.0
    return m


def chroma(x: np.ndarray, sr: int, n_fft: int = WINDOW) -> np.ndarray:
    """(frames, 12) pitch-class energy."""
    p, _ = _spectrum(x, sr, n_fft)
    return np.sqrt(p) @ _chroma_map(sr, n_fft)


def chroma_similarity(ref: np.ndarray, est: np.ndarray, sr: int, n_fft: int = WINDOW) -> float:
    """Mean cosine between the two chroma sequences, over frames where the reference sounds
    (within 40 dB of its loudest frame)."""
    n = min(len(ref), len(est))
    cr, ce = chroma(ref[:n], sr, n_fft), chroma(est[:n], sr, n_fft)
    energy = cr.sum(axis=1)
    keep = energy > energy.max() * 1e-2 if energy.max() > 0 else np.zeros(len(energy), bool)
    if not keep.any():
        return float("nan")
    a, b = cr[keep], ce[keep]
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(np.mean(cos))


def note_f1(ref: Notes, est: Notes, onset_tolerance: float = 0.05, pitch_cents: float = 50.0) -> dict:
    """mir_eval's note precision/recall/F1 (onsets and pitch only)."""
    try:
        import mir_eval
    except ImportError as e:
        raise TranscriberMissing(f"mir_eval is missing ({e}): {EVAL_HINT}") from None
    if len(ref) == 0 or len(est) == 0:
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0, "ref_notes": len(ref), "est_notes": len(est)}
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        np.stack([ref.onset, np.maximum(ref.offset, ref.onset + 1e-3)], 1),
        ref.hz,
        np.stack([est.onset, np.maximum(est.offset, est.onset + 1e-3)], 1),
        est.hz,
        onset_tolerance=onset_tolerance,
        pitch_tolerance=pitch_cents,
        offset_ratio=None,
    )
    return {
        "f1": round(float(f), 4),
        "precision": round(float(p), 4),
        "recall": round(float(r), 4),
        "ref_notes": len(ref),
        "est_notes": len(est),
    }


class BasicPitch:
    """Basic Pitch's ONNX model (`nmp.onnx`, shipped in the basic-pitch wheel) on onnxruntime;
    TensorFlow is never imported. Audio in, `Notes` out."""

    name = "basic-pitch 0.4.0 (ICASSP 2022, ONNX)"

    def __init__(self) -> None:
        import logging
        import warnings

        warnings.filterwarnings("ignore", module="basic_pitch")
        logging.getLogger("root").setLevel(logging.ERROR)
        try:
            from pathlib import Path

            from basic_pitch import ICASSP_2022_MODEL_PATH
            from basic_pitch.inference import Model
        except ImportError as e:
            raise TranscriberMissing(f"the transcriber (basic-pitch) is not installed ({e}): {EVAL_HINT}") from None
        path = Path(ICASSP_2022_MODEL_PATH).parent / "nmp.onnx"
        if not path.is_file():
            raise TranscriberMissing(f"{path} is missing from the basic-pitch install: {EVAL_HINT}")
        self.model = Model(path)

    def __call__(self, pcm: np.ndarray, sr: int) -> Notes:
        import contextlib
        import io
        import tempfile
        from pathlib import Path

        import soundfile as sf
        from basic_pitch.inference import predict

        with tempfile.TemporaryDirectory() as d:  # basic-pitch reads a file (librosa.load)
            wav = Path(d) / "x.wav"
            sf.write(wav, np.clip(pcm, -1, 1), sr, subtype="PCM_16")
            with contextlib.redirect_stdout(io.StringIO()):
                _, _, events = predict(str(wav), self.model)
        if not events:
            return Notes(np.zeros(0), np.zeros(0), np.zeros(0))
        ev = np.array([(e[0], e[1], e[2]) for e in events], np.float64)
        return Notes.from_midi_pitches(ev[:, 0], ev[:, 1], ev[:, 2])


@functools.cache
def transcriber() -> BasicPitch:
    return BasicPitch()


def listen(ref: np.ndarray, est: np.ndarray, sr: int, ref_notes: Notes | None, transcribe=None) -> dict:
    """Every witness figure of `est` against `ref` (and `ref_notes`, the source MIDI's notes
    over the same span; None: scored against the transcription of `ref` instead)."""
    out = {
        "lsd_db": round(log_spectral_distance(ref, est, sr), 3),
        "chroma": round(chroma_similarity(ref, est, sr), 4),
    }
    if transcribe is not None:
        truth = ref_notes if ref_notes is not None else transcribe(ref, sr)
        out["note_f1"] = note_f1(truth, transcribe(est, sr))["f1"]
    return out


def nan_mean(values) -> float:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else float("nan")
