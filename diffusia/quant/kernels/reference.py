"""Pure-float simulations of the kernels' math, for checking the real kernels (never timed as INT8).

Activations go through the quantizer the fake quantization uses (`qmath.quantize_dequantize_act`, the real
quantizer's rounding), then float conv/linear with weight_int8 * weight_scale.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from diffusia.quant.qmath import dequantize_weight_int8, quantize_dequantize_act

IntPair = int | tuple[int, int]


def reference_int8_conv2d(
    x: Tensor,
    weight_int8: Tensor,
    weight_scale: Tensor,
    bias: Tensor | None,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair,
    groups: int,
    act_scale: float,
    act_zero_point: int,
    act_qmax: int = 127,
    act_digits: int = 1,
) -> Tensor:
    """Simulated static W8A8 conv2d (per-channel int8 weights, per-tensor affine uint activations)."""
    xd = quantize_dequantize_act(x.float(), act_scale, act_zero_point, act_qmax, act_digits)
    return F.conv2d(xd, dequantize_weight_int8(weight_int8, weight_scale), bias, stride, padding, dilation, groups)


def reference_int8_linear(
    x: Tensor,
    weight_int8: Tensor,
    weight_scale: Tensor,
    bias: Tensor | None,
    act_scale: float,
    act_zero_point: int,
    act_qmax: int = 127,
    act_digits: int = 1,
) -> Tensor:
    """Simulated static W8A8 linear over the last dim of x."""
    xd = quantize_dequantize_act(x.float(), act_scale, act_zero_point, act_qmax, act_digits)
    return F.linear(xd, dequantize_weight_int8(weight_int8, weight_scale), bias)
