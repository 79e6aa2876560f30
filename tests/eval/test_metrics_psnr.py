"""PSNR: closed form, skimage, identical images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from diffusia.eval.metrics import psnr


def test_closed_form() -> None:
    x = torch.zeros(2, 3, 8, 8)
    y = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])
    np.testing.assert_allclose(psnr(x, y).numpy(), [20.0, 40.0], atol=1e-9)


def test_matches_skimage() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 24, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = [peak_signal_noise_ratio(a.double().numpy(), b.double().numpy(), data_range=1) for a, b in zip(x, y)]
    np.testing.assert_allclose(psnr(x, y).numpy(), ref, rtol=1e-6)


def test_identical_is_inf_or_capped() -> None:
    x = torch.rand(2, 3, 8, 8)
    y = x.clone()
    y[1, 0, 0, 0] += 0.5
    out = psnr(x, y)
    assert math.isinf(out[0].item()) and out[0] > 0
    assert out[1].item() == pytest.approx(10 * math.log10(3 * 64 / 0.25))
    capped = psnr(x, y, cap_db=100.0)
    assert capped[0].item() == 100.0 and capped[1].item() == out[1].item()
