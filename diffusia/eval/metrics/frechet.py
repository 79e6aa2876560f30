"""Frechet distance between two sets of features (the formula of FID, on any feature network)."""
from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import linalg

from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (ddof=1) of an (N, D) feature array, in float64."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise DiffusiaError(f"a Frechet distance needs an (N, D) feature array with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise DiffusiaError("features contain NaN or inf; check the generated images")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are expected; handled below
        return linalg.sqrtm(a)


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), computed as pytorch-fid does.

    If sqrt(S1 S2) is not finite (singular covariances), `eps` is added to both diagonals; a
    negligible imaginary part from round-off is dropped, a large one raises DiffusiaError.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: {mu1.shape}, {mu2.shape}, {s1.shape}, {s2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        log.warning("Frechet distance: singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(len(s1)) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            worst = np.abs(covmean.imag).max()
            raise DiffusiaError(f"Frechet distance: sqrt(S1 S2) has an imaginary part of {worst:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature arrays."""
    mu1, s1 = feature_stats(feats1)
    mu2, s2 = feature_stats(feats2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sizes differ: {mu1.size} vs {mu2.size}")
    return frechet_distance_from_stats(mu1, s1, mu2, s2, eps=eps)
