"""OpenVINO backends of `benchmarks/backends.py`: OpenVINO FP32 / BF16 and NNCF's INT8 recipes as the peers a user
on an Intel CPU would pick, and diffusia's own quantized U-Net deployed on OpenVINO and ONNX Runtime (the product
path: `diffusia.runtime`). Same protocol as the other rows (`_backends_peers.Built`, one fresh worker each).

NNCF recipes, as optimum-intel applies them to diffusion U-Nets (optimum/intel/openvino/quantization.py):
- `nncf_int8`: `nncf.quantize` with its defaults (performance preset: symmetric activations, per-channel weights);
- `nncf_int8_transformer`: the same with `model_type=TRANSFORMER` (its attention-aware placement of quantizers);
- `nncf_w8`: `nncf.compress_weights` (weight-only INT8, asymmetric per channel);
- `nncf_w4`: `nncf.compress_weights` in INT4_SYM, groups of 64 (diffusia `w4`'s), every MatMul (ratio 1, no INT8
  backup; a layer whose width 64 does not divide gets the largest power-of-two group that does, NNCF's ADJUST):
  the OpenVINO route to 4-bit weights;
- `nncf_hybrid`: weight-only INT8 for every MatMul, then full INT8 (`model_type=TRANSFORMER`) for the rest, the
  convolutions: optimum-intel's hybrid mode for diffusion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _backends_peers import Built, Ctx, Inputs, _diffusia, _export_fp32
from torch import nn

FEEDS = ("sample", "timestep", "encoder_hidden_states")


def _feeds(x: Inputs) -> dict[str, Any]:
    return dict(zip(FEEDS, (t.numpy() for t in x)))


def compiled(
    model, threads: int, precision: str = "f32", dynamic_quantization: bool = False
) -> Callable[[Inputs], torch.Tensor]:
    from diffusia.export.openvino import compile_model

    request = compile_model(model, precision, threads, dynamic_quantization).create_infer_request()

    def run(x: Inputs) -> torch.Tensor:
        request.infer(_feeds(x))
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run


def _save_ir(model, folder: Path, compress_to_fp16: bool = False) -> list[Path]:
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(folder / "unet.xml"), compress_to_fp16=compress_to_fp16)
    return [folder / "unet.xml", folder / "unet.bin"]


def _fp32_model(unet: nn.Module, ctx: Ctx):
    """The FP32 U-Net as an OpenVINO model, converted from the run's shared FP32 ONNX export (static shapes)."""
    import openvino as ov

    path, secs = _export_fp32(unet, ctx.calib[0], ctx.cache / "onnx_fp32")
    return ov.convert_model(str(path)), secs


def _ov(precision: str) -> Callable[[nn.Module, Ctx], Built]:
    def build(unet: nn.Module, ctx: Ctx) -> Built:
        model, secs = _fp32_model(unet, ctx)
        files = _save_ir(model, ctx.out)
        note = f"INFERENCE_PRECISION_HINT {precision}; IR converted from the FP32 ONNX export"
        reload = {"ir": str(files[0]), "precision": precision}
        return Built(compiled(files[0], ctx.threads, precision), files, [note], {"export_s": round(secs, 1)}, reload)

    return build


def _dataset(ctx: Ctx):
    import nncf

    return nncf.Dataset([_feeds(x) for x in ctx.calib])


def _weighted_matmuls(model) -> list[str]:
    """Names of the MatMuls whose second input is a constant (possibly through a Convert), i.e. the Linears."""
    names = []
    for op in model.get_ops():
        if op.get_type_name() != "MatMul":
            continue
        src = op.input_value(1).get_node()
        while src.get_type_name() in ("Convert", "Transpose", "Reshape") and src.get_input_size():
            src = src.input_value(0).get_node()
        if src.get_type_name() == "Constant":
            names.append(op.get_friendly_name())
    return names


