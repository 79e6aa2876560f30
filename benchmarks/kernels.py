"""Time the INT8/INT4 kernel candidates against FP32 on Stable-Diffusion-U-Net layer shapes (batch 2).

Writes benchmarks/results/<class>/kernels.json and kernels.md. Run from the repo root:
    python benchmarks/kernels.py            # ~5-10 min on 2 shared cores
    python benchmarks/kernels.py --quick    # fewer repeats, for a smoke run

Timing protocol for a shared, noisy machine: all candidates of one shape run round-robin in the same process
(one call each per round), `--reps` rounds; the reported ratio is the median over rounds of
t(candidate) / t(FP32 NCHW) measured in the same round, next to each candidate's min time.
Errors are relative L2 (||y - y_ref|| / ||y_ref||) vs the FP32 op and vs the float simulation of the same
quantization (`reference_int8_*`). Activation qparams: min/max of the very input (best case calibration).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffusia.fileio import write_json, write_text
from diffusia.quant import cpu
from diffusia.quant import kernels as K

log = logging.getLogger("bench_kernels")
from _results import results_dir  # noqa: E402  (benchmarks/ is on sys.path when run)

RESULTS = results_dir()

# name, (N, C, O, H, W, k, stride, padding)
CONV_SHAPES: list[tuple[str, tuple[int, ...]]] = [
    ("conv3x3 320->320 @64x64", (2, 320, 320, 64, 64, 3, 1, 1)),
    ("conv3x3 320->320 @32x32", (2, 320, 320, 32, 32, 3, 1, 1)),
    ("conv3x3 s2 320->320 @64x64", (2, 320, 320, 64, 64, 3, 2, 1)),
    ("conv3x3 640->640 @16x16", (2, 640, 640, 16, 16, 3, 1, 1)),
    ("conv3x3 1280->1280 @8x8", (2, 1280, 1280, 8, 8, 3, 1, 1)),
    ("conv3x3 1280->1280 @4x4", (2, 1280, 1280, 4, 4, 3, 1, 1)),
    ("conv1x1 320->320 @64x64", (2, 320, 320, 64, 64, 1, 1, 0)),
    ("conv1x1 640->320 @32x32", (2, 640, 320, 32, 32, 1, 1, 0)),
]
# name, (tokens per sample, in, out); batch 2
LINEAR_SHAPES: list[tuple[str, tuple[int, int, int]]] = [
    ("linear 320->320 x1024 tok", (1024, 320, 320)),
    ("linear 320->2560 x1024 tok (GEGLU)", (1024, 320, 2560)),
    ("linear 1280->5120 x64 tok", (64, 1280, 5120)),
    ("linear 5120->1280 x64 tok", (64, 5120, 1280)),
    ("linear 768->320 x77 tok (cross k/v)", (77, 768, 320)),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def qweight(w: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-12) / qmax
    q = torch.round(w / scale.reshape((-1,) + (1,) * (w.dim() - 1))).clamp(-qmax, qmax).to(torch.int8)
    return q, scale


def act_qparams(x: torch.Tensor, qmax: int) -> tuple[float, int]:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s = (hi - lo) / qmax
    return s, int(round(-lo / s))


def int4_group(w: torch.Tensor, group: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    w2 = w.reshape(w.shape[0], -1)
    padded = -(-w2.shape[1] // group) * group
    g = F.pad(w2, (0, padded - w2.shape[1])).reshape(w.shape[0], -1, group)
    scale = g.abs().amax(-1).clamp_min(1e-12) / 7
    q = torch.round(g / scale[..., None]).clamp(-8, 7).reshape(w.shape[0], padded)
    return K.pack_int4(q), scale


def bench(fns: dict[str, Callable[[], Any]], reps: int, slow: set[str], warmup: int = 2) -> dict[str, dict[str, float]]:
    """Round-robin timing; candidates in `slow` run only 2 rounds (they are >10x slower)."""
    for name, fn in fns.items():
        for _ in range(1 if name in slow else warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(reps):
        for name, fn in fns.items():
            if name in slow and r >= 2:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = times["fp32"]
    out = {}
    for name, ts in times.items():
        ratios = [t / base[i] for i, t in enumerate(ts)]
        out[name] = {
            "min_ms": min(ts) * 1e3,
            "median_ms": statistics.median(ts) * 1e3,
            "ratio": statistics.median(ratios),
            "ratio_of_mins": min(ts) / min(base),
            "rounds": len(ts),
        }
    return out


def conv_case(name: str, spec: tuple[int, ...], reps: int) -> dict[str, Any]:
    n, c, o, h, w_, k, stride, pad = spec
    g = torch.Generator().manual_seed(0)
    x = F.silu(torch.randn(n, c, h, w_, generator=g) * 1.5)  # resnet conv inputs are SiLU(GroupNorm(.))
    w = torch.randn(o, c, k, k, generator=g) / (c * k * k) ** 0.5
    b = torch.randn(o, generator=g) * 0.05
    conv = (stride, pad, 1, 1)
    xcl = x.contiguous(memory_format=torch.channels_last)
    wcl = w.contiguous(memory_format=torch.channels_last)
    wq, ws = qweight(w, 127)
    s, zp = act_qparams(x, 127)
    kern = K.Int8Conv2d(wq, ws, b, *conv, act_scale=s, act_zero_point=zp, act_qmax=127)
    wq7, ws7 = qweight(w, 64)
    s8, zp8 = act_qparams(x, 255)
    kern_a8w7 = K.Int8Conv2d(wq7, ws7, b, *conv, act_scale=s8, act_zero_point=zp8, act_qmax=255)
    u8cl = K.quantize_act_u8(xcl, s, zp, 127)
    fb_pack, fb_run = _fbgemm_conv(wq, ws, b, conv, F.conv2d(x, w, b, *conv))
    w8 = K.WeightInt8Conv2d(wq, ws, b, *conv)
    p4, s4 = int4_group(w)
    w4 = K.WeightInt4Conv2d(p4, s4, b, *conv, group_size=64, weight_shape=tuple(w.shape))
    fns: dict[str, Callable[[], Any]] = {
        "fp32": lambda: F.conv2d(x, w, b, *conv),
        "fp32_cl": lambda: F.conv2d(xcl, wcl, b, *conv),
        "w8a8_onednn": lambda: kern(x),
        "w8a8_onednn_cl": lambda: kern(xcl),
        "a8w7_onednn_cl": lambda: kern_a8w7(xcl),
        "w8a8_kernel_only_u8cl": lambda: _onednn_conv_u8(kern, u8cl),
        "quantize_only": lambda: K.quantize_act_u8(x, s, zp, 127),
        "w8a8_fbgemm_requant": lambda: fb_run(x, s, zp),
        "w8_dequant": lambda: w8(x),
        "w4_g64_dequant": lambda: w4(x),
    }
    timing = bench(fns, reps, slow=set())
    fp32 = F.conv2d(x, w, b, *conv)
    ref = K.reference_int8_conv2d(x, wq, ws, b, *conv, s, zp, 127)
    y = kern(x)
    errors = {
        "w8a8_onednn_vs_fp32": rel(y, fp32),
        "w8a8_onednn_vs_ref": rel(y, ref),
        "ref_vs_fp32": rel(ref, fp32),
        "w8a8_fbgemm_requant_vs_fp32": rel(fb_run(x, s, zp), fp32),
        "w8_vs_fp32": rel(w8(x), fp32),
        "w4_g64_vs_fp32": rel(w4(x), fp32),
    }
    errors.update(_saturation_errors(x, w, b, conv))
    return {"name": name, "kind": "conv", "shape": list(spec), "timing": timing, "errors": errors}


def _onednn_conv_u8(kern: K.Int8Conv2d, u8: torch.Tensor) -> torch.Tensor:
    return torch.ops.onednn.qconv_pointwise(
        u8,
        kern.act_scale,
        kern.act_zero_point,
        kern._packed,
        kern.weight_scale,
        kern._w_zp,
        kern.bias,
        kern.stride,
        kern.padding,
        kern.dilation,
        kern.groups,
        1.0,
        0,
        torch.float32,
        "none",
        [],
        "",
    )


def _fbgemm_conv(wq: torch.Tensor, ws: torch.Tensor, b: torch.Tensor, conv: tuple, fp32: torch.Tensor):
    """fbgemm quantized::conv2d: quint8 in, quint8 out (requantized with the FP32 output's min/max)."""
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        qw = torch._make_per_channel_quantized_tensor(wq, ws.double(), torch.zeros(wq.shape[0], dtype=torch.long), 0)
        stride, pad, dil, groups = conv
        packed = torch.ops.quantized.conv2d_prepack(qw, b, [stride] * 2, [pad] * 2, [dil] * 2, groups)
    finally:
        torch.backends.quantized.engine = prev
    lo, hi = min(float(fp32.min()), 0.0), max(float(fp32.max()), 0.0)
    os_, ozp = (hi - lo) / 255, int(round(-lo / ((hi - lo) / 255)))

    def run(x: torch.Tensor, s: float, zp: int) -> torch.Tensor:
        qx = torch.quantize_per_tensor(x.clamp((0 - zp) * s, (127 - zp) * s), s, zp, torch.quint8)
        return torch.ops.quantized.conv2d(qx, packed, os_, ozp).dequantize()

    return packed, run


def _saturation_errors(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, conv: tuple | None
) -> dict[str, float]:
    """Real-kernel error vs its own reference and vs FP32 for a8w8 / a7w8 / a8w7 (7-bit = saturation-free)."""
    out = {}
    fp32 = F.conv2d(x, w, b, *conv) if conv else F.linear(x, w, b)
    for tag, aq, wqmax in (("a8w8", 255, 127), ("a7w8", 127, 127), ("a8w7", 255, 64)):
        wq, ws = qweight(w, wqmax)
        s, zp = act_qparams(x, aq)
        if conv:
            kern = K.Int8Conv2d(wq, ws, b, *conv, act_scale=s, act_zero_point=zp, act_qmax=aq)
            ref = K.reference_int8_conv2d(x, wq, ws, b, *conv, s, zp, aq)
        else:
            kern = K.Int8Linear(wq, ws, b, act_scale=s, act_zero_point=zp, act_qmax=aq)
            ref = K.reference_int8_linear(x, wq, ws, b, s, zp, aq)
        y = kern(x)
        out[f"{tag}_kernel_vs_ref"] = rel(y, ref)
        out[f"{tag}_kernel_vs_fp32"] = rel(y, fp32)
    return out


def linear_case(name: str, spec: tuple[int, int, int], reps: int) -> dict[str, Any]:
    tokens, i, o = spec
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, tokens, i, generator=g)  # LayerNorm / attention outputs: roughly Gaussian
    w = torch.randn(o, i, generator=g) / i**0.5
    b = torch.randn(o, generator=g) * 0.05
    wq, ws = qweight(w, 127)
    s, zp = act_qparams(x, 127)
    kern = K.Int8Linear(wq, ws, b, act_scale=s, act_zero_point=zp, act_qmax=127)
    wq7, ws7 = qweight(w, 64)
    s8, zp8 = act_qparams(x, 255)
    kern_a8w7 = K.Int8Linear(wq7, ws7, b, act_scale=s8, act_zero_point=zp8, act_qmax=255)
    x2 = x.reshape(-1, i)
    u8 = K.quantize_act_u8(x2, s, zp, 127)
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        qw = torch._make_per_channel_quantized_tensor(wq, ws.double(), torch.zeros(o, dtype=torch.long), 0)
        fb = torch.ops.quantized.linear_prepack(qw, b)
    finally:
        torch.backends.quantized.engine = prev
    lo, hi = (0 - zp) * s, (127 - zp) * s
    w8 = K.WeightInt8Linear(wq, ws, b)
    w8pack = K.WeightInt8Linear(wq, ws, b, use_int8pack=True)
    p4, s4 = int4_group(w)
    w4 = K.WeightInt4Linear(p4, s4, b, group_size=64, in_features=i)
    q4 = torch.round(w.reshape(o, -1, 64) / s4[..., None]).clamp(-8, 7).reshape(o, i).to(torch.int32) + 8
    w4pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1)
    sz = torch.stack([s4.t(), torch.zeros_like(s4.t())], -1).contiguous()
    fns: dict[str, Callable[[], Any]] = {
        "fp32": lambda: F.linear(x, w, b),
        "w8a8_onednn": lambda: kern(x),
        "a8w7_onednn": lambda: kern_a8w7(x),
        "w8a8_kernel_only_u8": lambda: torch.ops.onednn.qlinear_pointwise(
            u8, s, zp, kern._packed, kern.weight_scale, kern._w_zp, b, 1.0, 0, torch.float32, "none", [], ""
        ),
        "quantize_only": lambda: K.quantize_act_u8(x2, s, zp, 127),
        "w8a8_fbgemm_fused_q": lambda: torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x2.clamp(lo, hi), s, zp, fb
        ),
        "w8a8_dynamic_fbgemm": lambda: torch.ops.quantized.linear_dynamic(x2, fb, True),
        "w8_dequant": lambda: w8(x),
        "w8_int8pack_mm": lambda: w8pack(x),
        "w4_g64_dequant": lambda: w4(x),
        "w4_g64_int4pack_mm": lambda: torch._weight_int4pack_mm_for_cpu(x2, w4pack, 64, sz) + b,
    }
    timing = bench(fns, reps, slow={"w8_int8pack_mm", "w4_g64_int4pack_mm"})
    fp32 = F.linear(x, w, b)
    ref = K.reference_int8_linear(x, wq, ws, b, s, zp, 127)
    y = kern(x)
    y4p = (torch._weight_int4pack_mm_for_cpu(x2, w4pack, 64, sz) + b).reshape(fp32.shape)
    errors = {
        "w8a8_onednn_vs_fp32": rel(y, fp32),
        "w8a8_onednn_vs_ref": rel(y, ref),
        "ref_vs_fp32": rel(ref, fp32),
        "w8a8_fbgemm_fused_q_vs_ref": rel(fns["w8a8_fbgemm_fused_q"]().reshape(fp32.shape), ref),
        "w8a8_dynamic_fbgemm_vs_fp32": rel(fns["w8a8_dynamic_fbgemm"]().reshape(fp32.shape), fp32),
        "w8_vs_fp32": rel(w8(x), fp32),
        "w8_int8pack_mm_vs_fp32": rel(w8pack(x), fp32),
        "w4_g64_vs_fp32": rel(w4(x), fp32),
        "w4_g64_int4pack_mm_vs_w4_dequant": rel(y4p, w4(x)),
    }
    errors.update(_saturation_errors(x, w, b, None))
    return {"name": name, "kind": "linear", "shape": [2, *spec], "timing": timing, "errors": errors}


