"""Pure-float simulations of the kernels' math, for checking the real kernels (never timed as INT8).

Same rounding as the real quantizer: q = clamp(round(x * (1 / scale)) + zero_point, 0, act_qmax), round half
to even, then float conv/linear of (q - zero_point) * act_scale with weight_int8 * weight_scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusia.quant.kernels._common import dequantize_int4
from diffusia.quant.qmath import residual_qparams

IntPair = int | tuple[int, int]


def fake_quant_act(x: Tensor, act_scale: float, act_zero_point: int, act_qmax: int, act_digits: int = 1) -> Tensor:
    """(clamp(round(x / s) + zp, 0, qmax) - zp) * s in float32; digits=2 adds the residual's second digit."""
    inv = torch.tensor(1.0 / act_scale, dtype=torch.float32)
    q = torch.clamp(torch.round(x.float() * inv) + act_zero_point, 0, act_qmax)
    y = (q - act_zero_point) * act_scale
    if act_digits == 2:
        y = y + fake_quant_act(x.float() - y, *residual_qparams(act_scale, act_qmax), act_qmax)
    return y


def _dequant_w(weight_int8: Tensor, weight_scale: Tensor) -> Tensor:
    return weight_int8.float() * weight_scale.float().reshape((-1,) + (1,) * (weight_int8.dim() - 1))


def reference_int8_conv2d(x: Tensor, weight_int8: Tensor, weight_scale: Tensor, bias: Tensor | None,
                          stride: IntPair, padding: IntPair, dilation: IntPair, groups: int,
                          act_scale: float, act_zero_point: int, act_qmax: int = 127, act_digits: int = 1) -> Tensor:
    """Simulated static W8A8 conv2d (per-channel int8 weights, per-tensor affine uint activations)."""
    xd = fake_quant_act(x, act_scale, act_zero_point, act_qmax, act_digits)
    return F.conv2d(xd, _dequant_w(weight_int8, weight_scale), bias, stride, padding, dilation, groups)


def reference_int8_linear(x: Tensor, weight_int8: Tensor, weight_scale: Tensor, bias: Tensor | None,
                          act_scale: float, act_zero_point: int, act_qmax: int = 127, act_digits: int = 1) -> Tensor:
    """Simulated static W8A8 linear over the last dim of x."""
    xd = fake_quant_act(x, act_scale, act_zero_point, act_qmax, act_digits)
    return F.linear(xd, _dequant_w(weight_int8, weight_scale), bias)


def reference_weight_int4(weight_int4: Tensor, weight_scale: Tensor, weight_shape: tuple[int, ...]) -> Tensor:
    """Float weight of `weight_shape` from packed group-wise int4 (see kernels.pack_int4)."""
    cols = int(torch.Size(weight_shape[1:]).numel())
    return dequantize_int4(weight_int4, weight_scale, cols).reshape(weight_shape)