def _nncf(recipe: str, precision: str = "f32") -> Callable[[nn.Module, Ctx], Built]:
    """NNCF's recipe on the FP32 OpenVINO model; `precision` of OpenVINO's float layers (INT8 ones stay INT8)."""

    def build(unet: nn.Module, ctx: Ctx) -> Built:
        import nncf

        model, secs = _fp32_model(unet, ctx)
        t0 = time.perf_counter()
        if recipe == "w8":
            model = nncf.compress_weights(model)
            note = "nncf.compress_weights (INT8_ASYM, per channel), no calibration"
        elif recipe == "w4":
            adjust = nncf.AdvancedCompressionParameters(group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST)
            model = nncf.compress_weights(
                model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=64, ratio=1.0, advanced_parameters=adjust
            )
            note = "nncf.compress_weights (INT4_SYM, groups of 64 or the width's largest power of 2, ratio 1)"
        else:
            kwargs: dict[str, Any] = {"subset_size": len(ctx.calib)}
            if recipe in ("transformer", "hybrid"):
                kwargs["model_type"] = nncf.ModelType.TRANSFORMER
            note = f"nncf.quantize on {len(ctx.calib)} inputs" + (
                ", model_type=TRANSFORMER" if "model_type" in kwargs else " (defaults)"
            )
            if recipe == "hybrid":
                matmuls = _weighted_matmuls(model)
                model = nncf.compress_weights(model, ignored_scope=nncf.IgnoredScope(types=["Convolution"]))
                kwargs["ignored_scope"] = nncf.IgnoredScope(names=matmuls, validate=False)
                note = (
                    f"compress_weights on {len(matmuls)} MatMuls (INT8_ASYM), then {note} for the rest "
                    "(optimum-intel's hybrid mode)"
                )
            model = nncf.quantize(model, _dataset(ctx), **kwargs)
        qsecs = time.perf_counter() - t0
        files = _save_ir(model, ctx.out)
        # OpenVINO's default for weight-compressed MatMuls: their inputs quantized dynamically (int8 groups of 32)
        dynamic = recipe in ("w8", "w4", "hybrid")
        if dynamic:
            note += "; MatMul inputs quantized dynamically (OpenVINO's default for compressed weights)"
        return Built(
            compiled(files[0], ctx.threads, precision, dynamic),
            files,
            [f"{note}; {qsecs:.0f} s; float layers in {precision}"],
            {"export_s": round(secs, 1), "quantize_s": round(qsecs, 1)},
            {"ir": str(files[0]), "precision": precision, "dynamic_quantization": dynamic},
        )

    return build


def _precision_note(precision: str) -> str:
    from diffusia.runtime import float_precision, is_dynamic

    dynamic = "; weight-only inputs quantized dynamically" if is_dynamic(precision) else ""
    return f"float layers in {float_precision(precision)}{dynamic}"


def _diffusia_on(
    runtime: str,
    preset: str,
    calibrator: str | None = None,
    precision: str = "f32",
    symmetric: str | None = None,
    rules: tuple[str, ...] = (),
    prepare: Callable[[nn.Module, Ctx], str] | None = None,
    activations: str | None = None,
    attention: str | None = None,
    arena: str | None = None,
) -> Callable[[nn.Module, Ctx], Built]:
    """diffusia's preset (quantized and calibrated exactly as its torch row) exported with `diffusia.runtime` and
    run by the product's runtime U-Net (static shapes compiled on first call); `precision` of OpenVINO's float
    layers (the quantized ones are INT8 either way); `arena`, how ONNX Runtime allocates (default diffusia's);
    `prepare(unet, ctx)`, an experiment's step between freezing and export, returns its note."""

    def build(unet: nn.Module, ctx: Ctx) -> Built:
        from diffusia.export.onnx import DEFAULT_ARENA
        from diffusia.runtime import load_unet
        from diffusia.runtime.artifact import export_runtime

        built = _diffusia(preset, calibrator, symmetric, rules, activations, attention)(unet, ctx)
        if prepare is not None:
            built.notes.append(prepare(unet, ctx))
        t0 = time.perf_counter()
        folder = ctx.out / runtime
        manifest = export_runtime(unet, runtime, folder, check=False)
        secs = time.perf_counter() - t0
        config = unet.config
        del unet
        options = {"precision": precision} if runtime == "openvino" else {"arena": arena or DEFAULT_ARENA}
        ru = load_unet(runtime, folder, config, threads=ctx.threads, **options)
        files = [p for p in folder.iterdir() if p.name != "runtime.json"]
        notes = list(built.notes)
        notes.append(
            f"exported for {runtime} {manifest['runtime_version'].split('-')[0]} in {secs:.0f} s "
            "(diffusia.runtime, not re-checked here)"
            + (f"; {_precision_note(precision)}" if runtime == "openvino" else f"; memory arena {options['arena']}")
        )

        def run(x: Inputs) -> torch.Tensor:
            return ru(*x, return_dict=False)[0]

        reload = {"runtime": runtime, "folder": str(folder), **({"precision": None} | options)}
        return Built(run, files, notes, {**built.info, "export_s": round(secs, 1)}, reload)

    return build


