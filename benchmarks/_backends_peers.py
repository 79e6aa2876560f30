"""The backends of `benchmarks/backends.py`: each turns the FP32 U-Net into something that runs one step, and
saves it the way that backend would ship it. Used inside one fresh worker process per backend.

A builder takes the float U-Net (which it may convert in place) and a `Ctx`, and returns a `Built`: a callable
for one U-Net call on (sample, timestep, encoder_hidden_states) returning a float32 tensor, and the files it saved.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # sample, timestep (int64, batch), text embedding


@dataclasses.dataclass
class Ctx:
    calib: list[Inputs]  # calibration inputs (never the timed one)
    out: Path  # this backend's artifact folder
    cache: Path  # shared by the workers of one run (the FP32 ONNX export)
    threads: int
    calibrator: str  # "preset" or a diffusia calibrator name


@dataclasses.dataclass
class Built:
    run: Callable[[Inputs], torch.Tensor]
    files: list[Path]
    notes: list[str] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    # how another process runs the saved artifact (for backends_interleaved.py): {"ir": xml path, "precision": p},
    # {"runtime": name, "folder": path, "precision": p}, or diffusia's PyTorch kernels: {"safetensors": path,
    # "quantization_map": path}
    reload: dict[str, Any] = dataclasses.field(default_factory=dict)


def _eager(unet: nn.Module, dtype: torch.dtype | None = None) -> Callable[[Inputs], torch.Tensor]:
    def run(x: Inputs) -> torch.Tensor:
        s, t, e = x
        if dtype is not None:
            s, e = s.to(dtype), e.to(dtype)
        return unet(s, t, e, return_dict=False)[0].float()

    return run


def _safetensors(unet: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in unet.state_dict().items()}, str(path))
    return path


def _torch_save(unet: nn.Module, path: Path) -> Path:
    torch.save(unet.state_dict(), path)
    return path


def fp32_eager(unet: nn.Module, ctx: Ctx) -> Built:
    return Built(_eager(unet), [_safetensors(unet, ctx.out / "unet.safetensors")])


def fp32_compile(unet: nn.Module, ctx: Ctx) -> Built:
    compiled = torch.compile(unet)
    return Built(
        _eager(compiled),
        [_safetensors(unet, ctx.out / "unet.safetensors")],
        ["torch.compile(inductor, default mode); ships the FP32 weights; first call = compile"],
    )


def bf16(unet: nn.Module, ctx: Ctx) -> Built:
    unet.to(torch.bfloat16)
    return Built(
        _eager(unet, torch.bfloat16),
        [_safetensors(unet, ctx.out / "unet.safetensors")],
        ["weights, activations and compute in bfloat16, eager"],
    )


def _symmetric_activations(unet: nn.Module, search: bool, only: str | None = None) -> int:
    """Experiment, before `--activations int8` existed: every calibrated activation range with a negative part made
    symmetric around 0 after calibration, zero point at mid-scale, as NNCF's default scheme; `search`: the MSE
    calibrator's own symmetric search on what it observed, else the calibrated range widened to +-max(|lo|, hi).
    Non-negative ranges keep zero point 0, which needs no compensation. `only`: "linear" changes the Linear layers
    alone (convolutions keep uint8), "balanced" the ranges `qmath.is_balanced` accepts (post-SiLU inputs keep
    uint8). Returns how many layers changed."""
    from diffusia.calib.base import get_calibrator
    from diffusia.quant import api, qmath

    changed = 0
    for m in api.qmodules(unet).values():
        if not m.spec.act_digits or float(m.act_range[:, 0].min()) >= 0:
            continue
        lo, hi = -float(m.act_range[:, 0].min()), float(m.act_range[:, 1].max())
        if (only == "linear" and not isinstance(m, nn.Linear)) or (
            only == "balanced" and not qmath.is_balanced(-lo, hi)
        ):
            continue
        for g in range(m.act_range.shape[0]):
            r = max(-float(m.act_range[g, 0]), float(m.act_range[g, 1]))
            observed = m._calibrators[g] if g < len(m._calibrators) else None
            if search and observed is not None and observed.name == "mse" and not observed.empty:
                symmetric = get_calibrator("mse", qmax=m.settings.act_qmax, symmetric=True)
                symmetric.adopt(observed)
                r = symmetric.compute()[1]
            m.act_scale[g], m.act_zero_point[g] = qmath.act_qparams(-r, r, m.settings.act_qmax)
        changed += 1
    return changed


def _diffusia(
    preset: str,
    calibrator: str | None = None,
    symmetric: str | None = None,
    rules: tuple[str, ...] = (),
    activations: str | None = None,
    attention: str | None = None,
) -> Callable[[nn.Module, Ctx], Built]:
    """diffusia's preset; the calibrator is `calibrator` if given, else the run's --calibrator; `symmetric`
    ("widen" or "search", optionally "-linear" or "-balanced"): the experiment of _symmetric_activations; `rules`
    (PATTERN=PRECISION) appended to the preset's, as `diffusia quantize --rule` does; `activations` as `diffusia
    quantize --activations`, `attention` as `--attention`."""

    def build(unet: nn.Module, ctx: Ctx) -> Built:
        from diffusia.config import load_recipe
        from diffusia.quant import api

        recipe = load_recipe(preset, rules=list(rules))
        if activations:
            recipe = recipe.replace(activations=activations)
        if attention:
            recipe = recipe.replace(attention=attention)
        if (calibrator or ctx.calibrator) != "preset":
            recipe = recipe.replace(calibrator=calibrator or ctx.calibrator)
        from diffusia.quant.pipeline import needs_calibration
        from diffusia.quant.precisions import get_precision, precision_names

        plan = api.quantize(unet, recipe)
        notes = []
        if needs_calibration(plan):
            with api.calibrate(unet):
                for x in ctx.calib:
                    unet(*x)
            cal = recipe.calibrator + (f" {recipe.percentile:g}" if recipe.calibrator == "percentile" else "")
            acts = "" if recipe.activations == "auto" else f", activations {recipe.activations}"
            acts += "" if recipe.attention == "float" else f", attention {recipe.attention}"
            notes.append(f"calibrated on {len(ctx.calib)} inputs ({cal}{acts})")
        if symmetric:
            how, _, only = symmetric.partition("-")
            n = _symmetric_activations(unet, search=how == "search", only=only or None)
            notes.append(f"activation ranges of {n} layers made symmetric ({symmetric}; experiment)")
        api.freeze(unet)
        counts = Counter(p for p in plan.values() if p in precision_names() and get_precision(p).weight_bits <= 8)
        policy = f"rules {', '.join(rules)}" if rules else "default policy"
        notes.insert(0, f"{', '.join(f'{n} {p}' for p, n in counts.items())} of {len(plan)} Conv2d/Linear ({policy})")
        path = _safetensors(unet, ctx.out / "diffusia_unet.safetensors")  # as save_quantized_pipeline writes it
        qmap = ctx.out / "quantization_map.json"
        qmap.write_text(json.dumps(api.quantization_map(unet)))
        reload = {"safetensors": str(path), "quantization_map": str(qmap)}
        return Built(_eager(unet), [path, qmap], notes, {"recipe": recipe.to_dict()}, reload)

    return build


def torch_dynamic_int8(unet: nn.Module, ctx: Ctx) -> Built:
    from torch.ao.quantization import quantize_dynamic

    quantize_dynamic(unet, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return Built(
        _eager(unet),
        [_torch_save(unet, ctx.out / "unet.pt")],
        [f"Linear only, engine {torch.backends.quantized.engine}; convs stay FP32"],
    )


def _torchao(weight_only: bool, compile_: bool) -> Callable[[nn.Module, Ctx], Built]:
    def build(unet: nn.Module, ctx: Ctx) -> Built:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        cfg = Int8WeightOnlyConfig() if weight_only else Int8DynamicActivationInt8WeightConfig()
        quantize_(unet, cfg)  # default filter: nn.Linear only
        path = _torch_save(unet, ctx.out / "unet.pt")  # tensor subclasses: torch.save, not safetensors
        model = torch.compile(unet) if compile_ else unet
        notes = [f"{type(cfg).__name__}, Linear only; convs stay FP32"]
        if compile_:
            notes.append("torch.compile; first call = compile")
        return Built(_eager(model), [path], notes)

    return build


def _quanto(activations: bool) -> Callable[[nn.Module, Ctx], Built]:
    def build(unet: nn.Module, ctx: Ctx) -> Built:
        from optimum.quanto import Calibration, freeze, qint8, quantization_map, quantize

        quantize(unet, weights=qint8, activations=qint8 if activations else None)
        notes = ["Linear, Conv2d (and LayerNorm outputs for activations)"]
        if activations:
            with torch.no_grad(), Calibration():
                for x in ctx.calib:
                    unet(*x)
            notes.append(f"Calibration() on {len(ctx.calib)} inputs; int8 matmul (torch._int_mm) for Linear")
        freeze(unet)
        qmap = ctx.out / "quanto_qmap.json"
        qmap.write_text(json.dumps(quantization_map(unet)))
        try:
            path = _safetensors(unet, ctx.out / "unet.safetensors")
        except Exception as e:  # noqa: BLE001 - fall back to pickle, say so
            path = _torch_save(unet, ctx.out / "unet.pt")
            notes.append(f"torch.save (safetensors failed: {type(e).__name__})")
        return Built(_eager(unet), [path, qmap], notes)

    return build


# ---------------------------------------------------------------- ONNX Runtime


def _onnx_files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.is_file()]


def _export_fp32(unet: nn.Module, x: Inputs, folder: Path) -> tuple[Path, float]:
    """Legacy exporter, opset 17 (as diffusia.export.onnx); one external data file when over 2 GB."""
    import time

    import onnx

    from diffusia.export.onnx import OPSET, _UNetOnly

    path = folder / "unet.onnx"
    if path.is_file():
        return path, 0.0
    t0 = time.perf_counter()
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            _UNetOnly(unet).eval(),
            x,
            str(raw / "unet.onnx"),
            dynamo=False,
            opset_version=OPSET,
            input_names=["sample", "timestep", "encoder_hidden_states"],
            output_names=["noise_pred"],
            do_constant_folding=True,
        )
    model = onnx.load(str(raw / "unet.onnx"))
    big = sum(p.stat().st_size for p in raw.iterdir()) > 1.8e9  # protobuf's limit is 2 GB
    onnx.save(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True, location="unet.onnx.data")
    del model
    for p in raw.iterdir():
        p.unlink()
    raw.rmdir()
    return path, time.perf_counter() - t0


def _session(path: Path, threads: int) -> Callable[[Inputs], torch.Tensor]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(x: Inputs) -> torch.Tensor:
        feeds = {"sample": x[0].numpy(), "timestep": x[1].numpy(), "encoder_hidden_states": x[2].numpy()}
        return torch.from_numpy(sess.run(None, feeds)[0])

    return run


def ort_fp32(unet: nn.Module, ctx: Ctx) -> Built:
    path, secs = _export_fp32(unet, ctx.calib[0], ctx.cache / "onnx_fp32")
    notes = [f"legacy exporter opset 17, export {secs:.0f} s" if secs else "legacy exporter opset 17"]
    return Built(_session(path, ctx.threads), _onnx_files(path), notes, {"export_s": round(secs, 1)})


def ort_int8_static(unet: nn.Module, ctx: Ctx) -> Built:
    import time

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fp32, secs = _export_fp32(unet, ctx.calib[0], ctx.cache / "onnx_fp32")
    feeds = [{"sample": s.numpy(), "timestep": t.numpy(), "encoder_hidden_states": e.numpy()} for s, t, e in ctx.calib]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    out = ctx.out / "unet_int8.onnx"
    big = (fp32.parent / "unet.onnx.data").is_file()
    t0 = time.perf_counter()
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=big,
    )
    qsecs = time.perf_counter() - t0
    notes = [
        f"QDQ, per-channel, reduce_range (7-bit), u8 act / s8 weights, MinMax on {len(feeds)} inputs, "
        f"quantize_static {qsecs:.0f} s"
    ]
    return Built(
        _session(out, ctx.threads), _onnx_files(out), notes, {"export_s": round(secs, 1), "quantize_s": round(qsecs, 1)}
    )


# name -> (builder, kind)
BACKENDS: dict[str, tuple[Callable[[nn.Module, Ctx], Built], str]] = {
    "fp32_eager": (fp32_eager, "eager FP32"),
    "fp32_compile": (fp32_compile, "compiled FP32 (inductor)"),
    "ort_fp32": (ort_fp32, "runtime FP32 (ONNX Runtime)"),
    "bf16": (bf16, "eager BF16"),
    "diffusia_w8a8": (_diffusia("w8a8"), "real INT8 kernels (oneDNN, static)"),
    "diffusia_w8a8_mse": (_diffusia("w8a8", "mse"), "real INT8 kernels (oneDNN, static), MSE calibrator"),
    "diffusia_w8a8x2": (
        _diffusia("w8a8x2"),
        "real INT8 kernels (oneDNN, static), MSE calibrator, full-resolution blocks' activations in two INT8 digits",
    ),
    "diffusia_w8a8_balanced_attn8": (
        _diffusia("w8a8", "mse", activations="balanced", attention="int8"),
        "real INT8 kernels (oneDNN, static), MSE calibrator, balanced activations, int8 attention (computed in float)",
    ),
    "diffusia_hybrid_mse": (
        _diffusia("hybrid", "mse"),
        "real INT8 kernels (oneDNN, static) for the convolutions, MSE calibrator; Linears weight-only INT8",
    ),
    "diffusia_w8": (_diffusia("w8"), "weight-only INT8 (dequant per call)"),
    "diffusia_w4": (_diffusia("w4"), "weight-only INT4 (dequant per call)"),
    "torch_dynamic_int8": (torch_dynamic_int8, "real INT8 kernels (dynamic, Linear only)"),
    "torchao_int8_dynamic": (_torchao(False, False), "INT8 dynamic, Linear only, eager"),
    "torchao_int8_weight_only": (_torchao(True, False), "weight-only INT8, Linear only, eager"),
    "torchao_int8_dynamic_compiled": (_torchao(False, True), "INT8 dynamic, Linear only, compiled"),
    "torchao_int8_weight_only_compiled": (_torchao(True, True), "weight-only INT8, Linear only, compiled"),
    "quanto_w8a8": (_quanto(True), "W8A8: int8 matmul for Linear, Conv2d dequantized"),
    "quanto_w8": (_quanto(False), "weight-only INT8"),
    "ort_int8_static": (ort_int8_static, "runtime INT8 QDQ kernels (static)"),
}
from _backends_experiments import BACKENDS as _EXPERIMENTS  # noqa: E402
from _backends_openvino import BACKENDS as _OPENVINO  # noqa: E402 (its builders use the ones above)

BACKENDS.update(_OPENVINO)
BACKENDS.update(_EXPERIMENTS)
EXPERIMENTS = frozenset(_EXPERIMENTS)  # run only when named (--only)
BACKENDS["fp32_eager_end"] = (fp32_eager, "eager FP32 again, last (drift check)")
