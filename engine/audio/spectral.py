"""MoodLane's spectral codec: the STFT magnitude is what carries the notes, so the codec
codes it, and the phase is reconstructed deterministically.

    audio -> |STFT| (n_fft 2048, hop 320: 75 frames/s at 24 kHz, 11.7 Hz bins) -> log
          -> analysis (linear, PCA-initialised) -> ConvNeXt blocks -> residual VQ (8 x 1024)
          -> ConvNeXt blocks -> synthesis (linear, PCA-initialised) -> log |STFT|
          -> fast Griffin-Lim (momentum 0.99, phase-advance start) -> audio

Why this design (see docs/audio/codec.md for the short-run figures of the ones dropped): a
waveform decoder of transposed convolutions trained on 2 cores learns the spectral envelope
over a fixed comb at the frame rate and loses the notes, while Griffin-Lim from the original
magnitude keeps them (note F1 0.85 on the tender bounce with 32 iterations here, the render's
own 0.85). A decoder that predicts a 1025-bin linear-frequency magnitude has every partial as
an output unit, trained by an L1 on log magnitude that sees each harmonic.

The network (codes -> log magnitude) is what trains and what exports to ONNX; the phase
reconstruction (`griffin_lim`) is one deterministic function that the PyTorch and ONNX
paths both call, so they agree to the network's parity. The phase start of frame t and bin k
is 2 pi k hop t / n_fft (a stationary partial's phase advance, from the absolute frame index),
so chunks decoded separately start from the same phase and join without a jump.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlane.engine.audio.codec import CodecRates, _import_encodec

LOG_FLOOR = 1e-4  # magnitudes are normalised so a full-scale sine peaks at 1; -80 dB floor


@dataclass(frozen=True)
class SpectralCodecConfig(CodecRates):
    sample_rate: int = 24000
    n_fft: int = 2048
    hop: int = 320  # 75 frames/s at 24 kHz
    dimension: int = 128  # latent (quantised) and ConvNeXt width
    enc_blocks: int = 4
    dec_blocks: int = 8
    kernel: int = 7  # depthwise kernel (frames)
    mlp: int = 4  # ConvNeXt MLP expansion
    n_q: int = 8
    bins: int = 1024
    bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0)  # kbps: 2, 4, 8 codebooks at 75 frames/s
    lm_codebooks: int = 4
    gl_iters: int = 16  # Griffin-Lim iterations at decode (docs/audio/codec.md: 32 buys note F1 +0.008)
    name: str = "moodlane-spectral-codec"
    kind: str = "spectral"

    @property
    def freq_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def context_frames(self) -> int:
        """Frames on each side that change a frame's decoded magnitude (the decoder's
        receptive field) plus the STFT window's overlap: what a chunk decodes around itself."""
        return (self.kernel // 2) * self.dec_blocks + self.n_fft // (2 * self.hop) + 1


# 8 kHz, 50 frames/s, 6-bit codebooks (0.3 kbps each): for tests.
TINY_SPECTRAL = SpectralCodecConfig(
    sample_rate=8000,
    n_fft=256,
    hop=160,
    dimension=8,
    enc_blocks=1,
    dec_blocks=1,
    kernel=3,
    mlp=2,
    n_q=4,
    bins=64,
    bandwidths=(0.6, 1.2),
    lm_codebooks=2,
    gl_iters=4,
)


class ConvNeXtBlock(nn.Module):
    """Vocos' backbone block over frames: depthwise conv, LayerNorm, pointwise MLP, layer
    scale (small at init, so a stack starts as the identity)."""

    def __init__(self, dim: int, kernel: int, mult: int) -> None:
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, dim * mult)
        self.down = nn.Linear(dim * mult, dim)
        self.scale = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        h = self.dw(x).transpose(1, 2)
        h = self.down(F.gelu(self.up(self.norm(h))))
        return x + (self.scale * h).transpose(1, 2)


def _blocks(cfg: SpectralCodecConfig, n: int) -> nn.Sequential:
    return nn.Sequential(*[ConvNeXtBlock(cfg.dimension, cfg.kernel, cfg.mlp) for _ in range(n)])


