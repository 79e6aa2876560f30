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
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))  # round-off: >= 0


def _check_features(feats: np.ndarray) -> np.ndarray:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise DiffusiaError(f"a Frechet distance needs an (N, D) feature array with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise DiffusiaError("features contain NaN or inf; check the generated images")
    return f


def frechet_distance_low_rank(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """The Frechet distance exactly, in O(N1 N2 D) instead of O(D^3): for N < D.

    With A = centred(f1)/sqrt(N1-1) and B = centred(f2)/sqrt(N2-1), S1 = A'A and S2 = B'B; the non-zero
    eigenvalues of S1 S2 are those of (AB')(AB')', so Tr sqrt(S1 S2) is the sum of the singular values of AB',
    and Tr S1 = ||A||_F^2.
    """
    f1, f2 = _check_features(feats1), _check_features(feats2)
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a = (f1 - mu1) / np.sqrt(len(f1) - 1)
    b = (f2 - mu2) / np.sqrt(len(f2) - 1)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * tr_covmean))  # round-off: >= 0


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray, eps: float = 1e-6, method: str = "auto") -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature arrays.

    method: "sqrtm" (pytorch-fid's scipy.linalg.sqrtm on D x D), "low-rank" (exact, see
    `frechet_distance_low_rank`; no eps), or "auto": low-rank when both N < D, else sqrtm.
    """
    if method not in ("auto", "sqrtm", "low-rank"):
        raise ValueError(f"unknown method {method!r}: use auto, sqrtm or low-rank")
    shape1, shape2 = np.shape(feats1), np.shape(feats2)
    if method == "auto":
        low = len(shape1) == len(shape2) == 2 and max(shape1[0], shape2[0]) < shape1[1]
        method = "low-rank" if low else "sqrtm"
    if method == "low-rank":
        return frechet_distance_low_rank(feats1, feats2)
    mu1, s1 = feature_stats(feats1)
    mu2, s2 = feature_stats(feats2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sizes differ: {mu1.size} vs {mu2.size}")
    return frechet_distance_from_stats(mu1, s1, mu2, s2, eps=eps)
