import torch
from diffusers import AutoencoderKL

from diffusia.models.latents import whiten_latent_space


def _vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
        latent_channels=4,
    ).eval()


def test_whitening_centres_latents_and_keeps_decoding():
    vae = _vae()
    with torch.no_grad():
        vae.quant_conv.bias[1] += 3.0  # an off-centre channel, like a trained VAE's
        x = torch.rand(6, 3, 16, 16) * 2 - 1
        before = vae.encode(x).latent_dist.mean
        decoded_before = vae.decode(before).sample
        whiten_latent_space(vae, before)
        after = vae.encode(x).latent_dist
        decoded_after = vae.decode(after.mean).sample
    assert torch.allclose(after.mean.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(after.mean.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4)
    assert torch.allclose(decoded_after, decoded_before, atol=1e-4)
    assert vae.config.scaling_factor == 1.0


def test_whitening_rescales_the_posterior_spread():
    vae = _vae()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        _, std = whiten_latent_space(vae, dist.mean)
        new = vae.encode(x).latent_dist
    assert torch.allclose(new.std, dist.std / std.view(1, -1, 1, 1), rtol=1e-4)
