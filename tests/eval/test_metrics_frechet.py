"""Frechet distance against closed forms and an independent eigen-decomposition reference."""

from __future__ import annotations

import numpy as np
import pytest

from diffusia.errors import DiffusiaError
from diffusia.eval.metrics import frechet_distance
from diffusia.eval.metrics.frechet import frechet_distance_from_stats


def _reference(f1: np.ndarray, f2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) as Tr sqrt(A S2 A) with A = S1^(1/2), all by symmetric eigendecompositions."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(a @ s2 @ a)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_diagonal_gaussians_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    got = frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_sampled_features_match_reference() -> None:
    rng = np.random.default_rng(1)
    f1 = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    f2 = rng.normal(size=(150, 16)) @ rng.normal(size=(16, 16)) + 0.5
    got = frechet_distance(f1, f2)
    assert got == pytest.approx(_reference(f1, f2), rel=1e-6)
    assert got > 1.0


def test_shift_only_gives_squared_shift() -> None:
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(100, 8))
    shift = np.linspace(-1, 1, 8)
    assert frechet_distance(f1, f1 + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    assert abs(frechet_distance(f1, f1)) < 1e-8


def test_singular_covariances_are_handled() -> None:
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(12, 40)), rng.normal(size=(12, 40)) * 1.5  # N < D: rank-deficient covariances
    got = frechet_distance(f1, f2)
    assert np.isfinite(got)
    assert got == pytest.approx(_reference(f1, f2), rel=1e-3)


def test_too_few_samples_rejected() -> None:
    with pytest.raises(DiffusiaError):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


@pytest.mark.parametrize("method", ["sqrtm", "low-rank"])
def test_a_set_against_itself_is_zero_not_a_round_off_below(method) -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(20):  # some seeds round below zero without the clamp (-5.7e-14 in a study report)
        f = rng.standard_normal((12, 40)) * 3.0
        d = frechet_distance(f, f.copy(), method=method)
        assert 0.0 <= d < 1e-8
        hits += d == 0.0
    assert hits > 0
