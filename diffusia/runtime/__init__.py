"""Where a pipeline's U-Net runs, inside the unchanged diffusers pipeline (text encoder, scheduler and VAE encoder
stay PyTorch; OpenVINO also decodes, where it measured faster: `runtime.decoder`):

- `torch`: diffusia's own modules and kernels in eager PyTorch (any device);
- `openvino` / `onnxruntime`: diffusia's quantized graph exported to that runtime (QDQ), checked against the torch
  kernels when written (`runtime.artifact`), CPU only;
- `auto`: the runtime `benchmarks/backends.py` measured fastest on this host's CPU class.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from diffusia.errors import DiffusiaError
from diffusia.runtime.artifact import EXPORTED, MANIFEST, export_runtime

log = logging.getLogger(__name__)

RUNTIMES = ("torch", *EXPORTED)
CHOICES = ("auto", *RUNTIMES)
# The fastest runtime for diffusia's INT8 U-Net per CPU class. vnni: OpenVINO ran diffusia's W8A8 (MSE) step in 275 ms
# against 406 ms on its PyTorch kernels and 1,287 ms on ONNX Runtime (benchmarks/results/amx/backends_sd15-arch_32.md,
# an AMX Xeon); on an AMD Zen 4 (VNNI, no AMX) 687 ms against 777 ms, percentile W8A8 600 against 854 ms
# (benchmarks/results/vnni/openvino/backends_sd15-arch_32.md). OpenVINO has not been measured on an AVX2-only CPU; on
# the Zen 4 capped to AVX2 the PyTorch kernels were the faster (W8A8-MSE 1,274 against 1,353 ms,
# benchmarks/results/vnni/avx2_capped/backends_sd15-arch_32.md), so that class keeps them.
FASTEST = {"vnni": "openvino", "avx2": "torch"}
# What OpenVINO computes what diffusia leaves in float in. The float layers (those the recipe keeps): f32, as the
# export check verified, or bf16 (AMX / AVX-512 BF16): 0.84x the f32 step of diffusia's W8A8-MSE graph on the AMX
# class, not checked (benchmarks/results/amx/focused/backends_sd15-arch_32.md). `+dynamic`: the float inputs of the
# weight-only (w8/w4) MatMuls are also quantized to int8 on the fly, in groups of 32, as OpenVINO runs NNCF's
# weight-compressed models, not checked either (benchmarks/results/vnni/weight_only_speed/).
DYNAMIC = "+dynamic"
PRECISIONS = ("f32", "bf16", f"f32{DYNAMIC}", f"bf16{DYNAMIC}")


def float_precision(precision: str | None) -> str | None:
    """The float layers' part of a runtime precision (`bf16+dynamic` -> `bf16`)."""
    return precision.removesuffix(DYNAMIC) if precision else precision


def is_dynamic(precision: str | None) -> bool:
    """Whether a runtime precision quantizes the weight-only MatMuls' inputs on the fly."""
    return bool(precision) and precision.endswith(DYNAMIC)


def installed(runtime: str) -> bool:
    import importlib.util

    return runtime == "torch" or importlib.util.find_spec(runtime) is not None


def resolve(runtime: str | None, device: str = "cpu") -> str:
    """`runtime` as a concrete one; `auto` falls back to torch off the CPU or when OpenVINO is not installed."""
    if runtime is None or runtime == "torch":
        return "torch"
    if runtime not in CHOICES:
        raise DiffusiaError(f"unknown runtime {runtime!r}; valid: {', '.join(CHOICES)}")
    on_cpu = str(device).startswith("cpu")
    if runtime == "auto":
        from diffusia.quant.cpu import host_class

        choice = FASTEST[host_class()] if on_cpu else "torch"
        if not installed(choice):
            log.info("auto runtime: %s is not installed, using torch", choice)
            return "torch"
        return choice
    if not on_cpu:
        raise DiffusiaError(f"the {runtime} runtime runs on the CPU: use --device cpu, or --runtime torch on {device}")
    return runtime


def saved_runtimes(spec: str | None, device: str = "cpu") -> tuple[str, ...]:
    """The exported runtimes a comma-separated `--runtime` list names (`auto` resolved, torch dropped): those whose
    graphs a quantized folder is saved with."""
    named = [resolve(x.strip(), device) for x in (spec or "").split(",") if x.strip()]
    return tuple(x for x in dict.fromkeys(named) if x != "torch")


