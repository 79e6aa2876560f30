"""PSNR in dB for batches of images."""

from __future__ import annotations

import torch


@torch.no_grad()
def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, cap_db: float | None = None) -> torch.Tensor:
    """Per-image PSNR of two (N,C,H,W) batches in [0, data_range]; returns a float64 tensor (N,).

    Identical images give `inf` (the exact value, as skimage does). Pass `cap_db` (e.g. 100.0) to clamp
    them to a finite value when the result is averaged over a set.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (N,C,H,W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    diff = x.detach().to("cpu", torch.float64) - y.detach().to("cpu", torch.float64)
    mse = diff.pow(2).mean(dim=(1, 2, 3))
    out = 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> inf, without a warning
    return out if cap_db is None else out.clamp(max=cap_db)
