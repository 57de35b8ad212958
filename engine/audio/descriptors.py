"""Simple audio descriptors, the Emotion Predictor's baseline: loudness, onset rate,
spectral centroid and a key-mode profile (Krumhansl-Kessler), per window. Plain numpy."""

from __future__ import annotations

import numpy as np

from moodlane.engine.audio.music_model import Features, resample

SR = 16000
N_FFT, HOP = 2048, 512
# Krumhansl-Kessler key profiles, C major / C minor.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
NAMES = ("loudness_db", "loudness_std", "onset_rate", "centroid_hz", "centroid_std", "major_corr", "minor_corr", "mode", "flatness")


def _chroma_matrix() -> np.ndarray:
    f = np.fft.rfftfreq(N_FFT, 1 / SR)
    m = np.zeros((12, len(f)))
    ok = (f > 55) & (f < 4000)
    pc = np.round(12 * np.log2(f[ok] / 440.0) + 69).astype(int) % 12
    m[pc, np.nonzero(ok)[0]] = 1.0
    return m


_CHROMA = _chroma_matrix()
_WIN = np.hanning(N_FFT).astype(np.float32)


def _key_corr(chroma: np.ndarray) -> tuple[float, float]:
    c = chroma - chroma.mean()
    if not np.any(c):
        return 0.0, 0.0
    maj = max(np.corrcoef(c, np.roll(_MAJOR, k))[0, 1] for k in range(12))
    mnr = max(np.corrcoef(c, np.roll(_MINOR, k))[0, 1] for k in range(12))
    return float(maj), float(mnr)


def descriptors(pcm: np.ndarray, sample_rate: int, like: Features) -> np.ndarray:
    """(N, len(NAMES)) for the windows of `like` (same centres and length), from mono audio
    (resampled to 16 kHz unless it is already)."""
    x = np.pad(resample(pcm, sample_rate, SR), N_FFT // 2)
    n = max(0, 1 + (len(x) - N_FFT) // HOP)
    out = np.zeros((len(like), len(NAMES)), np.float32)
    if n == 0:
        return out
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * _WIN, axis=1)).astype(np.float32)
    power = (mag**2).sum(1)
    f = np.fft.rfftfreq(N_FFT, 1 / SR)
    centroid = (mag * f).sum(1) / np.maximum(mag.sum(1), 1e-9)
    logmag = np.log1p(100 * mag)
    flux = np.maximum(np.diff(logmag, axis=0, prepend=logmag[:1]), 0).sum(1)
    thresh = np.convolve(flux, np.ones(9) / 9, mode="same") * 1.5 + 1e-3
    onsets = (flux > thresh) & (flux >= np.roll(flux, 1)) & (flux >= np.roll(flux, -1))
    flat = np.exp(np.mean(np.log(mag + 1e-9), 1)) / np.maximum(mag.mean(1), 1e-9)
    chroma = mag @ _CHROMA.T
    t = np.arange(n) * HOP / SR
    for i, c in enumerate(like.times):
        sel = (t >= c - like.window_s / 2) & (t < c + like.window_s / 2)
        if not sel.any():
            continue
        db = 10 * np.log10(power[sel] / N_FFT + 1e-10)
        maj, mnr = _key_corr(chroma[sel].sum(0))
        out[i] = (
            db.mean(),
            db.std(),
            onsets[sel].sum() / like.window_s,
            centroid[sel].mean(),
            centroid[sel].std(),
            maj,
            mnr,
            maj - mnr,
            flat[sel].mean(),
        )
    return out
