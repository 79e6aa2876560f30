"""Model configurations: the embedded `tiny` pipeline and the exact Stable Diffusion v1.5 architecture."""
from __future__ import annotations

SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

# SD v1.5 block structure, narrower: CrossAttnDown x3 + Down, UNetMidBlock2DCrossAttn, Up + CrossAttnUp x3.
# Heads of width 16 (SD v1.5: 8 heads of 40-160): narrower heads make CPU attention dominate training
# (benchmarks/train_step.py).
TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(32, 64, 96, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=96, attention_head_dim=(2, 4, 6, 8), norm_num_groups=32,
)
# 32x32 RGB images, one downsampling: 16x16x4 latents.
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    norm_num_groups=8,
)
TINY_TEXT = dict(
    vocab_size=49408, hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=96,
)

# Stable Diffusion v1.5 (runwayml/stable-diffusion-v1-5) component configs.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
    pad_token_id=1, projection_dim=768,
)


def build_components(unet_cfg: dict, vae_cfg: dict, text_cfg: dict, seed: int = 0) -> dict:
    """Randomly initialised U-Net, VAE, text encoder and the SD scheduler, from configs."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return dict(
        unet=UNet2DConditionModel(**unet_cfg),
        vae=AutoencoderKL(**vae_cfg),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_cfg)),
        scheduler=DPMSolverMultistepScheduler(**SD_BETAS, steps_offset=1),
    )
