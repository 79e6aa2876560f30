"""Model configurations: the embedded `tiny` pipeline and the exact Stable Diffusion v1.5, 2.1 and XL architectures
(built with random weights by `build_pipeline`, for the scale benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field

SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

# SD v1.5 block structure, narrower: CrossAttnDown x3 + Down, UNetMidBlock2DCrossAttn, Up + CrossAttnUp x3.
# Heads of width 16 (SD v1.5: 8 heads of 40-160): narrower heads make CPU attention dominate training
# (benchmarks/train_step.py).
TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(32, 64, 96, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=96,
    attention_head_dim=(2, 4, 6, 8),
    norm_num_groups=32,
)
# 32x32 RGB images, one downsampling: 16x16x4 latents.
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    sample_size=32,
    layers_per_block=1,
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    norm_num_groups=8,
)
TINY_TEXT = dict(
    vocab_size=49408,
    hidden_size=96,
    intermediate_size=384,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=96,
)

# Stable Diffusion v1.5 (runwayml/stable-diffusion-v1-5) component configs.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    sample_size=512,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
    projection_dim=768,
)


# Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1): 768 px, v-prediction, OpenCLIP ViT-H text encoder.
SD21_UNET = dict(
    SD15_UNET,
    sample_size=96,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    upcast_attention=True,
)
SD21_VAE = dict(SD15_VAE, sample_size=768)
SD21_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
    projection_dim=512,
)

# Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0): two text encoders (CLIP ViT-L, OpenCLIP
# ViT-bigG with projection), added conditioning on pooled text and size/crop ids (`add_embedding`).
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
SDXL_VAE = dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_TEXT = dict(SD15_TEXT, bos_token_id=0, eos_token_id=2, pad_token_id=1)
SDXL_TEXT_2 = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
    projection_dim=1280,
)

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class Architecture:
    """A UNet2DCondition pipeline as component configs; `build_pipeline` makes it with seeded random weights."""

    pipeline: str  # diffusers pipeline class
    unet: dict
    vae: dict
    text: dict
    text_2: dict | None = None  # SDXL's second text encoder (CLIPTextModelWithProjection)
    scheduler: dict = field(default_factory=lambda: dict(SD_BETAS, steps_offset=1))
    pad_tokens: tuple[str, ...] = (EOS,)  # one per tokenizer


SD15 = Architecture("StableDiffusionPipeline", SD15_UNET, SD15_VAE, SD15_TEXT)
SD21 = Architecture(
    "StableDiffusionPipeline",
    SD21_UNET,
    SD21_VAE,
    SD21_TEXT,
    scheduler=dict(SD_BETAS, steps_offset=1, prediction_type="v_prediction"),
    pad_tokens=("!",),
)
SDXL = Architecture("StableDiffusionXLPipeline", SDXL_UNET, SDXL_VAE, SDXL_TEXT, SDXL_TEXT_2, pad_tokens=(EOS, "!"))


def build_pipeline(arch: Architecture, seed: int = 0, dtype=None):
    """The pipeline of `arch` with random weights (torch seed `seed`), DPM-Solver scheduler, no safety checker."""
    import inspect

    import diffusers
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from diffusia.models.tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    parts = dict(
        unet=UNet2DConditionModel(**arch.unet),
        vae=AutoencoderKL(**arch.vae),
        text_encoder=CLIPTextModel(CLIPTextConfig(**arch.text)),
        scheduler=DPMSolverMultistepScheduler(**arch.scheduler),
        tokenizer=clip_tokenizer(arch.pad_tokens[0]),
    )
    if arch.text_2 is not None:
        parts.update(
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**arch.text_2)),
            tokenizer_2=clip_tokenizer(arch.pad_tokens[-1]),
        )
    cls = getattr(diffusers, arch.pipeline)
    params = inspect.signature(cls.__init__).parameters
    parts.update({k: None for k in ("safety_checker", "feature_extractor", "image_encoder") if k in params})
    parts.update({k: False for k in ("requires_safety_checker", "add_watermarker") if k in params})
    pipe = cls(**parts)
    return pipe.to(dtype=dtype) if dtype is not None else pipe


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
