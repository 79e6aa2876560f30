"""Per-channel whitening of a VAE's latent space, folded exactly into its 1x1 quant convolutions.

Diffusion trains best on latents with zero mean and unit variance per channel. Stable Diffusion's pipelines only
divide by one `scaling_factor`, so instead of a shift the encoder's `quant_conv` is rewritten to emit
`(z - mean) / std` and the decoder's `post_quant_conv` to undo it: decoding is unchanged, no pipeline code changes.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def whiten_latent_space(vae, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the per-channel mean/std of `latents` (N,C,H,W, unscaled encoder means) into `vae`; sets
    `scaling_factor` to 1. Returns (mean, std) that were folded."""
    if vae.quant_conv is None or vae.post_quant_conv is None:
        raise ValueError("whiten_latent_space needs a VAE with quant_conv and post_quant_conv")
    mean = latents.mean(dim=(0, 2, 3)).double()
    std = latents.std(dim=(0, 2, 3)).double()
    c = mean.numel()
    enc, dec = vae.quant_conv, vae.post_quant_conv
    w, b = enc.weight.double(), enc.bias.double()  # (2C, 2C, 1, 1): rows [0, C) mean, [C, 2C) log-variance
    w[:c] /= std.view(-1, 1, 1, 1)
    b[:c] = (b[:c] - mean) / std
    b[c:] -= 2 * std.log()
    enc.weight.copy_(w), enc.bias.copy_(b)
    w, b = dec.weight.double(), dec.bias.double()  # (C, C, 1, 1): input channel j gets z_j = std_j z'_j + mean_j
    dec.bias.copy_(b + (w[:, :, 0, 0] @ mean))
    dec.weight.copy_(w * std.view(1, -1, 1, 1))
    vae.register_to_config(scaling_factor=1.0)
    return mean.float(), std.float()