class _Kernel(torch.nn.Module):
    """Stand-in for a quantized layer: calls a kernel object (enough for a speed/error estimate)."""

    def __init__(self, kern: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.kern = kern

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kern(x)


def _sd15_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=64, cross_attention_dim=768).eval()  # SD v1.5 architecture


def _int8_layers(unet: torch.nn.Module, calib: tuple, act_qmax: int, w_qmax: int) -> dict[str, torch.nn.Module]:
    """An Int8 kernel module for every Conv2d/Linear of `unet`, min/max-calibrated on one forward of `calib`."""
    ranges: dict[str, list[float]] = {}
    hooks = []
    for name, m in unet.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):

            def hook(mod: torch.nn.Module, args: tuple, name: str = name) -> None:
                lo, hi = float(args[0].min()), float(args[0].max())
                r = ranges.setdefault(name, [lo, hi])
                r[0], r[1] = min(r[0], lo), max(r[1], hi)

            hooks.append(m.register_forward_pre_hook(hook))
    unet(*calib)
    for h in hooks:
        h.remove()
    layers: dict[str, torch.nn.Module] = {}
    for name, (lo, hi) in ranges.items():
        m = unet.get_submodule(name)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s = max(hi - lo, 1e-8) / act_qmax
        zp = int(round(-lo / s))
        wq, ws = qweight(m.weight.detach(), w_qmax)
        b = None if m.bias is None else m.bias.detach()
        if isinstance(m, torch.nn.Conv2d):
            kern = K.Int8Conv2d(wq, ws, b, m.stride, m.padding, m.dilation, m.groups, s, zp, act_qmax)
        else:
            kern = K.Int8Linear(wq, ws, b, s, zp, act_qmax)
        layers[name] = _Kernel(kern)
    return layers


