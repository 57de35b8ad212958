"""Listening witnesses: figures that see the notes and the sound, built on nothing the codec
or the LM trains toward (musicnn is the LARA target, so it cannot be the only judge).

* **note F1**: an automatic transcription of the audio (Basic Pitch, Spotify, Apache-2.0: its
  ONNX model on onnxruntime, from the `[eval]` extra) scored against the source MIDI with
  mir_eval (onsets within 50 ms, pitch within 50 cents, offsets ignored);
* **large-window log-spectral distance** (dB): 4096-sample STFT (5.9 Hz bins at 24 kHz) on
  a linear frequency axis, where single partials are resolved (64-band mels are not);
* **chroma similarity**: frame-wise cosine of 12 pitch-class profiles from the same STFT;
* **transcription statistics** (`note_stats`): notes per second, key clarity (the best
  correlation of the duration-weighted pitch-class profile with the 24 Krumhansl-Kessler key
  profiles), pitch-class entropy and the median note length (a held drone transcribes as
  few long notes), of generated audio beside held-out renders;
* **an embedding trained on other data** (`SfxEmbedding`): aiSFX (Ma and Lerch, ISMIR 2022,
  MIT licence, weights in its PyPI wheel), a CNN trained on sound-effects libraries, for a
  Fréchet distance that neither musicnn nor MoodLane's data shaped, and for which instrument
  a clip sounds like (`heard_as`: the nearest centroid of held-out renders of each instrument).

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
    """Basic Pitch or aiSFX (the `[eval]` extra) is not installed."""


# Krumhansl and Kessler's probe-tone profiles (1982), C major and C minor
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class Notes:
    """Notes in seconds: onsets, offsets, pitches in Hz, and MIDI velocities where the
    transcriber gives an amplitude."""

    onset: np.ndarray
    offset: np.ndarray
    hz: np.ndarray
    velocity: np.ndarray | None = None

    def window(self, start: float, seconds: float) -> Notes:
        """Notes whose onset lies in [start, start + seconds), shifted to start at 0."""
        keep = (self.onset >= start) & (self.onset < start + seconds)
        vel = None if self.velocity is None else self.velocity[keep]
        return Notes(self.onset[keep] - start, np.minimum(self.offset[keep], start + seconds) - start, self.hz[keep], vel)

    def __len__(self) -> int:
        return len(self.onset)

    @property
    def midi(self) -> np.ndarray:
        return np.round(69.0 + 12.0 * np.log2(self.hz / 440.0)).astype(np.int64)

    @classmethod
    def from_midi_pitches(cls, onset, offset, pitch, velocity=None) -> Notes:
        hz = 440.0 * 2.0 ** ((np.asarray(pitch, np.float64) - 69.0) / 12.0)
        vel = None if velocity is None else np.asarray(velocity, np.int64)
        return cls(np.asarray(onset, np.float64), np.asarray(offset, np.float64), hz, vel)


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
        ev = np.array([(e[0], e[1], e[2], e[3]) for e in events], np.float64)  # onset, offset, pitch, amplitude
        return Notes.from_midi_pitches(ev[:, 0], ev[:, 1], ev[:, 2], np.clip(np.round(ev[:, 3] * 127), 1, 127))


def note_stats(notes: Notes, seconds: float) -> dict:
    """What a transcription says about the music: notes per second, key clarity (the best
    Pearson correlation of the duration-weighted pitch-class profile with the 24 major and
    minor Krumhansl-Kessler profiles, 1 for a scale-like profile, near 0 for noise) and the
    pitch-class entropy in bits (0: one pitch class, log2 12 = 3.58: all equally)."""
    if len(notes) == 0:
        return {"notes_per_s": 0.0, "key_clarity": float("nan"), "pc_entropy": float("nan"), "median_note_s": float("nan")}
    midi = notes.midi
    dur = np.maximum(notes.offset - notes.onset, 0.01)
    pc = np.bincount(midi % 12, weights=dur, minlength=12)
    p = pc / pc.sum()
    profiles = [np.roll(prof, k) for prof in (KK_MAJOR, KK_MINOR) for k in range(12)]
    flat = pc.std() <= 1e-6 * pc.mean()  # every pitch class alike: no key at all
    clarity = 0.0 if flat else max(float(np.corrcoef(pc, prof)[0, 1]) for prof in profiles)
    entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return {
        "notes_per_s": round(len(notes) / seconds, 3),
        "key_clarity": round(clarity, 4),
        "pc_entropy": round(entropy, 4),
        "median_note_s": round(float(np.median(notes.offset - notes.onset)), 3),
    }


def judged_emotion(judge, notes: Notes, qpm: float) -> tuple[float, float] | None:
    """The symbolic judge's (valence, arousal) of transcribed notes (`SymbolicJudge`: attributes
    of EMOPIA/VGMIDI MIDI, no audio model); None for no notes. Velocity 80 where the
    transcription has none."""
    if len(notes) == 0:
        return None
    from moodlane.engine.symbolic.notes import NoteArray

    beats = qpm / 60.0
    vel = notes.velocity if notes.velocity is not None else np.full(len(notes), 80, np.int64)
    j = judge.judge(NoteArray(notes.onset * beats, np.maximum(notes.offset - notes.onset, 0.01) * beats, notes.midi, vel, qpm))
    return float(j.valence), float(j.arousal)


def heard_as(embed, sets: dict[str, list[tuple[np.ndarray, int]]], real: dict[str, list[tuple[np.ndarray, int]]]) -> dict:
    """Which instrument the clips ((audio, rate)) of each of `sets` sound like in `embed`'s
    space: the nearest centroid (cosine of clip-mean embeddings) of held-out renders per
    instrument (`real`: instrument -> clips). Returns each set's share of clips per
    instrument, and how often the same rule names the instrument of a real render with that
    render left out of its centroid (the rule's own accuracy; chance is 1 / instruments)."""
    unit = lambda x: x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)  # noqa: E731
    means = {k: np.stack([unit(embed(p, sr).mean(0)) for p, sr in v]) for k, v in real.items() if v}
    if len(means) < 2:
        return {"skipped": "renders of fewer than two instruments"}
    names = sorted(means)
    sums = {k: m.sum(0) for k, m in means.items()}

    def nearest(x: np.ndarray, leave_out: tuple[str, int] | None = None) -> str:
        def centroid(k: str) -> np.ndarray:
            return unit(sums[k] - means[k][leave_out[1]]) if leave_out and leave_out[0] == k else unit(sums[k])

        return max(names, key=lambda k: float(x @ centroid(k)))

    loo = [nearest(m[i], (k, i)) == k for k, m in means.items() if len(m) > 1 for i in range(len(m))]
    out: dict = {
        "renders_per_instrument": {k: len(means[k]) for k in names},
        "rule_accuracy_on_renders": round(float(np.mean(loo)), 3) if loo else None,
        "chance": round(1 / len(names), 3),
    }
    for label, clips in sets.items():
        got = [nearest(unit(embed(p, sr).mean(0))) for p, sr in clips]
        out[label] = {"clips": len(got), "shares": {k: round(got.count(k) / max(len(got), 1), 3) for k in names}}
    return out


