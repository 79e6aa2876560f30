"""Layer types of a diffusers U-Net (for aggregating per-layer analyses) and per-layer storage bytes."""
from __future__ import annotations

import fnmatch

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


def int4_padded_cols(in_cols: int, group_size: int) -> int:
    return -(-in_cols // group_size) * group_size


def weight_bytes(weight_shape: list[int] | tuple[int, ...], precision: str, float_bytes: int = 4,
                 group_size: int = 64) -> float:
    """Bytes of a layer's weight stored at `precision`.

    int8 (w8a8, w8a8x2, w8): 1 byte/weight + a float32 scale per output channel; int4 (w4): 0.5 byte/weight over the
    input columns padded to `group_size` + a float16 scale per group; fp16/bf16: 2; keep/fp32: `float_bytes`.
    """
    out = int(weight_shape[0])
    cols = 1
    for d in weight_shape[1:]:
        cols *= int(d)
    n = out * cols
    if precision in ("w8a8", "w8a8x2", "w8"):
        return n + 4.0 * out
    if precision == "w4":
        padded = int4_padded_cols(cols, group_size)
        return out * padded / 2 + 2.0 * out * (padded // group_size)
    if precision in ("fp16", "bf16"):
        return 2.0 * n
    if precision == "fp32":
        return 4.0 * n
    if precision == "keep":
        return float(float_bytes) * n
    raise ValueError(f"unknown precision {precision!r}")


def extra_bytes(precision: str, timestep_groups: int = 1) -> float:
    """Bytes of the activation quantization parameters a W8A8 layer adds (range, scale, zero point per group)."""
    return 16.0 * timestep_groups if precision in ("w8a8", "w8a8x2") else 0.0
