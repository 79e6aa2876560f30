"""SSIM (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5, on batches of images."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

K1 = 0.01
K2 = 0.03
SIGMA = 1.5
WIN_SIZE = 11  # 2 * int(3.5 * sigma + 0.5) + 1, the window skimage uses for sigma=1.5
CHUNK_ELEMENTS = 1 << 22  # images per chunk: about 4M values (32 MB in float64) per intermediate


@functools.cache
def _gaussian_1d(size: int = WIN_SIZE, sigma: float = SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, 'valid' region only (no padding)."""
    c = x.shape[1]
    g = _gaussian_1d().to(x)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (N,C,H,W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < WIN_SIZE:
        raise ValueError(f"SSIM needs images of at least {WIN_SIZE}x{WIN_SIZE}, got {tuple(x.shape[-2:])}")


def _ssim_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = _blur(x), _blur(y)
    var_x = _blur(x * x) - mu_x**2
    var_y = _blur(y * y) - mu_y**2
    cov = _blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


@torch.no_grad()
def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, chunk: int | None = None) -> torch.Tensor:
    """Per-image SSIM of two (N,C,H,W) batches in [0, data_range]; returns a float64 tensor (N,).

    Population (co)variances, averaged over channels and over the pixels at least 5 px from the border:
    the same numbers as skimage's `structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1)`.
    """
    _check_pair(x, y)
    x, y = x.detach().to("cpu", torch.float64), y.detach().to("cpu", torch.float64)
    chunk = chunk or max(1, CHUNK_ELEMENTS // x[0].numel())
    parts = [_ssim_chunk(x[i : i + chunk], y[i : i + chunk], data_range) for i in range(0, len(x), chunk)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)
