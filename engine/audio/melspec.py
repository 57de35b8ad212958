"""musicnn's input in plain numpy: log-mel patches of 16 kHz audio (n_fft 512, hop 256, 96
Slaney mel bands, power 2, `log10(10000 * S + 1)`), as librosa 0.10 computes them for
musicnn. No librosa at run time; `export/musicnn_to_onnx.py` checks this against librosa.

Pure numpy on purpose: the conversion script imports this file from a side environment.
"""

from __future__ import annotations

import numpy as np

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH = 187  # frames in musicnn's 3 s input (librosa.time_to_frames(3, 16000, 256, 512) + 1)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters with Slaney area normalisation."""
    fft_f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0.0, np.minimum(lower, upper))
    return (w * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]).astype(np.float32)


_FB = mel_filterbank()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def log_mel(pcm: np.ndarray) -> np.ndarray:
    """Mono float audio at 16 kHz -> (frames, 96) float32, frames = 1 + len // 256 (centred)."""
    x = np.pad(np.asarray(pcm, dtype=np.float32), N_FFT // 2)  # librosa 0.10: center, zero padding
    n = 1 + (len(x) - N_FFT) // HOP
    if n <= 0:
        return np.zeros((0, N_MELS), np.float32)
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * _WINDOW, axis=1)) ** 2
    mel = spec.astype(np.float32) @ _FB.T
    return np.log10(10000.0 * mel + 1.0).astype(np.float32)


def patches(mel: np.ndarray, hop_frames: int, length: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows over a log-mel: (N, length, 96) and each window's start frame.
    A clip shorter than one window gives N = 0."""
    if len(mel) < length:
        return np.zeros((0, length, mel.shape[1]), np.float32), np.zeros(0, np.int64)
    starts = np.arange(0, len(mel) - length + 1, max(1, hop_frames))
    idx = starts[:, None] + np.arange(length)[None, :]
    return mel[idx], starts
