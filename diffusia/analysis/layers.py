"""Layer types of a diffusers U-Net (for aggregating per-layer analyses) and per-layer storage bytes."""

from __future__ import annotations

import fnmatch

import torch

from diffusia.quant.precisions import FLOAT_PLANS, get_precision

# (type, patterns), first match wins: time_emb_proj lives inside resnets, so it comes first.
LAYER_TYPE_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("time-embedding projection", ("*time_emb_proj*",)),
    ("time embedding", ("time_embedding.*", "add_embedding*", "class_embedding*")),
    ("resnet shortcut", ("*resnets.*.conv_shortcut",)),
    ("resnet conv", ("*resnets.*.conv1", "*resnets.*.conv2")),
    ("attention q/k/v", ("*.to_q", "*.to_k", "*.to_v")),
    ("attention out", ("*.to_out.0",)),
    ("feed-forward", ("*.ff.net.*",)),
    ("proj_in/proj_out", ("*.proj_in", "*.proj_out")),
    ("down/up-sampling", ("*downsamplers.*.conv", "*upsamplers.*.conv")),
    ("conv_in/conv_out", ("conv_in", "conv_out")),
)
LAYER_TYPES = tuple(t for t, _ in LAYER_TYPE_PATTERNS) + ("other",)


def layer_type(name: str) -> str:
    """The aggregation type of a U-Net layer name, e.g. `resnet conv`, `attention q/k/v`, else `other`."""
    for kind, patterns in LAYER_TYPE_PATTERNS:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return kind
    return "other"


def weight_bytes(
    weight_shape: list[int] | tuple[int, ...], precision: str, float_bytes: int = 4, group_size: int = 64
) -> float:
    """Bytes of a layer's weight stored at `precision` (its registered formula, see `quant.precisions`);
    fp32: 4 per weight, keep: `float_bytes`."""
    shape = tuple(int(d) for d in weight_shape)
    if precision in FLOAT_PLANS:
        return float(4 if precision == "fp32" else float_bytes) * int(torch.Size(shape).numel())
    return float(get_precision(precision).weight_bytes(shape, group_size))


def extra_bytes(precision: str, timestep_groups: int = 1) -> float:
    """Bytes of the activation quantization parameters a layer adds (range, scale, zero point per group)."""
    return 0.0 if precision in FLOAT_PLANS else get_precision(precision).extra_bytes(timestep_groups)
