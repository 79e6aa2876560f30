"""Quality: identical images, per-category aggregation on hand-made numbers, Frechet distances, fast FD path."""

from __future__ import annotations

import numpy as np
import pytest

from diffusia.eval.metrics.frechet import frechet_distance
from diffusia.eval.quality import PSNR_CAP_DB, aggregate, evaluate_quality, pairwise
from tests.eval.conftest import CHEAP_EXTRACTOR


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def test_identical_images_are_perfect():
    x = _images(3, 32)
    m = pairwise(x, x.copy())
    np.testing.assert_allclose(m["ssim"], 1.0, atol=1e-12)
    np.testing.assert_allclose(m["lpips"], 0.0, atol=1e-6)
    np.testing.assert_array_equal(m["psnr"], PSNR_CAP_DB)


def test_different_images_score_worse_and_small_images_skip_lpips():
    x = _images(2, 32)
    y = np.clip(x + 0.1 * np.random.default_rng(1).standard_normal(x.shape), 0, 1).astype(np.float32)
    m = pairwise(x, y)
    assert (m["ssim"] < 0.99).all() and (m["lpips"] > 0).all() and (m["psnr"] < 30).all()
    assert pairwise(_images(2, 16), _images(2, 16, 1))["lpips"] is None


def test_aggregate_per_category_on_hand_made_numbers():
    per_image = {"ssim": np.array([1.0, 0.5, 0.8]), "psnr": np.array([40.0, 20.0, 30.0]), "lpips": None}
    agg = aggregate(per_image, ["tops", "bags", "tops"])
    assert agg["overall"]["ssim"]["mean"] == pytest.approx(2.3 / 3) and agg["overall"]["ssim"]["n"] == 3
    assert "lpips" not in agg["overall"]
    assert list(agg["per_category"]) == ["tops", "bags"]
    tops, bags = agg["per_category"]["tops"], agg["per_category"]["bags"]
    assert tops["ssim"]["mean"] == pytest.approx(0.9) and tops["ssim"]["n"] == 2
    assert tops["psnr"]["mean"] == pytest.approx(35.0) and tops["psnr"]["std"] == pytest.approx(
        np.std([40, 30], ddof=1)
    )
    assert bags["ssim"]["mean"] == 0.5 and bags["ssim"]["n"] == 1 and bags["ssim"]["std"] == 0.0


def test_evaluate_quality_against_reference_and_real():
    ref = _images(4, 32)
    noisy = np.clip(ref + 0.2 * np.random.default_rng(2).standard_normal(ref.shape), 0, 1).astype(np.float32)
    real = _images(5, 32, seed=9)
    q = evaluate_quality({"fp32": ref, "w8a8": noisy}, ["a", "a", "b", "b"], real=real, feature_net=CHEAP_EXTRACTOR)
    assert q["fd_name"] == "FD-test" and q["images"] == 4 and q["real_images"] == 5
    fp32, w8 = q["variants"]["fp32"], q["variants"]["w8a8"]
    assert fp32["overall"]["ssim"]["mean"] == pytest.approx(1.0) and fp32["overall"]["lpips"]["mean"] < 1e-6
    assert abs(fp32["fd_vs_reference"]) < 1e-9 and w8["fd_vs_reference"] > 0
    assert fp32["fd_vs_real"] > 0 and w8["fd_vs_real"] > 0
    assert set(w8["per_category"]) == {"a", "b"}


def test_low_rank_frechet_matches_sqrtm():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(30, 64)) @ rng.normal(size=(64, 64))
    f2 = rng.normal(size=(25, 64)) @ rng.normal(size=(64, 64)) + 0.3
    exact = frechet_distance(f1, f2, method="sqrtm")
    fast = frechet_distance(f1, f2, method="low-rank")
    assert fast == pytest.approx(exact, rel=1e-6)
    assert frechet_distance(f1, f2) == fast  # auto picks the low-rank path when N < D
    assert abs(frechet_distance(f1, f1, method="low-rank")) < 1e-8
    with pytest.raises(ValueError):
        frechet_distance(f1, f2, method="nope")
