"""Tiny seeded random SD 2.x (v-prediction) and SDXL pipelines, shaped as diffusers' own pipeline tests build
them: every architectural feature of the real model, a few thousand parameters per block."""

from __future__ import annotations

from dataclasses import replace

from diffusia.models.architectures import EOS, SD_BETAS, Architecture, build_pipeline
from tests.conftest import MICRO_UNET, MICRO_VAE

TINY_VAE = MICRO_VAE  # the micro pipeline's VAE (tests/conftest.py)
TINY_TEXT = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="gelu",
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
    projection_dim=32,
)
# SD 2.x: linear projections in the transformers, v-prediction.
TINY_SD2 = Architecture(
    "StableDiffusionPipeline",
    dict(MICRO_UNET, attention_head_dim=(2, 4), use_linear_projection=True),  # the micro U-Net, SD 2.x-style
    TINY_VAE,
    TINY_TEXT,
    scheduler=dict(SD_BETAS, steps_offset=1, prediction_type="v_prediction"),
    pad_tokens=("!",),
)
# SDXL: two text encoders (hidden states concatenated: 32 + 32), added conditioning of 6 time ids x 8 + 32 pooled.
TINY_SDXL = Architecture(
    "StableDiffusionXLPipeline",
    dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        cross_attention_dim=64,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
        norm_num_groups=32,
    ),
    TINY_VAE,
    TINY_TEXT,
    TINY_TEXT,
    pad_tokens=(EOS, "!"),
)
TINY = {"sd2-v": TINY_SD2, "sd2-eps": replace(TINY_SD2, scheduler=dict(SD_BETAS, steps_offset=1)), "sdxl": TINY_SDXL}


def save_tiny(name: str, folder, seed: int = 0):
    """Build the tiny `name` pipeline and save it as a diffusers folder (safetensors); returns the folder."""
    build_pipeline(TINY[name], seed=seed).save_pretrained(folder, safe_serialization=True)
    return folder
