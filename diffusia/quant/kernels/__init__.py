"""Functional layer of real low-precision kernels (float32 in, float32 out).

- `Int8Conv2d`, `Int8Linear`: static W8A8 on oneDNN INT8 kernels (uint8 activations, float32 output).
- `WeightInt8Linear/Conv2d`, `WeightInt4Linear/Conv2d`: weight-only, int8 / packed int4 storage.
- `reference_int8_conv2d`, `reference_int8_linear`: float simulations of the same math, for checks.
- `cuda`: the guarded GPU path (untested on CPU-only machines).

Measurements behind the choices: benchmarks/kernels.md.
"""

from diffusia.quant.kernels._common import onednn_int8_available, quantize_act_u8
from diffusia.quant.kernels.int8_static import Int8Conv2d, Int8Linear
from diffusia.quant.kernels.reference import reference_int8_conv2d, reference_int8_linear
from diffusia.quant.kernels.weight_only import WeightInt4Conv2d, WeightInt4Linear, WeightInt8Conv2d, WeightInt8Linear
from diffusia.quant.qmath import dequantize_int4, pack_int4, unpack_int4

__all__ = [
    "Int8Conv2d",
    "Int8Linear",
    "WeightInt8Linear",
    "WeightInt8Conv2d",
    "WeightInt4Linear",
    "WeightInt4Conv2d",
    "reference_int8_conv2d",
    "reference_int8_linear",
    "quantize_act_u8",
    "pack_int4",
    "unpack_int4",
    "dequantize_int4",
    "onednn_int8_available",
]