def _swap(model: torch.nn.Module, layers: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Put `layers` into `model` by name; returns the modules they replaced."""
    old = {}
    for name, new in layers.items():
        parent, _, child = name.rpartition(".")
        p = model.get_submodule(parent) if parent else model
        old[name] = getattr(p, child)
        setattr(p, child, new)
    return old


def unet_case(latent: int, reps: int, only: list[str] | None = None) -> dict[str, Any]:
    """Whole SD v1.5 U-Net step (random weights), FP32 vs every Conv2d/Linear on the oneDNN W8A8 kernel.

    One model; the quantized variants are swapped in and out by module name before each call.
    """
    unet = _sd15_unet()
    g = torch.Generator()

    def inputs(seed: int) -> tuple:
        g.manual_seed(seed)
        return (
            torch.randn(2, 4, latent, latent, generator=g),
            torch.tensor([500, 500]),
            torch.randn(2, 77, 768, generator=g),
        )

    calib, evalx = inputs(1), inputs(2)
    x_cl = (evalx[0].contiguous(memory_format=torch.channels_last), *evalx[1:])
    fp32_layers = {n: m for n, m in unet.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    variants = {
        "fp32": fp32_layers,
        "a7w8": _int8_layers(unet, calib, 127, 127),
        "a8w7": _int8_layers(unet, calib, 255, 64),
    }

    def run(variant: str, x: tuple) -> torch.Tensor:
        _swap(unet, variants[variant])
        return unet(*x).sample

    fns: dict[str, Callable[[], Any]] = {
        "fp32": lambda: run("fp32", evalx),
        "fp32_cl": lambda: run("fp32", x_cl),  # conv picks channels_last from the input
        "w8a8_a7w8": lambda: run("a7w8", evalx),
        "w8a8_a7w8_cl": lambda: run("a7w8", x_cl),
        "w8a8_a8w7_cl": lambda: run("a8w7", x_cl),
    }
    fns = {k: f for k, f in fns.items() if not only or k == "fp32" or k in only}
    ref = fns["fp32"]()
    errors = {f"{k}_vs_fp32": rel(f(), ref) for k, f in fns.items() if k != "fp32"}
    timing = bench(fns, reps, slow=set(), warmup=0)  # the error pass above warmed every variant
    return {
        "name": f"SD v1.5 U-Net step, latent {latent}x{latent}, batch 2 (random weights)",
        "kind": "unet",
        "shape": [2, 4, latent, latent],
        "timing": timing,
        "errors": errors,
    }


def environment() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu.cpu_model(),
        "cpu_features": cpu.cpu_features(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_class": cpu.host_class(cpu.detected_features()),
        "weight_qmax_for_uint8": cpu.weight_qmax(255, cpu.host_class(cpu.detected_features())),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "onednn_int8": K.onednn_int8_available(),
    }


CONV_COLS = [
    "fp32_cl",
    "w8a8_onednn",
    "w8a8_onednn_cl",
    "a8w7_onednn_cl",
    "w8a8_kernel_only_u8cl",
    "quantize_only",
    "w8a8_fbgemm_requant",
    "w8_dequant",
    "w4_g64_dequant",
]
LIN_COLS = [
    "w8a8_onednn",
    "a8w7_onednn",
    "w8a8_kernel_only_u8",
    "quantize_only",
    "w8a8_fbgemm_fused_q",
    "w8a8_dynamic_fbgemm",
    "w8_dequant",
    "w8_int8pack_mm",
    "w4_g64_dequant",
    "w4_g64_int4pack_mm",
]


def _table(cases: list[dict[str, Any]], cols: list[str], errs: list[str]) -> str:
    head = ["shape", "FP32 ms (min)"] + cols + errs
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cases:
        t, e = c["timing"], c["errors"]
        row = [c["name"], f"{t['fp32']['min_ms']:.1f}"] + [f"{t[k]['ratio']:.2f}" for k in cols]
        row += [f"{100 * e[k]:.2f}%" for k in errs]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    convs = [c for c in result["cases"] if c["kind"] == "conv"]
    lins = [c for c in result["cases"] if c["kind"] == "linear"]
    sat = [
        "a8w8_kernel_vs_ref",
        "a7w8_kernel_vs_ref",
        "a8w7_kernel_vs_ref",
        "a8w8_kernel_vs_fp32",
        "a7w8_kernel_vs_fp32",
        "a8w7_kernel_vs_fp32",
    ]
    parts = [
        "# Kernel benchmark: INT8 / INT4 candidates vs FP32 on SD-U-Net layer shapes (batch 2)",
        "",
        f"{env['cpu_model']}, flags {', '.join(k for k, v in env['cpu_features'].items() if v) or 'none'} "
        f"(torch capability {env['torch_cpu_capability']}), torch {env['torch']}, {env['threads']} threads, "
        f"{result['reps']} rounds, {env['date']}.",
        "",
        "Cells are median per-round time ratios vs FP32 `F.conv2d`/`F.linear` on NCHW/contiguous input "
        "(< 1 = faster); errors are relative L2. W8A8 = 7-bit activations (0..127), int8 weights, min/max "
        "qparams of the input. `*_kernel_only*` = the INT8 op on an already-quantized uint8 input (the floor "
        "if quantization were fused into the previous op); `quantize_only` = float -> uint8 cost; `a8w7` = the "
        "other saturation-free scheme, 8-bit activations (one-pass quantize, no clamp) with weights in +-64.",
        "",
        "Machine load: the FP32 min times in the tables below are the contention indicator (conv3x3 320->320 @64x64 took "
        "~93 ms on a quiet moment of the same machine); ratios from the same round are robust to slow drift but "
        "a heavily loaded machine penalizes ops made of several parallel regions (quantize + clamp + conv) more "
        "than one big op. Treat differences under ~10 % as noise.",
        "",
        "## Conv2d",
        "",
        _table(
            convs,
            CONV_COLS,
            [
                "w8a8_onednn_vs_fp32",
                "w8a8_onednn_vs_ref",
                "w8a8_fbgemm_requant_vs_fp32",
                "w8_vs_fp32",
                "w4_g64_vs_fp32",
            ],
        ),
        "",
        "## Linear",
        "",
        _table(
            lins,
            LIN_COLS,
            [
                "w8a8_onednn_vs_fp32",
                "w8a8_onednn_vs_ref",
                "w8a8_fbgemm_fused_q_vs_ref",
                "w8a8_dynamic_fbgemm_vs_fp32",
                "w8_vs_fp32",
                "w4_g64_vs_fp32",
            ],
        ),
        "",
        "## Saturation check: real oneDNN kernel vs its own reference and vs FP32",
        "",
        "a8w8 = activations 0..255 with weights +-127; a7w8 = 0..127 with +-127; a8w7 = 0..255 with +-64.",
        "",
        _sat_table([c for c in result["cases"] if c["kind"] != "unet"], sat),
        "",
    ]
    for c in result["cases"]:
        if c["kind"] == "unet":
            parts += [
                f"## {c['name']}",
                "",
                "Every Conv2d and Linear on the kernel (min/max calibrated on another "
                "input); attention matmuls, norms and activations stay FP32. Error = rel-L2 of the output. "
                f"{c['timing']['fp32']['rounds']} rounds; `_cl` = channels_last input (the kernels keep it).",
                "",
                "| variant | min s | median ratio vs FP32 NCHW | ratio of mins | rel-L2 vs FP32 |",
                "|---|---|---|---|---|",
            ]
            for k, t in c["timing"].items():
                err = c["errors"].get(f"{k}_vs_fp32", 0.0)
                parts.append(
                    f"| {k} | {t['min_ms'] / 1e3:.2f} | {t['ratio']:.2f} | {t['ratio_of_mins']:.2f} | "
                    f"{100 * err:.2f}% |"
                )
            parts.append("")
    return "\n".join(parts)


def _sat_table(cases: list[dict[str, Any]], keys: list[str]) -> str:
    lines = ["| shape | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for c in cases:
        lines.append(f"| {c['name']} | " + " | ".join(f"{100 * c['errors'][k]:.3f}%" for k in keys) + " |")
    return "\n".join(lines)


def render(out: Path) -> None:
    """Rewrite kernels.md from kernels.json (after editing the report layout)."""
    import json

    write_text(out / "kernels.md", markdown(json.loads((out / "kernels.json").read_text())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="3 rounds and the first shape of each kind")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--unet",
        type=int,
        default=32,
        metavar="LATENT",
        help="also time a whole SD v1.5 U-Net step at this latent size (0 = skip)",
    )
    ap.add_argument("--unet-only", action="store_true", help="only the U-Net step; merged into existing results")
    ap.add_argument("--unet-variants", default="", help="comma-separated subset, e.g. w8a8_a7w8_cl,w8a8_a8w7_cl")
    ap.add_argument("--render", action="store_true", help="only rewrite kernels.md from kernels.json")
    args = ap.parse_args()
    if args.render:
        render(args.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else args.reps
    convs = CONV_SHAPES[:1] if args.quick else CONV_SHAPES
    lins = LINEAR_SHAPES[:1] if args.quick else LINEAR_SHAPES
    cases: list[dict[str, Any]] = []
    layer_reps = reps
    if args.unet_only:
        convs, lins = [], []
        old = args.out / "kernels.json"
        if old.exists():
            import json

            layer_reps = json.loads(old.read_text())["reps"]
            cases = [
                c for c in json.loads(old.read_text())["cases"] if c["kind"] != "unet" or c["shape"][-1] != args.unet
            ]
    with torch.inference_mode():
        for name, spec in convs:
            cases.append(conv_case(name, spec, reps))
            log.info(
                "%s: w8a8 %.2f (cl %.2f)",
                name,
                cases[-1]["timing"]["w8a8_onednn"]["ratio"],
                cases[-1]["timing"]["w8a8_onednn_cl"]["ratio"],
            )
        for name, spec in lins:
            cases.append(linear_case(name, spec, reps))
            log.info("%s: w8a8 %.2f", name, cases[-1]["timing"]["w8a8_onednn"]["ratio"])
        if args.unet:
            cases.append(unet_case(args.unet, min(reps, 5), [v for v in args.unet_variants.split(",") if v]))
            log.info("unet: %s", {k: round(v["ratio"], 2) for k, v in cases[-1]["timing"].items()})
    result = {"environment": environment(), "reps": layer_reps, "cases": cases}
    write_json(args.out / "kernels.json", result)
    write_text(args.out / "kernels.md", markdown(result))
    log.info("wrote %s", args.out / "kernels.md")


if __name__ == "__main__":
    main()
