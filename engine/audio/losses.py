"""Codec losses and measures: multi-scale mel distance (EnCodec's reconstruction loss and the
quality figure reported beside Opus) and SI-SNR."""

from __future__ import annotations

import numpy as np
import torch

from moodlane.engine.audio.melspec import mel_filterbank

SCALES = (256, 512, 1024, 2048)  # STFT sizes; hop = size // 4, 64 mel bands each
_FB: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _mel(x: torch.Tensor, n_fft: int, sample_rate: int, n_mels: int = 64) -> torch.Tensor:
    key = (n_fft, sample_rate, x.device)
    if key not in _FB:
        _FB[key] = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)).to(x.device)
    win = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.float(), n_fft, hop_length=n_fft // 4, window=win, return_complex=True).abs()
    return _FB[key] @ spec  # (B, mels, frames), magnitude mel


def multiscale_mel_loss(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """EnCodec's frequency-domain loss: L1 on mel magnitudes + L2 on log mels, over scales."""
    total = x.new_zeros(())
    for n in SCALES:
        mx, my = _mel(x, n, sample_rate), _mel(y, n, sample_rate)
        total = total + (mx - my).abs().mean() + (torch.log(mx + 1e-5) - torch.log(my + 1e-5)).pow(2).mean()
    return total / len(SCALES)


@torch.no_grad()
def mel_distance(x: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    """Multi-scale mel distance: mean |log10 mel_x - log10 mel_y| over scales (lower is better;
    the measure DAC and EnCodec-style papers report)."""
    tx = torch.as_tensor(np.asarray(x, np.float32)).reshape(1, -1)
    ty = torch.as_tensor(np.asarray(y, np.float32)).reshape(1, -1)
    n = min(tx.shape[1], ty.shape[1])
    tx, ty = tx[:, :n], ty[:, :n]
    d = [(torch.log10(_mel(tx, s, sample_rate) + 1e-5) - torch.log10(_mel(ty, s, sample_rate) + 1e-5)).abs().mean() for s in SCALES]
    return float(torch.stack(d).mean())


def si_snr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant signal-to-noise ratio in dB (higher is better)."""
    n = min(len(ref), len(est))
    r = np.asarray(ref[:n], np.float64) - np.mean(ref[:n])
    e = np.asarray(est[:n], np.float64) - np.mean(est[:n])
    target = np.dot(e, r) / max(np.dot(r, r), 1e-12) * r
    noise = e - target
    return float(10 * np.log10(max(np.dot(target, target), 1e-12) / max(np.dot(noise, noise), 1e-12)))
