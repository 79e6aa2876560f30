"""Shared pieces of the kernels: activation quantization to uint8, weight checks, availability checks."""

from __future__ import annotations

import functools
import logging
import warnings

import torch
from torch import Tensor

from diffusia.quant.qmath import residual_qparams

logger = logging.getLogger("diffusia.quant.kernels")

# torch 2.13 warns that quantized-dtype tensors (quint8) are deprecated; we only use quantize_per_tensor as
# the fastest single-pass float -> uint8 quantizer and reinterpret its bytes, so silence exactly that warning.
warnings.filterwarnings(
    "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel", category=UserWarning
)


@functools.lru_cache(maxsize=1)
def onednn_int8_available() -> bool:
    """True if the oneDNN INT8 ops (uint8 in, float32 out) exist and mkldnn is usable."""
    try:
        ok = torch.backends.mkldnn.is_available()
        _ = torch.ops.onednn.qconv_prepack, torch.ops.onednn.qconv_pointwise
        _ = torch.ops.onednn.qlinear_prepack, torch.ops.onednn.qlinear_pointwise
    except (AttributeError, RuntimeError):
        return False
    return bool(ok)


@functools.lru_cache(maxsize=1)
def _has_fast_quantize() -> bool:
    try:
        q = torch.quantize_per_tensor(torch.zeros(4), 1.0, 0, torch.quint8)
        _bytes_of(q)
        return True
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _bytes_of(q: Tensor) -> Tensor:
    """Plain uint8 tensor sharing a quint8 tensor's storage (no copy; `int_repr()` copies and is slow)."""
    return torch.empty(0, dtype=torch.uint8, device=q.device).set_(
        q.untyped_storage(), q.storage_offset(), q.shape, q.stride()
    )


def _quantize_u8(x: Tensor, scale: float, zero_point: int, qmax: int) -> tuple[Tensor, Tensor | None]:
    """(uint8 codes, the quint8 tensor sharing their bytes or None on the fallback path)."""
    if x.device.type == "cpu" and _has_fast_quantize():
        q = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
        u = _bytes_of(q)
        return (u.clamp_(max=qmax) if qmax < 255 else u), q
    u = torch.round(x * (1.0 / scale)).add_(zero_point).clamp_(0, qmax)
    return u.to(torch.uint8), None


def quantize_act_u8(x: Tensor, scale: float, zero_point: int, qmax: int) -> Tensor:
    """uint8 tensor clamp(round(x / scale) + zero_point, 0, qmax), keeping x's memory format.

    Uses torch.quantize_per_tensor (one vectorized pass, clamps to 0..255) plus an in-place uint8 clamp when
    qmax < 255; falls back to plain tensor ops if that function is gone.
    """
    return _quantize_u8(x, scale, zero_point, qmax)[0]


def quantize_act_digits(x: Tensor, scale: float, zero_point: int, qmax: int, digits: int = 1) -> list[Tensor]:
    """The uint8 codes of x: [q] for one digit; [q1, q2] for two, q2 being the residual x - dequant(q1)
    quantized with `qmath.residual_qparams(scale, qmax)` (the `w8a8x2` activations)."""
    q1, qt = _quantize_u8(x, scale, zero_point, qmax)
    if digits == 1:
        return [q1]
    # the in-place clamp above wrote through to qt, so dequantize sees the clamped codes
    x1 = torch.dequantize(qt) if qt is not None else (q1.float() - zero_point) * scale
    return [q1, quantize_act_u8(x - x1, *residual_qparams(scale, qmax), qmax)]


def check_weight(weight: Tensor, scale: Tensor, dtype: torch.dtype, dims: int, name: str) -> None:
    if weight.dtype != dtype or weight.dim() != dims:
        raise TypeError(f"{name}: weight must be {dtype} with {dims} dims, got {weight.dtype} {tuple(weight.shape)}")
    if scale.shape[0] != weight.shape[0]:
        raise ValueError(f"{name}: weight_scale has {scale.shape[0]} rows for {weight.shape[0]} output channels")
