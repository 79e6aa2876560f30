"""diffusers -> original LDM (single-file) state dict for SD 1.x-layout pipelines: the inverse of diffusers'
`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and `convert_ldm_clip_checkpoint`, written for the tests
(the round trip through diffusers' loader is what the tests check)."""

from __future__ import annotations

import torch

RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(key: str, prefixes: list[tuple[str, str]], inner: tuple[tuple[str, str], ...] = ()) -> str | None:
    for new, old in prefixes:
        if key.startswith(new):
            rest = key[len(new) :]
            for a, b in inner:
                if rest.startswith(a + "."):
                    rest = b + rest[len(a) :]
            return old + rest
    return None


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    cfg, sd = unet.config, unet.state_dict()
    n = cfg.layers_per_block + 1
    resnets = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ]
    blocks = []
    for i in range(len(cfg.block_out_channels)):
        for j in range(cfg.layers_per_block):
            resnets.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n * i + j + 1}.0."))
            blocks.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n * i + j + 1}.1."))
        blocks.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{n * (i + 1)}.0.op."))
        has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
        for j in range(n):
            resnets.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n * i + j}.0."))
            blocks.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n * i + j}.1."))
        blocks.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{n * i + n - 1}.{2 if has_attn else 1}."))
    resnets += [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.resnets.1.", "middle_block.2.")]
    blocks.append(("mid_block.attentions.0.", "middle_block.1."))
    out = {}
    for k, v in sd.items():
        new = _rename(k, resnets, RESNET) or _rename(k, blocks)
        assert new is not None, f"no LDM name for U-Net tensor {k}"
        out["model.diffusion_model." + new] = v
    return out


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    nb = len(vae.config.block_out_channels)
    prefixes = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for part in ("encoder", "decoder"):
        prefixes += [(f"{part}.mid_block.resnets.{k}.", f"{part}.mid.block_{k + 1}.") for k in range(2)]
    for i in range(nb):
        prefixes += [
            (f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
            (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{nb - 1 - i}.block."),
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{nb - 1 - i}.upsample."),
        ]
    out = {}
    for k, v in vae.state_dict().items():
        attn = _rename(
            k, [(f"{p}.mid_block.attentions.0.", f"{p}.mid.attn_1.") for p in ("encoder", "decoder")], VAE_ATTN
        )
        if attn is not None:
            new = attn
            v = v[:, :, None, None] if v.ndim == 2 else v  # LDM's attention projections are 1x1 convolutions
        else:
            new = (_rename(k, prefixes) or k).replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + new] = v
    return out


def clip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    return {
        "cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in text_encoder.state_dict().items()
    }


def pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """One original-layout state dict (U-Net, VAE, CLIP text encoder) of an SD 1.x-layout pipeline."""
    sd = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae), **clip_to_ldm(pipe.text_encoder)}
    return {k: v.contiguous() for k, v in sd.items()}
