"""Statistics the evaluations share: Fréchet distance and bootstrap intervals."""

from __future__ import annotations

import numpy as np


def frechet(a: np.ndarray, b: np.ndarray, ridge: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two sets of rows (N, D). A small ridge on
    the covariances (as FID implementations add when they must) keeps singular ones, such as
    those of histograms that sum to 1, well defined."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    eye = ridge * np.eye(a.shape[1])
    s1, s2 = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def bootstrap_ci(stat, groups: list[np.ndarray], reps: int = 1000, seed: int = 0) -> list[float | None]:
    """95 % interval of `stat(rows)` over `groups` (arrays of row indices, e.g. one per grid
    point with all its seeds) resampled with replacement; [None, None] where undefined."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        pick = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        v = stat(pick)
        if v is not None and np.isfinite(v):
            vals.append(v)
    if len(vals) < reps // 2:
        return [None, None]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return [round(float(lo), 3), round(float(hi), 3)]
