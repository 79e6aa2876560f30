"""Quantization arithmetic shared by the modules: weight quantizers, int4 packing, activation qparams,
and the simulated (fake) quantize-dequantize with a straight-through estimator."""

from __future__ import annotations

import torch
from torch import Tensor

W8_QMAX = 127  # symmetric int8 weights in [-127, 127]
W4_QMIN, W4_QMAX = -8, 7
_FP16_TINY = 2.0**-24  # smallest positive float16 (subnormal)


def quantize_weight_int8(w: Tensor, qmax: int = W8_QMAX) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8 in [-qmax, qmax]: returns (int8 weight of w's shape, float32 scale [O]).

    qmax < 127 keeps u8 x s8 pair sums inside int16 on CPUs without VNNI (see diffusia.quant.cpu.weight_qmax).
    """
    w = w.detach().float()
    absmax = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(absmax == 0, torch.ones_like(absmax), absmax / qmax)
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.reshape(shape)), -qmax, qmax).to(torch.int8)
    return q, scale.contiguous()


def dequantize_weight_int8(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale.reshape((-1,) + (1,) * (q.dim() - 1))


def int4_padded_cols(in_cols: int, group_size: int) -> int:
    return -(-in_cols // group_size) * group_size


def quantize_weight_int4(w: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Group-wise symmetric int4 over the flattened input dims (zero-padded to a multiple of group_size).

    Returns (packed uint8 [O, padded/2]: low nibble = even column, high nibble = odd column, value+8;
    float16 scale [O, padded/group_size]). The scales are fp16 (as in GPTQ/AWQ checkpoints: 0.25 instead of 0.5
    bit per weight at groups of 64) and the weight is rounded against the fp16 value, so no precision is lost
    beyond the scale's own 11-bit mantissa.
    """
    w2 = w.detach().float().reshape(w.shape[0], -1)
    o, cols = w2.shape
    padded = int4_padded_cols(cols, group_size)
    if padded != cols:
        w2 = torch.nn.functional.pad(w2, (0, padded - cols))
    g = w2.reshape(o, padded // group_size, group_size)
    absmax = g.abs().amax(dim=2)
    scale = torch.where(absmax == 0, torch.ones_like(absmax), absmax / W4_QMAX)
    scale = scale.to(torch.float16).clamp_min_(_FP16_TINY)  # groups below fp16's range keep its smallest step
    q = torch.clamp(torch.round(g / scale.float()[..., None]), W4_QMIN, W4_QMAX).reshape(o, padded)
    return pack_int4(q), scale.contiguous()


def pack_int4(q: Tensor) -> Tensor:
    """int values in [-8, 7] of shape [O, 2n] -> uint8 [O, n] (low nibble = even column, each value + 8)."""
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even number of columns, got {q.shape[-1]}")
    if q.numel() and (int(q.min()) < W4_QMIN or int(q.max()) > W4_QMAX):
        raise ValueError("pack_int4 values must lie in [-8, 7]")
    u = (q.to(torch.int16) - W4_QMIN).to(torch.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: Tensor) -> Tensor:
    """Inverse of pack_int4: int8 values in [-8, 7] of shape [O, 2n]."""
    lo = (packed & 0x0F).to(torch.int8) + W4_QMIN
    hi = (packed >> 4).to(torch.int8) + W4_QMIN
    return torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(packed: Tensor, scale: Tensor, cols: int) -> Tensor:
    """float32 [O, cols] from packed int4 [O, padded/2] and group scales [O, padded/group] (one fused pass)."""
    o, ngroups = scale.shape
    q = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(o, ngroups, -1).to(torch.float32)
    s = scale.to(torch.float32)[..., None]
    w = torch.addcmul(s * float(W4_QMIN), q, s)  # (nibble - 8) * s in one pass
    return w.reshape(o, -1)[:, :cols]


def dequantize_weight_int4(packed: Tensor, scale: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Float weight of `shape` from packed int4 and group scales."""
    return dequantize_int4(packed, scale, int(torch.Size(shape[1:]).numel())).reshape(shape)


def residual_qparams(scale: float, qmax: int) -> tuple[float, int]:
    """(scale, zero point) of the second activation digit of `w8a8x2`: the first digit's rounding residual lies in
    [-scale/2, scale/2], which this maps onto +-(qmax//2) steps around the mid-scale zero point (qmax+1)//2, so
    the digit is symmetric: at qmax 255 OpenVINO can run it as signed INT8 without a zero point."""
    half = qmax // 2
    return scale / (2 * half), (qmax + 1) // 2


def is_balanced(lo: float, hi: float) -> bool:
    """True if range [lo, hi] reaches both sides of 0 with the smaller side at least a quarter of the larger: a
    symmetric range then costs little resolution (inputs after LayerNorm, residual streams), unlike one-sided ones
    (after SiLU or GELU, whose negative part is small)."""
    neg, pos = -min(float(lo), 0.0), max(float(hi), 0.0)
    return min(neg, pos) > 0 and 4 * min(neg, pos) >= max(neg, pos)


def act_qparams(lo: float, hi: float, qmax: int, symmetric: bool = False) -> tuple[float, int]:
    """Affine uint qparams (scale, zero_point) for range [lo, hi] widened to include 0, levels 0..qmax; `symmetric`:
    a range with a negative part widened to +-max(-lo, hi), zero point at mid-scale (qmax + 1) // 2, which is
    signed INT8 with zero point 0 for OpenVINO."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric and lo < 0:
        r = max(-lo, hi)
        scale, zp = 2 * r / qmax, (qmax + 1) // 2
        return (float(scale), zp) if scale > 0 else (1.0, zp)
    scale = (hi - lo) / qmax
    if not scale > 0:  # empty or degenerate range
        scale = 1.0
    zp = int(min(max(round(-lo / scale), 0), qmax))
    return float(scale), zp


def ste(x: Tensor, y: Tensor) -> Tensor:
    """y in the forward pass, identity gradient to x in the backward pass."""
    return x + (y - x).detach()


def quantize_dequantize_act(x: Tensor, scale: float, zero_point: int, qmax: int, digits: int = 1) -> Tensor:
    """(clamp(round(x * (1 / scale)) + zero_point, 0, qmax) - zero_point) * scale, rounding half to even as the
    real kernels' quantizer does (torch.quantize_per_tensor multiplies by the float32 inverse scale); digits=2 adds
    the first digit's residual quantized as a second digit (`w8a8x2`)."""
    inv = torch.tensor(1.0 / scale, dtype=torch.float32)
    q = torch.clamp(torch.round(x * inv) + zero_point, 0, qmax)
    y = (q - zero_point) * scale
    if digits == 2:
        y = y + quantize_dequantize_act(x - y, *residual_qparams(scale, qmax), qmax)
    return y


def fake_quant_act(x: Tensor, scale: float, zero_point: int, qmax: int, digits: int = 1) -> Tensor:
    """Simulated affine uint quantize-dequantize of activations with a straight-through gradient."""
    return ste(x, quantize_dequantize_act(x.detach(), scale, zero_point, qmax, digits))
