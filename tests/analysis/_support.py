"""Synthetic sensitivity data on a real (micro) U-Net's layer shapes, for the search tests."""

from __future__ import annotations

import random

import torch
from diffusers import UNet2DConditionModel

from diffusia.analysis.layers import layer_type, weight_bytes
from diffusia.config import get_preset
from diffusia.quant.policy import default_plan, layer_names
from tests.conftest import MICRO_UNET


def micro_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**MICRO_UNET).eval()


def fake_sensitivity(unet, seed: int = 0) -> dict:
    """A sensitivity.json-shaped dict: random per-layer SQNRs (w4 < w8a8 < w8 < fp16, w8a8 < w8a8x2) and layer
    timings (w8a8x2 slower than w8a8)."""
    rng = random.Random(seed)
    rows = []
    for name, p in default_plan(unet, "w8a8").items():
        if p == "keep":
            continue
        m = unet.get_submodule(name)
        base = rng.uniform(20, 45)
        keep_t = rng.uniform(1e-4, 1e-3)
        rows.append(
            dict(
                name=name,
                type=layer_type(name),
                precision="w8a8",
                weight_shape=list(m.weight.shape),
                params=m.weight.numel(),
                bias_params=0 if m.bias is None else m.bias.numel(),
                fp32_weight_bytes=weight_bytes(m.weight.shape, "keep", 4),
                sqnr_only_db=base,
                sqnr_all_but_db=base,
                gain_db=1.0,
                lpips_only=None,
                sqnr_only_db_by_precision={
                    "w8a8": base,
                    "w8": base + rng.uniform(0, 4),
                    "w4": base - rng.uniform(8, 20),
                    "fp16": base + 40,
                },
                time_s={
                    "keep": keep_t,
                    "w8a8": keep_t * rng.uniform(0.5, 1.2),
                    "w8": keep_t * 1.3,
                    "w4": keep_t * 1.6,
                    "fp16": keep_t * 1.1,
                },
            )
        )
    for r in rows:  # drawn after the rest, which stays as it was
        r["sqnr_only_db_by_precision"]["w8a8x2"] = r["sqnr_only_db"] + rng.uniform(8, 16)
        r["time_s"]["w8a8x2"] = r["time_s"]["w8a8"] * rng.uniform(1.5, 2.0)
    rows.sort(key=lambda r: r["sqnr_only_db"])
    total = sum(t.numel() * t.element_size() for t in list(unet.parameters()) + list(unet.buffers()))
    return {
        "format": "diffusia.sensitivity",
        "version": 1,
        "simulated": True,
        "recipe": get_preset("w8a8").to_dict(),
        "sqnr_all_db": min(r["sqnr_only_db"] for r in rows) - 10,
        "unet": dict(
            total_bytes=total,
            float_bytes=4,
            layers=layer_names(unet),
            candidate_weight_bytes=sum(r["fp32_weight_bytes"] for r in rows),
            int4_group_size=64,
            timestep_groups=1,
        ),
        "timing": dict(image_s_fp32=1.0, unet_calls_per_image=25.0),
        "layers": rows,
    }