class SfxEmbedding:
    """aiSFX's embedding (its X-Sequential-CE CNN, `aisfx` 0.1.2 on PyPI, MIT; the weights ship
    in the wheel): one 512-d vector per 100 frames (2.3 s) of 96 log-mel bands at 44.1 kHz,
    blocks at half overlap, computed as its librosa path does (peak-normalised audio, HTK
    mels, log10(1 + 10^4 x power), its "original" min-max scaling), with time on the first
    axis as its network expects. Installed `--no-deps` by `MOODLANE_EVAL=1 bash
    scripts/setup.sh` (it pins an old numpy and librosa it does not need)."""

    name = "aisfx 0.1.2 (ISMIR 2022, MIT)"
    rate = 44100
    block, hop = 100, 50  # spectrogram frames per embedding, and between embeddings

    def __init__(self) -> None:
        try:
            import torch
            from aisfx.inference import get_path_modelWeights, load_bestModel
        except ImportError as e:
            raise TranscriberMissing(f"the aiSFX embedding is not installed ({e}): MOODLANE_EVAL=1 bash scripts/setup.sh") from None
        # the checkpoint pickles its class counts with numpy scalars: a file from the pinned wheel
        weights, datasets = torch.load(get_path_modelWeights(), map_location="cpu", weights_only=False)
        self.model = load_bestModel(weights, datasets, "cpu")

    def spectrogram(self, pcm: np.ndarray, sr: int) -> np.ndarray:
        import librosa

        y = librosa.resample(np.asarray(pcm, np.float32), orig_sr=sr, target_sr=self.rate) if sr != self.rate else pcm
        y = y / (np.abs(y).max() or 1.0)
        mel = librosa.feature.melspectrogram(
            y=y, sr=self.rate, n_mels=96, norm=1.0, fmin=0.0, fmax=22050.0, htk=True, power=2.0, hop_length=1024, win_length=2048
        )
        return (np.log10(mel * 10000.0 + 1.0) / 9.457798957824707).T.astype(np.float32)  # (frames, 96)

    def __call__(self, pcm: np.ndarray, sr: int) -> np.ndarray:
        """(blocks, 512): one row per 2.3 s block, at half overlap; a clip shorter than a block
        gives one zero-padded block."""
        import torch

        spec = self.spectrogram(pcm, sr)
        starts = range(0, max(len(spec) - self.block, 0) + 1, self.hop)
        pad = np.vstack([spec, np.zeros((self.block, spec.shape[1]), np.float32)])
        blocks = np.stack([pad[i : i + self.block] for i in starts])
        with torch.no_grad():
            return self.model.get_embedding(torch.from_numpy(blocks)).numpy()


@functools.cache
def sfx_embedding() -> SfxEmbedding:
    return SfxEmbedding()


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
