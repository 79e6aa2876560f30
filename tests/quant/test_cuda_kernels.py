"""CUDA kernels against their float reference. Skipped without a GPU; `benchmarks/cuda_check.sh` runs them."""

from __future__ import annotations

import pytest
import torch

from diffusia.quant import kernels as K
from diffusia.quant import qmath

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).norm() / b.float().cpu().norm())


def _case():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(64, 256, generator=g), torch.randn(128, 256, generator=g) / 16, torch.randn(128, generator=g)
    wq, ws = qmath.quantize_weight_int8(w)
    s, zp = qmath.act_qparams(float(x.min()), float(x.max()), 255)
    return x, wq, ws, b, s, zp


@pytest.mark.parametrize("digits", [1, 2])
def test_int8_linear_int_mm_matches_reference(digits):
    x, wq, ws, b, s, zp = _case()
    k = K.Int8Linear(wq.cuda(), ws.cuda(), b.cuda(), s, zp, 255, act_digits=digits)
    assert k.backend == "cuda-int_mm"
    ref = K.reference_int8_linear(x, wq, ws, b, s, zp, 255, digits)
    assert rel(k(x.cuda()), ref) < 1e-4


@pytest.mark.parametrize("digits", [1, 2])
def test_int8_conv_fp16_matches_reference(digits):
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 32, 16, 16, generator=g), torch.randn(64, 32, 3, 3, generator=g) / 17
    wq, ws = qmath.quantize_weight_int8(w)
    s, zp = qmath.act_qparams(float(x.min()), float(x.max()), 255)
    k = K.Int8Conv2d(wq.cuda(), ws.cuda(), None, 1, 1, 1, 1, s, zp, 255, act_digits=digits)
    assert k.backend == "cuda-fp16"
    ref = K.reference_int8_conv2d(x, wq, ws, None, 1, 1, 1, 1, s, zp, 255, digits)
    assert rel(k(x.cuda()), ref) < 2e-3  # fp16 arithmetic
