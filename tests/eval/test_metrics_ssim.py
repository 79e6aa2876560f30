"""SSIM against skimage's reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, transform
from skimage.metrics import structural_similarity

from diffusia.eval.metrics import ssim


def _reference(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)
    a, b = x.permute(0, 2, 3, 1).double().numpy(), y.permute(0, 2, 3, 1).double().numpy()
    return np.array([structural_similarity(p, q, **kw) for p, q in zip(a, b)])


def _photo(size: int) -> torch.Tensor:
    img = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1).float()


def test_random_images_match_skimage() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 37, 45, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y[0] = torch.rand(3, 37, 45, generator=g)  # an unrelated pair, SSIM near 0
    got, ref = ssim(x, y).numpy(), _reference(x, y)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert ref[0] < 0.1 < 0.3 < ref[1]  # the pairs are really different and really similar


def test_structured_images_match_skimage() -> None:
    img = _photo(64)
    blurred = torch.nn.functional.avg_pool2d(img[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    shifted = torch.roll(img, shifts=(2, -3), dims=(1, 2))
    darker = img * 0.7 + 0.1
    x = torch.stack([img, img, img])
    y = torch.stack([blurred, shifted, darker])
    got, ref = ssim(x, y).numpy(), _reference(x, y)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert 0.01 < ref.min() and ref.max() < 0.99  # none of the pairs is trivially identical


def test_identical_is_one_and_small_images_rejected() -> None:
    x = _photo(32)[None]
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 10, 10), torch.rand(1, 3, 10, 10))
