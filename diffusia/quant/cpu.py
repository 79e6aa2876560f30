"""CPU features, CPU classes and the INT8 layout each class needs.

Why it matters: x86 INT8 kernels multiply uint8 activations by int8 weights. Without VNNI they use `vpmaddubsw`,
which adds adjacent products into a saturating int16, so two products of 255 * 127 overflow it; VNNI
(`vpdpbusd`) and AMX accumulate in int32. Either 7-bit activations (0..127) or 7-bit weights (|q| <= 64,
`weight_qmax`) make every pair fit: 2 * 127 * 127 = 32258 and 2 * 255 * 64 = 32640 <= 32767. For such CPUs
diffusia keeps 8-bit activations and narrows the weights: on the SD v1.5 U-Net (random weights, 32x32 latent) that
measured 3.7-4.0 % rel-L2 against 6.8-8.2 % for 7-bit activations (benchmarks/results/avx2/w8a8_schemes.md).

CPU classes (what a quantized folder is made for, `Recipe.target`):
- `avx2`: x86 without VNNI; int16 pair sums, the narrow layout.
- `vnni`: x86 with AVX-512 VNNI, AVX-VNNI or AMX (and any non-x86 CPU): int32 accumulation, the full range.
- `portable`: the `avx2` layout, correct on every class; `auto`: this host's class.

The detected features can be overridden, for tests and for building artifacts for another machine: the
environment variable `DIFFUSIA_CPU` or `with cpu.simulate("avx2"):` (a class name or comma-separated flags). The
override decides layouts and load-time conversions; the kernels' own safety check always uses the real hardware,
so a false override can make diffusia slower (float reference), never wrong.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterable, Iterator
from pathlib import Path

from diffusia.errors import DiffusiaError

INT16_MAX = 32767
ENV_VAR = "DIFFUSIA_CPU"
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx", "fp16", "bf16")
CPU_CLASSES = ("avx2", "vnni")
TARGETS = ("auto", "portable") + CPU_CLASSES
# The features of each class as seen on this project's machines (AMD EPYC Zen 1; an Intel Xeon with AVX-512
# VNNI/BF16/FP16, no AMX; an AMD EPYC with AVX-512 VNNI/BF16 and no FP16 has the vnni class's INT8 layout too).
CLASS_FEATURES = {
    "avx2": ("avx2", "fma"),
    "vnni": ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "fp16", "bf16"),
}
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx")
_overrides: list[dict[str, bool]] = []


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


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@functools.lru_cache(maxsize=1)
def detected_features() -> dict[str, bool]:
    """The real hardware's flags that matter for INT8 kernels (avx2, fma, avx512f, avx512_vnni, avx_vnni, amx) and
    native half precision (fp16: avx512_fp16 or amx_fp16; bf16: avx512_bf16 or amx_bf16), and whether it is x86.

    From /proc/cpuinfo flags, completed by `torch.backends.cpu.get_cpu_capability()` where cpuinfo is missing.
    """
    import torch

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
    return {"x86": is_x86(), **{k: feats[k] for k in FEATURES}}


def parse_features(spec: str | Iterable[str]) -> dict[str, bool]:
    """Features from a class name (`avx2`, `vnni`) or flags (`"avx2,fma,avx512_vnni"` or an iterable)."""
    if isinstance(spec, str):
        spec = CLASS_FEATURES.get(spec.strip(), [s.strip() for s in spec.split(",") if s.strip()])
    flags = set(spec)
    unknown = sorted(flags - set(FEATURES))
    if unknown or not flags:
        raise DiffusiaError(
            f"unknown CPU features {unknown or spec!r} in {ENV_VAR}/simulate: use a class "
            f"({', '.join(CPU_CLASSES)}) or flags from {', '.join(FEATURES)}"
        )
    return {"x86": True, **{k: k in flags for k in FEATURES}}


def cpu_features() -> dict[str, bool]:
    """The features diffusia assumes for this host: the innermost `simulate()`, else $DIFFUSIA_CPU, else the
    detected ones."""
    if _overrides:
        return dict(_overrides[-1])
    env = os.environ.get(ENV_VAR, "").strip()
    return parse_features(env) if env else dict(detected_features())


@contextlib.contextmanager
def simulate(spec: str | Iterable[str]) -> Iterator[dict[str, bool]]:
    """Within the block, diffusia assumes a CPU of class or flags `spec` (layouts, targets, load conversions)."""
    _overrides.append(parse_features(spec))
    try:
        yield dict(_overrides[-1])
    finally:
        _overrides.pop()


def has_vnni(features: dict[str, bool] | None = None) -> bool:
    """True if u8 x s8 products accumulate in int32 (VNNI or AMX, or not x86): no int16 saturation."""
    f = cpu_features() if features is None else features
    return not f.get("x86", True) or any(f.get(k, False) for k in _VNNI_FLAGS)


def host_class(features: dict[str, bool] | None = None) -> str:
    """This host's CPU class: `vnni` (int32 accumulation) or `avx2` (int16 pair sums)."""
    return "vnni" if has_vnni(features) else "avx2"


def has_native_half(dtype: str) -> bool:
    """True if this CPU has arithmetic units for `dtype` ("fp16" or "bf16"); without them PyTorch emulates it
    and a half-precision model is only a storage format here."""
    return cpu_features().get(dtype, False)


def resolve_target(target: str) -> str:
    """The CPU class whose INT8 layout `target` stands for: `auto` -> this host's class, `portable` -> `avx2`."""
    if target not in TARGETS:
        raise DiffusiaError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    if target == "auto":
        return host_class()
    return "avx2" if target == "portable" else target


def pair_sums_fit(act_qmax: int, weight_qmax: int) -> bool:
    """True if two u8 x s8 products of these ranges always fit an int16."""
    return 2 * int(act_qmax) * int(weight_qmax) <= INT16_MAX


def saturates(act_qmax: int, weight_qmax: int, features: dict[str, bool] | None = None) -> bool:
    """True if INT8 kernels with these ranges would saturate on a CPU with `features` (default: this host)."""
    return not has_vnni(features) and not pair_sums_fit(act_qmax, weight_qmax)


def weight_qmax(act_qmax: int, cpu_class: str) -> int:
    """Largest symmetric int8 weight magnitude that cannot saturate with activations in 0..act_qmax on
    `cpu_class`: 127 on `vnni` or for act_qmax <= 127; otherwise the largest q with 2 * act_qmax * q <= 32767
    (64 for act_qmax = 255)."""
    if cpu_class == "vnni":
        return 127
    return min(127, INT16_MAX // (2 * act_qmax))


def host_description() -> dict[str, object]:
    """What a quantized folder records of the CPU it was made on."""
    real = detected_features()
    return {
        "model": cpu_model(),
        "class": host_class(real),
        "features": [k for k in FEATURES if real[k]],
        "simulated_class": host_class() if cpu_features() != real else None,
    }


def cpu_model() -> str:
    """Human-readable CPU model name (for benchmark records)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()