def stft_magnitude(x: torch.Tensor, cfg: SpectralCodecConfig) -> torch.Tensor:
    """(B, T) audio -> (B, freq_bins, T // hop + 1) magnitude, a full-scale sine peaking near 1
    (frame f centred on sample f * hop; clips shorter than half a window are zero-padded)."""
    if x.shape[-1] <= cfg.n_fft // 2:  # the centred STFT's reflection needs more than half a window
        x = F.pad(x, (0, cfg.n_fft // 2 + 1 - x.shape[-1]))
    win = torch.hann_window(cfg.n_fft, device=x.device)
    s = torch.stft(x, cfg.n_fft, cfg.hop, window=win, return_complex=True, center=True)
    return s.abs() * (2.0 / win.sum())


def log_magnitude(mag: torch.Tensor) -> torch.Tensor:
    return torch.log(mag + LOG_FLOOR)


def fast_kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means as encodec's codebook init runs it, with distances as one matrix
    product: encodec's own materialises an (N, clusters, dim) difference tensor and takes
    minutes per codebook on 2 cores for a batch of frames; this takes well under a second."""
    gen = torch.Generator(device=samples.device).manual_seed(0)
    n = samples.shape[0]
    idx = (
        torch.randperm(n, generator=gen, device=samples.device)[:num_clusters]
        if n >= num_clusters
        else torch.randint(0, n, (num_clusters,), generator=gen, device=samples.device)
    )
    means = samples[idx].clone()
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        d = (samples * samples).sum(1, keepdim=True) - 2 * samples @ means.T + (means * means).sum(1)[None]
        buckets = d.argmin(dim=1)
        bins = torch.bincount(buckets, minlength=num_clusters)
        sums = torch.zeros_like(means).index_add_(0, buckets, samples)
        means = torch.where((bins == 0)[:, None], means, sums / bins.clamp_min(1)[:, None])
    return means, bins


class SpectralCodecModel(nn.Module):
    """A linear core with non-linear refinements around it:

        log|X| -> analysis (linear, 1025 -> D) -> + ConvNeXt(frames) -> RVQ
               -> + ConvNeXt(frames) -> synthesis (linear, D -> 1025) -> log|X|

    `init_from_pca` sets analysis/synthesis to the principal axes of log-magnitude frames
    (a 128-dim PCA alone keeps note F1 0.77 on the tender bounce) and the blocks start near
    the identity, so training starts from a codec that already carries the notes and learns
    what the quantiser loses, instead of first learning an envelope over many thousand steps.
    """

    def __init__(self, cfg: SpectralCodecConfig) -> None:
        super().__init__()
        enc = _import_encodec()
        self.cfg = cfg
        self.analysis = nn.Linear(cfg.freq_bins, cfg.dimension)
        self.encoder = _blocks(cfg, cfg.enc_blocks)
        self.quantizer = enc.quantization.ResidualVectorQuantizer(dimension=cfg.dimension, n_q=cfg.n_q, bins=cfg.bins)
        self.decoder = _blocks(cfg, cfg.dec_blocks)
        self.synthesis = nn.Linear(cfg.dimension, cfg.freq_bins)
        # the decoded log magnitude's upper bound per bin (`logmag_ceiling`; none: +inf). Not in
        # the weights file: the codec's JSON records it, and `load_codec` sets it.
        self.register_buffer("ceiling", torch.full((cfg.freq_bins,), math.inf), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) audio -> the encoder's input and the decoder's target: log magnitude."""
        return log_magnitude(stft_magnitude(x, self.cfg))

    def embed(self, logmag: torch.Tensor) -> torch.Tensor:
        """(B, freq_bins, F) -> (B, D, F) latent before quantisation."""
        return self.encoder(self.analysis(logmag.transpose(1, 2)).transpose(1, 2))

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, D, F) latent -> (B, freq_bins, F) log magnitude."""
        return self.synthesis(self.decoder(latent).transpose(1, 2)).transpose(1, 2)

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """(B, T) audio -> (K, B, F) codes."""
        return self.quantizer.vq.encode(self.embed(self.features(x)), n_q=n_q)

    def decode_logmag(self, codes: torch.Tensor, bounded: bool = True) -> torch.Tensor:
        """(B, K, F) codes -> (B, freq_bins, F) log magnitude (the part that exports to ONNX),
        held under `ceiling` unless `bounded` is False."""
        logmag = self.synthesize(self.quantizer.vq.decode(codes.transpose(0, 1)))
        return torch.minimum(logmag, self.ceiling[:, None]) if bounded else logmag

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_logmag(codes)

    @torch.no_grad()
    def init_from_pca(self, frames: torch.Tensor, kmeans_frames: int = 60000, iters: int = 10) -> dict:
        """`frames` (N, freq_bins) log magnitudes: PCA for analysis/synthesis, then each
        codebook by k-means on what the codebooks before it leave (residual k-means)."""
        mean = frames.mean(0)
        _, s, v = torch.pca_lowrank(frames - mean, q=self.cfg.dimension, center=False, niter=4)
        a = float(torch.rsqrt((s**2).mean() / max(len(frames) - 1, 1)))  # one scale: unit variance per dim on average
        self.analysis.weight.copy_(v.T * a)
        self.analysis.bias.copy_(-(mean @ v) * a)
        self.synthesis.weight.copy_(v / a)
        self.synthesis.bias.copy_(mean)
        explained = float((s**2).sum() / ((frames - mean) ** 2).sum())
        z = self.embed(frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:kmeans_frames]].T[None])[0].T
        for layer in self.quantizer.vq.layers:
            cb = layer._codebook
            means, bins = fast_kmeans(z, self.cfg.bins, iters)
            cb.embed.copy_(means)
            cb.embed_avg.copy_(means)
            cb.cluster_size.copy_(bins.float())
            cb.inited.fill_(1.0)
            z = z - means[layer.encode(z.T[None]).reshape(-1)]
        return {"pca_variance_explained": round(explained, 4), "frames": len(frames)}


CEILING_MARGIN = 0.5  # log units over the loudest decoded training frame: x1.65 in magnitude, +4.3 dB


@torch.no_grad()
def logmag_ceiling(model: SpectralCodecModel, clips: Iterable[torch.Tensor], margin: float = CEILING_MARGIN) -> torch.Tensor:
    """The decoder's bound: per frequency bin, the largest log magnitude it decodes from the
    tokens of real clips (`clips`: (K, F) codes each), plus `margin`.

    Why: a language model can put together codebook tokens that no real frame has, and the
    decoder's exponential turns them into a roar. LARA-Gen's sad-excited clips reached a log
    magnitude of 4.66, about 100 times the loudest of 40 training clips (-0.04), a saturated
    broadband roar at RMS 0.62 where piano renders sit near 0.03. Real music never needs more
    than what the codec decodes from real music, so the bound costs real clips nothing."""
    peak = None
    for codes in clips:
        frame_max = model.decode_logmag(torch.as_tensor(codes, dtype=torch.long)[None], bounded=False)[0].amax(-1)
        peak = frame_max if peak is None else torch.maximum(peak, frame_max)
    if peak is None:
        raise ValueError("no clips to measure the decoder's ceiling on")
    return peak + margin


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """(B, F, n) windowed frames -> (B, (F - 1) * hop + n) their sum at `hop` apart: one
    strided add per hop that a frame spans (`torch.istft`'s fold is 3x slower here)."""
    b, f, n = frames.shape
    span = -(-n // hop)
    y = frames.new_zeros(b, f + span - 1, hop)
    for j in range(span):
        w = min(hop, n - j * hop)
        y[:, j : j + f, :w] += frames[:, :, j * hop : j * hop + w]
    return y.view(b, -1)[:, : (f - 1) * hop + n]


def griffin_lim(logmag: torch.Tensor, cfg: SpectralCodecConfig, first_frame: int = 0, iters: int | None = None) -> torch.Tensor:
    """(B, freq_bins, F) log magnitude -> (B, (F - 1) * hop) audio by fast Griffin-Lim
    (Perraudin et al. 2013, momentum 0.99). Deterministic: the start phase of bin k in
    absolute frame `first_frame + t` is the phase advance of a partial at the bin's centre.

    The STFT pair is `torch.stft`/`torch.istft`'s (centred, Hann, reflect padding), written
    out so the loop does no more than it must on one core: the window envelope is computed
    once, spectra stay frame-major so each FFT reads contiguous rows, and the projection onto
    the target magnitude multiplies by a real rsqrt (complex abs and division were half the
    time). It agrees with the `torch.istft` loop to float rounding and runs 2-3x faster."""
    iters = cfg.gl_iters if iters is None else iters
    n_fft, hop = cfg.n_fft, cfg.hop
    mag = (torch.exp(logmag.float()) - LOG_FLOOR).clamp_min(0.0) * (n_fft / 4)  # undo the 2 / sum(hann) normalisation
    mag = mag.transpose(1, 2).contiguous()  # (B, F, freq_bins)
    frames = mag.shape[1]
    length = (frames - 1) * hop
    win = torch.hann_window(n_fft, device=mag.device)

    def ola(windowed: torch.Tensor) -> torch.Tensor:  # overlap-added, the centred STFT's padding cut off
        return _overlap_add(windowed, hop)[:, n_fft // 2 : n_fft // 2 + length]

    env = ola((win**2).expand(1, frames, n_fft))
    inv_env = torch.where(env > 1e-11, 1.0 / env, torch.zeros_like(env))

    def istft(spec: torch.Tensor) -> torch.Tensor:
        return ola(torch.fft.irfft(spec, n=n_fft) * win) * inv_env

    def stft(y: torch.Tensor) -> torch.Tensor:
        y = F.pad(y[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
        return torch.fft.rfft(y.unfold(-1, n_fft, hop) * win)

    t = torch.arange(first_frame, first_frame + frames, device=mag.device, dtype=torch.float64)[:, None]
    k = torch.arange(mag.shape[-1], device=mag.device, dtype=torch.float64)[None]
    phase = torch.remainder(2 * math.pi * k * hop / n_fft * t, 2 * math.pi).float()
    spec = torch.polar(mag, phase.expand_as(mag))
    prev = torch.zeros_like(spec)
    for _ in range(iters):
        proj = stft(istft(spec))
        acc = prev.mul_(-0.99).add_(proj, alpha=1.99)  # proj + 0.99 (proj - prev), in place
        prev = proj
        # the projection's phase at the target magnitude (0 where either is 0)
        spec = acc.mul_(torch.rsqrt(acc.real.square() + acc.imag.square() + 1e-16).mul_(mag))
    return istft(spec)