BACKENDS = {
    "ov_fp32": (_ov("f32"), "runtime FP32 (OpenVINO)"),
    "ov_bf16": (_ov("bf16"), "runtime BF16 hint (OpenVINO)"),
    "nncf_int8": (_nncf("default"), "OpenVINO + NNCF INT8 (defaults)"),
    "nncf_int8_transformer": (_nncf("transformer"), "OpenVINO + NNCF INT8, model_type=TRANSFORMER"),
    "nncf_hybrid": (_nncf("hybrid"), "OpenVINO + NNCF hybrid (weight-only MatMuls, INT8 rest)"),
    "nncf_w8": (_nncf("w8"), "OpenVINO + NNCF weight-only INT8"),
    "nncf_w4": (_nncf("w4"), "OpenVINO + NNCF weight-only INT4 (groups of 64)"),
    "nncf_int8_bf16": (_nncf("default", "bf16"), "OpenVINO + NNCF INT8 (defaults), float layers in bf16"),
    "nncf_int8_transformer_bf16": (
        _nncf("transformer", "bf16"),
        "OpenVINO + NNCF INT8, model_type=TRANSFORMER, float layers in bf16",
    ),
    "diffusia_w8a8_ov": (_diffusia_on("openvino", "w8a8"), "diffusia W8A8 on OpenVINO"),
    "diffusia_w8a8_mse_ov": (_diffusia_on("openvino", "w8a8", "mse"), "diffusia W8A8 (MSE calibrator) on OpenVINO"),
    "diffusia_w8a8x2_ov": (_diffusia_on("openvino", "w8a8x2"), "diffusia w8a8x2 on OpenVINO"),
    "diffusia_w8a8_mse_ov_bf16": (
        _diffusia_on("openvino", "w8a8", "mse", "bf16"),
        "diffusia W8A8 (MSE calibrator) on OpenVINO, float layers in bf16",
    ),
    "diffusia_w8a8x2_ov_bf16": (
        _diffusia_on("openvino", "w8a8x2", precision="bf16"),
        "diffusia w8a8x2 on OpenVINO, float layers in bf16",
    ),
    "diffusia_mixed_mse_ov": (
        _diffusia_on("openvino", "mixed", "mse"),
        "diffusia mixed (W8A8 convolutions, MSE calibrator; attention/feed-forward Linears fp16) on OpenVINO",
    ),
    "diffusia_hybrid_mse_ov": (
        _diffusia_on("openvino", "hybrid", "mse"),
        "diffusia hybrid (W8A8 convolutions, MSE calibrator; attention/feed-forward Linears weight-only INT8) on OpenVINO",
    ),
    "diffusia_hybrid_mse_ov_bf16": (
        _diffusia_on("openvino", "hybrid", "mse", "bf16"),
        "diffusia hybrid (W8A8 convolutions, MSE calibrator; Linears weight-only INT8) on OpenVINO, float layers in bf16",
    ),
    "diffusia_w8_ov": (_diffusia_on("openvino", "w8"), "diffusia weight-only INT8 on OpenVINO"),
    "diffusia_w4_ov": (_diffusia_on("openvino", "w4"), "diffusia weight-only INT4 (groups of 64) on OpenVINO"),
    "diffusia_w8_ov_dynamic": (
        _diffusia_on("openvino", "w8", precision="f32+dynamic"),
        "diffusia weight-only INT8 on OpenVINO, inputs quantized dynamically (--runtime-precision f32+dynamic)",
    ),
    "diffusia_w4_ov_dynamic": (
        _diffusia_on("openvino", "w4", precision="f32+dynamic"),
        "diffusia weight-only INT4 (groups of 64) on OpenVINO, inputs quantized dynamically (f32+dynamic)",
    ),
    "diffusia_w8_ort": (_diffusia_on("onnxruntime", "w8"), "diffusia weight-only INT8 on ONNX Runtime"),
    "diffusia_w4_ort": (
        _diffusia_on("onnxruntime", "w4"),
        "diffusia weight-only INT4 (groups of 64, MatMulNBits) on ONNX Runtime",
    ),
    "diffusia_w8a8_mse_ort": (
        _diffusia_on("onnxruntime", "w8a8", "mse"),
        "diffusia W8A8 (MSE calibrator) on ONNX Runtime",
    ),
}

# diffusia with symmetric activation ranges: everywhere (int8) or where the range is balanced around 0 (balanced)
for _acts, _what in {"int8": "symmetric", "balanced": "int8 where the range is balanced"}.items():
    for _preset, _calibrator, _label in (("w8a8", "mse", "W8A8 (MSE calibrator"), ("w8a8x2", None, "w8a8x2 (")):
        for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
            BACKENDS[f"diffusia_{_preset}_{_acts}_ov{_suffix}"] = (
                _diffusia_on("openvino", _preset, _calibrator, _precision, activations=_acts),
                f"diffusia {_label}{', ' if _calibrator else ''}--activations {_acts}: {_what}) on OpenVINO"
                + (", float layers in bf16" if _precision == "bf16" else ""),
            )

# diffusia with INT8 attention (`--attention int8`): both attention matmuls on integer inputs, as NNCF's
# TRANSFORMER model runs them; W8A8 with --activations balanced, and w8a8x2
for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
    _float_layers = ", float layers in bf16" if _precision == "bf16" else ""
    BACKENDS["diffusia_w8a8_balanced_attn8_ov" + _suffix] = (
        _diffusia_on("openvino", "w8a8", "mse", _precision, activations="balanced", attention="int8"),
        "diffusia W8A8 (MSE calibrator, --activations balanced, --attention int8) on OpenVINO" + _float_layers,
    )
    BACKENDS["diffusia_w8a8x2_attn8_ov" + _suffix] = (
        _diffusia_on("openvino", "w8a8x2", precision=_precision, attention="int8"),
        "diffusia w8a8x2 (--attention int8) on OpenVINO" + _float_layers,
    )
