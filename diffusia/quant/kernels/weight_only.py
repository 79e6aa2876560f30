"""Weight-only int8 / int4 kernels: weights stay int8 (per-channel) or packed int4 (group-wise) in memory,
activations stay float32; each call dequantizes the weight in one fused pass and runs the float op.

Measured on AVX2 without AVX-512 (benchmarks/kernels.md): torch's dedicated kernels `_weight_int8pack_mm`
and `_weight_int4pack_mm_for_cpu` are ~20-40x slower than FP32 there, so dequantize + FP32 GEMM/conv is the
default. `WeightInt8Linear(use_int8pack=True)` opts into the dedicated kernel (for CPUs/GPUs where it is fast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusia.quant.kernels._common import check_weight
from diffusia.quant.qmath import dequantize_int4

IntPair = int | tuple[int, int]


def _dequant_int8(weight_int8: Tensor, scale_col: Tensor) -> Tensor:
    return torch.mul(weight_int8, scale_col)  # int8 * float32 -> float32 in one pass


class WeightInt8Linear:
    """Linear with int8 per-output-channel weights (O, I) and float activations."""

    def __init__(
        self, weight_int8: Tensor, weight_scale: Tensor, bias: Tensor | None, use_int8pack: bool = False
    ) -> None:
        check_weight(weight_int8, weight_scale, torch.int8, 2, "WeightInt8Linear")
        self.weight_int8 = weight_int8.contiguous()
        self.weight_scale = weight_scale.float().contiguous()
        self._scale_col = self.weight_scale[:, None]
        self.bias = None if bias is None else bias.float().contiguous()
        self.backend = "int8pack_mm" if use_int8pack else "dequant"

    def __call__(self, x: Tensor) -> Tensor:
        if self.backend == "int8pack_mm":
            y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.weight_int8, self.weight_scale)
            y = y.reshape(*x.shape[:-1], y.shape[-1])
            return y if self.bias is None else y + self.bias
        return F.linear(x, _dequant_int8(self.weight_int8, self._scale_col), self.bias)


class WeightInt8Conv2d:
    """Conv2d with int8 per-output-channel weights (O, I/g, kh, kw) and float activations."""

    def __init__(
        self,
        weight_int8: Tensor,
        weight_scale: Tensor,
        bias: Tensor | None,
        stride: IntPair,
        padding: IntPair,
        dilation: IntPair,
        groups: int,
    ) -> None:
        check_weight(weight_int8, weight_scale, torch.int8, 4, "WeightInt8Conv2d")
        self.weight_int8 = weight_int8.contiguous()
        self.weight_scale = weight_scale.float().contiguous()
        self._scale_col = self.weight_scale[:, None, None, None]
        self.bias = None if bias is None else bias.float().contiguous()
        self.conv = (stride, padding, dilation, groups)
        self.backend = "dequant"

    def __call__(self, x: Tensor) -> Tensor:
        return F.conv2d(x, _dequant_int8(self.weight_int8, self._scale_col), self.bias, *self.conv)


def _check_int4(weight_int4: Tensor, weight_scale: Tensor, group_size: int, cols: int, name: str) -> None:
    if weight_int4.dtype != torch.uint8 or weight_int4.dim() != 2:
        raise TypeError(f"{name}: weight_int4 must be packed uint8 (O, padded/2), got {weight_int4.dtype}")
    padded = weight_int4.shape[1] * 2
    if group_size <= 0 or group_size % 2:
        raise ValueError(f"{name}: bad group_size {group_size}")
    if padded % group_size or weight_scale.shape != (weight_int4.shape[0], padded // group_size):
        raise ValueError(
            f"{name}: weight_scale {tuple(weight_scale.shape)} does not match packed "
            f"{tuple(weight_int4.shape)} with group_size {group_size}"
        )
    if not (padded - group_size < cols <= padded):
        raise ValueError(f"{name}: {cols} input columns do not fit {padded} packed columns")


class WeightInt4Linear:
    """Linear with group-wise symmetric int4 weights packed two per byte, float activations.

    weight_int4: uint8 (O, padded/2), value+8 per nibble, low nibble = even column; weight_scale: (O, padded/G).
    """

    def __init__(
        self, weight_int4: Tensor, weight_scale: Tensor, bias: Tensor | None, group_size: int, in_features: int
    ) -> None:
        _check_int4(weight_int4, weight_scale, group_size, in_features, "WeightInt4Linear")
        self.weight_int4, self.weight_scale = weight_int4.contiguous(), weight_scale.contiguous()
        self.bias = None if bias is None else bias.float().contiguous()
        self.group_size, self.in_features = int(group_size), int(in_features)
        self.backend = "dequant"

    def __call__(self, x: Tensor) -> Tensor:
        return F.linear(x, dequantize_int4(self.weight_int4, self.weight_scale, self.in_features), self.bias)


class WeightInt4Conv2d:
    """Conv2d with group-wise int4 weights over the flattened (I/g, kh, kw) input dims, float activations."""

    def __init__(
        self,
        weight_int4: Tensor,
        weight_scale: Tensor,
        bias: Tensor | None,
        stride: IntPair,
        padding: IntPair,
        dilation: IntPair,
        groups: int,
        group_size: int,
        weight_shape: tuple[int, ...],
    ) -> None:
        self.weight_shape = tuple(int(d) for d in weight_shape)
        self._cols = int(torch.Size(self.weight_shape[1:]).numel())
        _check_int4(weight_int4, weight_scale, group_size, self._cols, "WeightInt4Conv2d")
        self.weight_int4, self.weight_scale = weight_int4.contiguous(), weight_scale.contiguous()
        self.bias = None if bias is None else bias.float().contiguous()
        self.group_size = int(group_size)
        self.conv = (stride, padding, dilation, groups)
        self.backend = "dequant"

    def __call__(self, x: Tensor) -> Tensor:
        w = dequantize_int4(self.weight_int4, self.weight_scale, self._cols).reshape(self.weight_shape)
        return F.conv2d(x, w, self.bias, *self.conv)
