"""CPU feature detection for choosing INT8 ranges and kernels.

Why it matters: x86 INT8 kernels multiply uint8 activations by int8 weights with `vpmaddubsw`, which adds
adjacent products into a saturating int16. Without VNNI (`vpdpbusd`, int32 accumulation) two products of
255 * 127 overflow it. Either 7-bit activations (0..127) or 7-bit weights (|q| <= 64, `weight_qmax`) make every
pair fit: 2 * 127 * 127 = 32258 and 2 * 255 * 64 = 32640 <= 32767. diffusia's default keeps 8-bit activations
and narrows the weights: on the SD v1.5 U-Net (random weights, 32x32 latent) that measured 3.7-4.0 % rel-L2
against 6.8-8.2 % for 7-bit activations, and it saves the clamp pass (benchmarks/results/w8a8_schemes.md).
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

INT16_MAX = 32767
_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx", "fp16", "bf16")


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpuinfo_field(name: str) -> str:
    for line in _read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


@functools.lru_cache(maxsize=1)
def cpu_features() -> dict[str, bool]:
    """Instruction-set flags that matter for INT8 kernels (avx2, fma, avx512f, avx512_vnni, avx_vnni, amx) and
    native half-precision arithmetic (fp16: avx512_fp16 or amx_fp16; bf16: avx512_bf16 or amx_bf16).

    From /proc/cpuinfo flags, completed by `torch.backends.cpu.get_cpu_capability()` where cpuinfo is missing.
    """
    flags = set(_cpuinfo_field("flags").split())
    cap = torch.backends.cpu.get_cpu_capability().upper()
    feats = {
        "avx2": "avx2" in flags or cap in ("AVX2", "AVX512"),
        "fma": "fma" in flags,
        "avx512f": "avx512f" in flags or cap == "AVX512",
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "amx": bool(flags & {"amx_tile", "amx_int8"}),
        "fp16": bool(flags & {"avx512_fp16", "amx_fp16"}),
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
    }
    return {k: feats[k] for k in _FEATURES}


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def has_vnni() -> bool:
    """True if u8 x s8 products accumulate in int32 (VNNI or AMX): no int16 saturation."""
    f = cpu_features()
    return f["avx512_vnni"] or f["avx_vnni"] or f["amx"]


def has_native_half(dtype: str) -> bool:
    """True if this CPU has arithmetic units for `dtype` ("fp16" or "bf16"); without them PyTorch emulates it
    and a half-precision model is only a storage format here."""
    return cpu_features().get(dtype, False)


def saturation_risk() -> bool:
    """True on x86 without VNNI: int8 kernels add u8 x s8 product pairs in a saturating int16."""
    return is_x86() and not has_vnni()


def weight_qmax(act_qmax: int) -> int:
    """Largest symmetric int8 weight magnitude that cannot saturate with activations in 0..act_qmax.

    127 where there is no risk or act_qmax <= 127; otherwise the largest q with 2 * act_qmax * q <= 32767
    (64 for act_qmax = 255).
    """
    if not saturation_risk():
        return 127
    return min(127, INT16_MAX // (2 * act_qmax))


def cpu_model() -> str:
    """Human-readable CPU model name (for benchmark records)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()
