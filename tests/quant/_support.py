"""Shared test helpers: a tiny seeded U-Net, seeded inputs, relative L2 error."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()


def inputs(seed: int, t: int = 500, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents, timesteps, encoder hidden states) for the tiny U-Net."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, 16, 16, generator=g),
        torch.tensor([t] * batch),
        torch.randn(batch, 7, 32, generator=g),
    )


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
