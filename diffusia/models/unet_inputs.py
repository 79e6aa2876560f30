"""Example inputs of a `UNet2DConditionModel` from its config alone: SD 1.x/2.x take (sample, timestep, text
embeddings); SDXL (`addition_embed_type == "text_time"`) also takes pooled text embeddings and six size/crop ids."""

from __future__ import annotations

import torch

from diffusia.errors import DiffusiaError

TOKENS = 77  # CLIP's context length
ADDED_INPUTS = ("text_embeds", "time_ids")  # SDXL's added conditioning (`added_cond_kwargs`)


def text_embeds_dim(config) -> int:
    """Width of SDXL's pooled text embeddings: the added embedding's input less the six embedded time ids."""
    return config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim


def added_cond(config, batch: int, generator: torch.Generator | None = None) -> dict | None:
    """`added_cond_kwargs` for a U-Net that needs them (SDXL), else None."""
    kind = getattr(config, "addition_embed_type", None)
    if kind is None:
        return None
    if kind != "text_time":
        raise DiffusiaError(
            f"U-Nets with addition_embed_type={kind!r} are not supported: diffusia handles SD 1.x, "
            "SD 2.x and SDXL (text_time) U-Nets"
        )
    size = config.sample_size * 8  # pixel size of the latent, as the SDXL pipeline's default time ids
    time_ids = torch.tensor([size, size, 0, 0, size, size], dtype=torch.float32).repeat(batch, 1)
    return {"text_embeds": torch.randn(batch, text_embeds_dim(config), generator=generator), "time_ids": time_ids}


def example_unet_inputs(
    config,
    batch: int = 2,
    timestep: int = 500,
    seed: int = 0,
    tokens: int = TOKENS,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    max_side: int | None = None,
) -> dict:
    """Keyword inputs of a U-Net forward (`unet(**inputs)`): random sample and conditioning drawn from `seed`,
    int64 `timestep`s; `added_cond_kwargs` only for SDXL. The latent is the config's `sample_size`, each side
    capped at `max_side` if given (a multiple of 8 keeps every U-Net level whole)."""
    g = torch.Generator().manual_seed(seed)
    size = config.sample_size if isinstance(config.sample_size, int) else tuple(config.sample_size)
    h, w = (size, size) if isinstance(size, int) else size
    if max_side is not None:
        h, w = min(h, max_side), min(w, max_side)
    inputs = dict(
        sample=torch.randn(batch, config.in_channels, h, w, generator=g),
        timestep=torch.tensor([timestep] * batch, dtype=torch.int64),
        encoder_hidden_states=torch.randn(batch, tokens, config.cross_attention_dim, generator=g),
    )
    added = added_cond(config, batch, g)
    if added is not None:
        inputs["added_cond_kwargs"] = added

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

    return {k: ({n: move(t) for n, t in v.items()} if isinstance(v, dict) else move(v)) for k, v in inputs.items()}