def check_precision(runtime: str, precision: str) -> None:
    """Refuse a float-layer precision the runtime or this CPU cannot honour (one line naming the fix)."""
    from diffusia.quant import cpu

    if precision not in PRECISIONS:
        raise DiffusiaError(f"unknown runtime precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision != "f32" and runtime != "openvino":
        raise DiffusiaError(
            f"runtime precision {precision} applies to the openvino runtime, and the U-Net runs on {runtime}: "
            "add --runtime openvino, or drop --runtime-precision"
        )
    if float_precision(precision) == "bf16" and not cpu.has_native_half("bf16"):
        raise DiffusiaError(
            "bf16 float layers need a CPU with AVX-512 BF16 or AMX, and this one has neither (OpenVINO would "
            f"emulate them slowly): use --runtime-precision {'f32' + DYNAMIC if is_dynamic(precision) else 'f32'}"
        )


def runtime_of(pipe) -> str:
    """The runtime `pipe`'s U-Net runs on."""
    return getattr(pipe.unet, "runtime", "torch")


def runtime_precision_of(pipe) -> str:
    """What OpenVINO computes `pipe`'s U-Net in (`PRECISIONS`; f32 elsewhere): the one asked for, less `+dynamic`
    for a U-Net without weight-only layers."""
    return (getattr(pipe.unet, "precision", None) or "f32") if runtime_of(pipe) == "openvino" else "f32"


def load_unet(
    runtime: str,
    folder: str | Path,
    config: Any,
    threads: int | None = None,
    precision: str | None = "f32",
    arena: str | None = None,
):
    """The runtime U-Net of an exported folder (`runtime.artifact`); `arena`: how ONNX Runtime allocates
    (`export.onnx.ARENA`; default diffusia's, `DEFAULT_ARENA`)."""
    if runtime == "openvino":
        from diffusia.runtime.openvino import OpenVINOUNet

        return OpenVINOUNet(folder, config, precision=precision, threads=threads)
    if runtime == "onnxruntime":
        from diffusia.runtime.onnxruntime import ONNXRuntimeUNet

        return ONNXRuntimeUNet(folder, config, threads=threads, arena=arena)
    raise DiffusiaError(f"runtime {runtime!r} runs no exported folder; valid: {', '.join(EXPORTED)}")


def install(pipe, unet) -> None:
    """Put `unet` in `pipe` as its U-Net (diffusers caches one fact of the U-Net config at construction), and the
    VAE decoder exported beside it, if any, as `pipe.vae.decode` (`runtime.decoder`)."""
    pipe.unet = unet
    pipe._is_unet_config_sample_size_int = isinstance(unet.config.sample_size, int)
    if getattr(unet, "decoder", None) is not None:
        from diffusia.models.heap import release_before_decode

        unet.decoder.install(pipe.vae)
        release_before_decode(pipe)  # the new decoder, as `load_pipeline` does for every pipeline


def deploy(
    pipe,
    runtime: str | None,
    folder: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    precision: str | None = "f32",
):
    """Run `pipe`'s U-Net on `runtime` (returns `pipe`). `folder` is an exported runtime folder; without one, the
    U-Net is exported (and checked) now into a temporary folder that lives as long as the runtime U-Net."""
    runtime = resolve(runtime, device)
    if runtime == "torch" or runtime_of(pipe) == runtime:
        return pipe
    if runtime_of(pipe) != "torch":
        raise DiffusiaError(f"the U-Net already runs on {runtime_of(pipe)}: load the pipeline again for {runtime}")
    tmp = None
    if folder is None:
        tmp = Path(tempfile.mkdtemp(prefix="diffusia-runtime-"))
        log.info("exporting the U-Net to %s (save it with `diffusia quantize --runtime %s`)", runtime, runtime)
        folder = tmp / runtime
        export_runtime(pipe.unet, runtime, folder, vae=pipe.vae)
    unet = load_unet(runtime, folder, pipe.unet.config, threads=threads, precision=precision)
    if tmp is not None:
        weakref.finalize(unet, shutil.rmtree, tmp, True)
    install(pipe, unet)
    return pipe


__all__ = [
    "CHOICES",
    "FASTEST",
    "MANIFEST",
    "PRECISIONS",
    "check_precision",
    "float_precision",
    "is_dynamic",
    "RUNTIMES",
    "deploy",
    "export_runtime",
    "install",
    "load_unet",
    "resolve",
    "runtime_of",
    "runtime_precision_of",
    "saved_runtimes",
]
