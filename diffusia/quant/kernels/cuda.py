"""CUDA path (UNTESTED on the project's CPU-only machines; chosen only when the weights live on a GPU).

- W8A8 linear: real INT8 GEMM with `torch._int_mm` (int8 x int8 -> int32). uint8 activations are shifted to
  int8 (q - 128) and the zero point is folded into a per-channel correction: x_q - zp = x_s8 - (zp - 128).
- W8A8 conv: no int8 conv is exposed by torch on CUDA; computed in fp16 on the dequantized values (same
  quantization numerics as the reference, fp16 speed, NOT an INT8 kernel: do not report it as one).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusia.quant.qmath import quantize_dequantize_act


def prepare_w8a8_linear(weight_int8: Tensor, weight_scale: Tensor) -> dict[str, Tensor]:
    """Column-major int8 weight view (I, O) for _int_mm (as torchao passes it) and the per-output-channel weight
    sums for the zero-point correction."""
    w_t = weight_int8.contiguous().t()
    return {"w_t": w_t, "wsum": weight_int8.to(torch.int32).sum(dim=1), "scale": weight_scale.float()}


def _codes(x2: Tensor, scale: float, zp: int, qmax: int) -> Tensor:
    return torch.clamp(torch.round(x2 * (1.0 / scale)) + zp, 0, qmax)


def _int_mm_digit(q: Tensor, scale: float, zp: int, prep: dict[str, Tensor]) -> Tensor:
    """Float output of one activation digit: its codes `q` (0..qmax, as float) through _int_mm."""
    q_s8 = (q - 128).to(torch.int8)
    m = q_s8.shape[0]
    if q_s8.shape[1] % 8 or prep["w_t"].shape[1] % 8:
        acc = (q_s8.float() @ prep["w_t"].float()).to(torch.int32)
    else:
        if m <= 16:
            q_s8 = F.pad(q_s8, (0, 0, 0, 17 - m))
        acc = torch._int_mm(q_s8, prep["w_t"])[:m]
    return (acc - (zp - 128) * prep["wsum"]).float() * (scale * prep["scale"])


def w8a8_linear_int_mm(x: Tensor, k: Any, prep: dict[str, Tensor]) -> Tensor:
    """W8A8 linear via torch._int_mm (needs M > 16 and K, N multiples of 8: pads M, else falls back); one call
    per activation digit (the second on the first digit's residual)."""
    x2 = x.reshape(-1, x.shape[-1]).float()
    (s1, zp1), *rest = k.digit_qparams()
    q1 = _codes(x2, s1, zp1, k.act_qmax)
    y = _int_mm_digit(q1, s1, zp1, prep)
    for s2, zp2 in rest:
        y = y + _int_mm_digit(_codes(x2 - (q1 - zp1) * s1, s2, zp2, k.act_qmax), s2, zp2, prep)
    if k.bias is not None:
        y = y + k.bias.to(y.device)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def w8a8_conv2d_fp16(x: Tensor, k: Any) -> Tensor:
    """W8A8 conv numerics computed in fp16 (simulated, not an INT8 kernel)."""
    xd = quantize_dequantize_act(x.float(), k.act_scale, k.act_zero_point, k.act_qmax, k.act_digits).half()
    w = (k.weight_int8.float() * k.weight_scale.to(x.device)[:, None, None, None]).half()
    b = None if k.bias is None else k.bias.to(x.device).half()
    return F.conv2d(xd, w, b, k.stride, k.padding, k.dilation, k.groups).float()
