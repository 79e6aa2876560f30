"""Shared test helpers: a tiny seeded U-Net, inputs, and a reference-kernel fallback.

If diffusia.quant.kernels (or cpu) is not in the tree yet, a small reference implementation of its
contract is installed so real mode can be tested; once the real module exists it is used instead.
"""
from __future__ import annotations

import importlib
import sys
import types

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from diffusia.quant import qmath


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    ).eval()


def inputs(seed: int, t: int = 500, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 16, 16, generator=g), torch.tensor([t] * batch),
            torch.randn(batch, 7, 32, generator=g))


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- reference kernels (fallback only)
def _act(x, s, zp, qmax):
    return torch.clamp(torch.round(x / s) + zp, 0, qmax) - zp


class _Int8Conv2d:
    def __init__(self, w, ws, b, stride, padding, dilation, groups, act_scale, act_zero_point, act_qmax=127):
        self.w, self.ws, self.b, self.conv = w, ws, b, (stride, padding, dilation, groups)
        self.s, self.zp, self.qmax = act_scale, act_zero_point, act_qmax

    def __call__(self, x):
        y = F.conv2d(_act(x, self.s, self.zp, self.qmax), self.w.float(), None, *self.conv)
        y = y * (self.s * self.ws)[None, :, None, None]
        return y if self.b is None else y + self.b[None, :, None, None]


class _Int8Linear:
    def __init__(self, w, ws, b, act_scale, act_zero_point, act_qmax=127):
        self.w, self.ws, self.b, self.s, self.zp, self.qmax = w, ws, b, act_scale, act_zero_point, act_qmax

    def __call__(self, x):
        y = F.linear(_act(x, self.s, self.zp, self.qmax), self.w.float()) * (self.s * self.ws)
        return y if self.b is None else y + self.b


class _WLinear:
    def __init__(self, w, b):
        self.w, self.b = w, b

    def __call__(self, x):
        return F.linear(x, self.w, self.b)


class _WConv:
    def __init__(self, w, b, *conv):
        self.w, self.b, self.conv = w, b, conv

    def __call__(self, x):
        return F.conv2d(x, self.w, self.b, *self.conv)


def _reference_kernels() -> types.ModuleType:
    m = types.ModuleType("diffusia.quant.kernels")
    m.Int8Conv2d, m.Int8Linear = _Int8Conv2d, _Int8Linear
    m.WeightInt8Linear = lambda w, s, b: _WLinear(qmath.dequantize_weight_int8(w, s), b)
    m.WeightInt8Conv2d = lambda w, s, b, *conv: _WConv(qmath.dequantize_weight_int8(w, s), b, *conv)
    m.WeightInt4Linear = lambda w, s, b, group_size, in_features: _WLinear(
        qmath.dequantize_weight_int4(w, s, (w.shape[0], in_features)), b)
    m.WeightInt4Conv2d = lambda w, s, b, *conv, group_size, weight_shape: _WConv(
        qmath.dequantize_weight_int4(w, s, weight_shape), b, *conv)
    return m


def ensure_kernels() -> bool:
    """Install the reference kernels/cpu modules if the real ones are absent; True if real ones are used."""
    real = True
    try:
        real = hasattr(importlib.import_module("diffusia.quant.kernels"), "Int8Conv2d")
    except ModuleNotFoundError:
        real = False
    if not real:
        sys.modules["diffusia.quant.kernels"] = _reference_kernels()
        import diffusia.quant

        diffusia.quant.kernels = sys.modules["diffusia.quant.kernels"]
    try:
        importlib.import_module("diffusia.quant.cpu")
    except ModuleNotFoundError:
        cpu = types.ModuleType("diffusia.quant.cpu")
        cpu.activation_qrange = lambda: (0, 127)
        sys.modules["diffusia.quant.cpu"] = cpu
    return real


REAL_KERNELS = ensure_kernels()
