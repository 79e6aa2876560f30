"""OpenVINO backends of `benchmarks/backends.py`: OpenVINO FP32 / BF16 and NNCF's INT8 recipes as the peers a user
on an Intel CPU would pick, and diffusia's own quantized U-Net deployed on OpenVINO and ONNX Runtime (the product
path: `diffusia.runtime`). Same protocol as the other rows (`_backends_peers.Built`, one fresh worker each).

NNCF recipes, as optimum-intel applies them to diffusion U-Nets (optimum/intel/openvino/quantization.py):
- `nncf_int8`: `nncf.quantize` with its defaults (performance preset: symmetric activations, per-channel weights);
- `nncf_int8_transformer`: the same with `model_type=TRANSFORMER` (its attention-aware placement of quantizers);
- `nncf_w8`: `nncf.compress_weights` (weight-only INT8, asymmetric per channel);
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


def _compiled(model, threads: int, precision: str = "f32") -> Callable[[Inputs], torch.Tensor]:
    from diffusia.export.openvino import compile_model

    request = compile_model(model, precision, threads).create_infer_request()

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
        return Built(_compiled(files[0], ctx.threads, precision), files, [note], {"export_s": round(secs, 1)})

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
        return Built(
            _compiled(files[0], ctx.threads, precision),
            files,
            [f"{note}; {qsecs:.0f} s; float layers in {precision}"],
            {"export_s": round(secs, 1), "quantize_s": round(qsecs, 1)},
        )

    return build


def _diffusia_on(
    runtime: str,
    preset: str,
    calibrator: str | None = None,
    precision: str = "f32",
    symmetric: str | None = None,
    rules: tuple[str, ...] = (),
    prepare: Callable[[nn.Module, Ctx], str] | None = None,
    activations: str | None = None,
) -> Callable[[nn.Module, Ctx], Built]:
    """diffusia's preset (quantized and calibrated exactly as its torch row) exported with `diffusia.runtime` and
    run by the product's runtime U-Net (static shapes compiled on first call); `precision` of OpenVINO's float
    layers (the quantized ones are INT8 either way); `prepare(unet, ctx)`, an experiment's step between freezing
    and export, returns its note."""

    def build(unet: nn.Module, ctx: Ctx) -> Built:
        from diffusia.runtime import load_unet
        from diffusia.runtime.artifact import export_runtime

        built = _diffusia(preset, calibrator, symmetric, rules, activations)(unet, ctx)
        if prepare is not None:
            built.notes.append(prepare(unet, ctx))
        t0 = time.perf_counter()
        folder = ctx.out / runtime
        manifest = export_runtime(unet, runtime, folder, check=False)
        secs = time.perf_counter() - t0
        config = unet.config
        del unet
        ru = load_unet(
            runtime, folder, config, threads=ctx.threads, **({"precision": precision} if runtime == "openvino" else {})
        )
        files = [p for p in folder.iterdir() if p.name != "runtime.json"]
        notes = list(built.notes)
        notes.append(
            f"exported for {runtime} {manifest['runtime_version'].split('-')[0]} in {secs:.0f} s "
            "(diffusia.runtime, not re-checked here)"
            + (f"; float layers in {precision}" if runtime == "openvino" else "")
        )

        def run(x: Inputs) -> torch.Tensor:
            return ru(*x, return_dict=False)[0]

        return Built(run, files, notes, {**built.info, "export_s": round(secs, 1)})

    return build


BACKENDS = {
    "ov_fp32": (_ov("f32"), "runtime FP32 (OpenVINO)"),
    "ov_bf16": (_ov("bf16"), "runtime BF16 hint (OpenVINO)"),
    "nncf_int8": (_nncf("default"), "OpenVINO + NNCF INT8 (defaults)"),
    "nncf_int8_transformer": (_nncf("transformer"), "OpenVINO + NNCF INT8, model_type=TRANSFORMER"),
    "nncf_hybrid": (_nncf("hybrid"), "OpenVINO + NNCF hybrid (weight-only MatMuls, INT8 rest)"),
    "nncf_w8": (_nncf("w8"), "OpenVINO + NNCF weight-only INT8"),
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

# Experiment rows (not product options): diffusia W8A8 with its activation ranges made symmetric before freezing
# (`_backends_peers._symmetric_activations`), with f32 and bf16 float layers.
for _name, (_how, _what) in {
    "diffusia_w8a8_mse_sym_ov": ("widen", "MSE ranges widened to symmetric"),
    "diffusia_w8a8_symmse_ov": ("search", "symmetric ranges of least squared error"),
    "diffusia_w8a8_symmse_linear_ov": ("search-linear", "symmetric ranges of least squared error on Linear layers"),
    "diffusia_w8a8_symmse_balanced_ov": ("search-balanced", "symmetric ranges of least squared error where balanced"),
}.items():
    for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
        BACKENDS[_name + _suffix] = (
            _diffusia_on("openvino", "w8a8", "mse", _precision, symmetric=_how),
            f"diffusia W8A8 on OpenVINO, {_what} (experiment), float layers in {_precision}",
        )

# Experiment row (SD v1.5 layer names): w8a8x2 with the second digit on the full-resolution blocks' attention and
# feed-forward layers only; their resnet and down-sampling convolutions take one digit.
FULL_RES_CONVS = r"re:(down_blocks\.0|up_blocks\.3)\.(resnets\.\d+\.(conv1|conv2|conv_shortcut)|downsamplers\.0\.conv)"
for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
    BACKENDS["diffusia_w8a8x2_attn_ov" + _suffix] = (
        _diffusia_on("openvino", "w8a8x2", precision=_precision, rules=(f"{FULL_RES_CONVS}=w8a8",)),
        "diffusia w8a8x2 on OpenVINO, second digit on the full-resolution attention/feed-forward only (experiment), "
        f"float layers in {_precision}",
    )


def _pad_first(make_forward: Callable[[nn.Module], Callable]) -> Callable[[nn.Module], Callable]:
    """Experiment: a padded Conv2d's zero padding applied in float before its input's QDQ pair (0.0 quantizes to
    the zero point exactly, so the codes are unchanged) and the INT8 convolution itself unpadded, whose zero-point
    compensation is then one constant per output channel. Wraps `diffusia.export.onnx._qdq_forward`."""
    import torch.nn.functional as F

    def make(m: nn.Module) -> Callable:
        if not (isinstance(m, nn.Conv2d) and m.spec.act_digits and any(m.padding) and m.padding_mode == "zeros"):
            return make_forward(m)
        ph, pw = m.padding
        m.padding = (0, 0)  # the module is exported, never run again
        inner = make_forward(m)
        return lambda x: inner(F.pad(x, (pw, pw, ph, ph)))

    return make


def _with_forward(build: Callable[[nn.Module, Ctx], Built], wrap, note: str) -> Callable[[nn.Module, Ctx], Built]:
    """`build` with the export's QDQ forwards replaced by `wrap(diffusia.export.onnx._qdq_forward)` (experiments)."""

    def run(unet: nn.Module, ctx: Ctx) -> Built:
        from diffusia.export import onnx as qdq

        qdq._qdq_forward = wrap(qdq._qdq_forward)  # this worker process only
        built = build(unet, ctx)
        built.notes.append(note)
        return built

    return run


PAD_FIRST = "padded convolutions: zero padding in float before the QDQ pair (experiment)"
BACKENDS["diffusia_w8a8_mse_padfirst_ov"] = (
    _with_forward(_diffusia_on("openvino", "w8a8", "mse"), _pad_first, PAD_FIRST),
    "diffusia W8A8 (MSE calibrator) on OpenVINO, padding before quantization (experiment)",
)
BACKENDS["diffusia_w8a8x2_padfirst_ov"] = (
    _with_forward(_diffusia_on("openvino", "w8a8x2"), _pad_first, PAD_FIRST),
    "diffusia w8a8x2 on OpenVINO, padding before quantization (experiment)",
)


def _zero_point_folded(make_forward: Callable[[nn.Module], Callable]) -> Callable[[nn.Module], Callable]:
    """Experiment: a padded one-digit Conv2d quantizes x + zp*s with zero point 0 (the same codes) after padding
    in float, and takes zp*s*sum(W) off its bias, so OpenVINO's INT8 convolution has neither a zero point nor
    padding. Wraps `diffusia.export.onnx._qdq_forward`."""
    import torch.nn.functional as F

    def make(m: nn.Module) -> Callable:
        if not (isinstance(m, nn.Conv2d) and m.spec.act_digits == 1 and m.spec.onnx_int8_weight and any(m.padding)):
            return make_forward(m)
        (scale, zp), qmax = m.act_qparams(m.group), int(m.settings.act_qmax)
        w_float = m.spec.dequantize(m.frozen_buffers(), m.weight_shape)
        w_scale = m.weight_scale.float()
        zeros = torch.zeros_like(w_scale, dtype=torch.int32)
        shift = zp * scale
        w = torch.fake_quantize_per_channel_affine(w_float, w_scale, zeros, 0, -128, 127)
        bias = (torch.zeros(w.shape[0]) if m.bias is None else m.bias.detach().float()) - shift * w.sum((1, 2, 3))
        ph, pw = m.padding

        def forward(x: torch.Tensor) -> torch.Tensor:
            x = F.pad(x, (pw, pw, ph, ph)) + shift
            if qmax < 255:  # as diffusia.export.onnx._fake_quant
                x = torch.clamp(x, 0.0, qmax * scale)
            x = torch.fake_quantize_per_tensor_affine(x, scale, 0, 0, 255)
            # the weight's QDQ pair inside the graph, as _qdq_forward (it becomes an int8 initializer)
            wq = torch.fake_quantize_per_channel_affine(w_float, w_scale, zeros, 0, -128, 127)
            return F.conv2d(x, wq, bias, m.stride, 0, m.dilation, m.groups)

        return forward

    return make


BACKENDS["diffusia_w8a8_mse_zpfold_ov"] = (
    _with_forward(
        _diffusia_on("openvino", "w8a8", "mse"),
        _zero_point_folded,
        "padded convolutions: x + zp*s quantized with zero point 0 after padding in float, bias folded (experiment)",
    ),
    "diffusia W8A8 (MSE calibrator) on OpenVINO, padded convolutions without zero point (experiment)",
)


def _residual_zero_point_127(build: Callable[[nn.Module, Ctx], Built]) -> Callable[[nn.Module, Ctx], Built]:
    """Experiment: the export's second `w8a8x2` digit with zero point qmax // 2 (127), as before it moved to
    mid-scale (128): the same values, but OpenVINO then runs the residual's convolution as u8 with a zero point."""

    def run(unet: nn.Module, ctx: Ctx) -> Built:
        from diffusia.quant import qmath

        mid_scale = qmath.residual_qparams
        qmath.residual_qparams = lambda scale, qmax: (mid_scale(scale, qmax)[0], qmax // 2)  # this worker only
        built = build(unet, ctx)
        built.notes.append("second digit's zero point 127 (experiment)")
        return built

    return run


for _activations, _infix in ((None, ""), ("int8", "_int8")):
    BACKENDS[f"diffusia_w8a8x2{_infix}_resid127_ov"] = (
        _residual_zero_point_127(_diffusia_on("openvino", "w8a8x2", activations=_activations)),
        f"diffusia w8a8x2{' (int8 activations)' if _activations else ''} on OpenVINO, second digit's zero point "
        "127 (experiment)",
    )


# Experiment: NNCF also quantizes the tensors its residual additions read, so its convolutions write int8. Here the
# outputs of the layers that feed a residual addition (resnet conv2 / conv_shortcut, attention to_out.0,
# feed-forward net.2, transformer proj_out) get a QDQ pair of their own, which OpenVINO fuses into the layer.
RESIDUAL_BRANCHES = r"(conv2|conv_shortcut|to_out\.0|ff\.net\.2|proj_out)$"


def _output_quantizers(
    pattern: str, calibrator: str = "mse", symmetric: bool = False
) -> Callable[[nn.Module, Ctx], str]:
    """A `prepare` step: u8 ranges (`calibrator`; `symmetric`: zero point at mid-scale, i.e. int8 for OpenVINO) of
    the outputs of the quantized layers whose names match `pattern`, observed over the calibration inputs on the
    frozen model, then a QDQ pair after each of them in the export (wraps `diffusia.export.onnx._qdq_forward`)."""
    import re

    def prepare(unet: nn.Module, ctx: Ctx) -> str:
        from diffusia.calib.base import get_calibrator
        from diffusia.export import onnx as qdq
        from diffusia.quant import api, qmath

        cals = {
            m: get_calibrator(calibrator, symmetric=symmetric)
            for n, m in api.qmodules(unet).items()
            if re.search(pattern, n)
        }
        cals = {m: c for m, c in cals.items() if m.spec.act_digits}
        hooks = [m.register_forward_hook(lambda _m, _a, y, c=c: c.collect(y)) for m, c in cals.items()]
        with torch.no_grad():
            for x in ctx.calib:
                unet(*x)
        for h in hooks:
            h.remove()
        qparams = {m: qmath.act_qparams(*c.compute(), 255, symmetric) for m, c in cals.items()}
        make_forward = qdq._qdq_forward

        def make(m: nn.Module) -> Callable:
            forward = make_forward(m)
            if m not in qparams:
                return forward
            scale, zp = qparams[m]
            return lambda x: torch.fake_quantize_per_tensor_affine(forward(x), scale, zp, 0, 255)

        qdq._qdq_forward = make  # this worker process only
        kind = "int8 (symmetric)" if symmetric else "u8"
        return f"outputs of {len(qparams)} layers ({pattern}) quantized {kind}, {calibrator} ranges (experiment)"

    return prepare


for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
    BACKENDS["diffusia_w8a8_mse_outq_ov" + _suffix] = (
        _diffusia_on("openvino", "w8a8", "mse", _precision, prepare=_output_quantizers(RESIDUAL_BRANCHES)),
        f"diffusia W8A8 (MSE) on OpenVINO, residual-branch outputs quantized (experiment), float layers in {_precision}",
    )

# Experiment: NNCF's TRANSFORMER model runs the attention's matmuls (Q.K^T, P.V) on int8 inputs; diffusia's take
# float Q, K, V. Here the outputs of to_q / to_k / to_v get symmetric int8 QDQ pairs of their own (MSE ranges).
ATTENTION_QKV = r"attn[12]\.to_[qkv]$"
for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
    BACKENDS["diffusia_w8a8_balanced_qkv_ov" + _suffix] = (
        _diffusia_on(
            "openvino",
            "w8a8",
            "mse",
            _precision,
            prepare=_output_quantizers(ATTENTION_QKV, symmetric=True),
            activations="balanced",
        ),
        "diffusia W8A8 (MSE, --activations balanced) on OpenVINO, Q/K/V quantized int8 (experiment), float layers in "
        + _precision,
    )


def _int8_attention(calibrator: str = "mse") -> Callable[[nn.Module, Ctx], str]:
    """A `prepare` step: Q/K/V quantized as in the rows above, and the attention probabilities (softmax output)
    quantized u8 by an explicit attention in the export (softmax, QDQ pair, matmul), so both of the attention's
    matmuls take int8 inputs as in NNCF's TRANSFORMER model. The probabilities' ranges (`calibrator`) are observed
    per attention call, in call order, over the calibration inputs (a softmax over 1024 keys stays far below 1)."""
    qkv = _output_quantizers(ATTENTION_QKV, calibrator, symmetric=True)

    def prepare(unet: nn.Module, ctx: Ctx) -> str:
        import torch.nn.functional as F

        from diffusia.calib.base import get_calibrator
        from diffusia.quant import qmath

        note = qkv(unet, ctx)
        cals: list = []
        state = {"call": 0, "qparams": None}

        def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
            if attn_mask is not None or is_causal or dropout_p:
                raise ValueError("the int8-attention experiment takes no mask, causality or dropout")
            probs = ((q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)).softmax(-1)
            i, state["call"] = state["call"], state["call"] + 1
            if state["qparams"] is None:  # observing
                if i == len(cals):
                    cals.append(get_calibrator(calibrator))
                cals[i].collect(probs)
            else:
                s, zp = state["qparams"][i % len(cals)]
                probs = torch.fake_quantize_per_tensor_affine(probs, s, zp, 0, 255)
            return probs @ v

        F.scaled_dot_product_attention = attention  # this worker process only (diffusers looks it up per call)
        with torch.no_grad():
            for x in ctx.calib:
                state["call"] = 0
                unet(*x)
        state["qparams"] = [qmath.act_qparams(*c.compute(), 255) for c in cals]
        state["call"] = 0  # the export traces the attentions in the same order
        highs = [round(c.compute()[1], 4) for c in cals]
        return note + (
            f"; attention probabilities of {len(cals)} attentions quantized u8, {calibrator} ranges "
            f"[0, {min(highs)}..{max(highs)}] (experiment)"
        )

    return prepare


for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
    BACKENDS["diffusia_w8a8_balanced_attn8_ov" + _suffix] = (
        _diffusia_on("openvino", "w8a8", "mse", _precision, prepare=_int8_attention(), activations="balanced"),
        "diffusia W8A8 (MSE, --activations balanced) on OpenVINO, attention on int8 Q/K/V and probabilities "
        f"(experiment), float layers in {_precision}",
    )
BACKENDS["diffusia_w8a8x2_attn8_ov"] = (
    _diffusia_on("openvino", "w8a8x2", prepare=_int8_attention()),
    "diffusia w8a8x2 on OpenVINO, attention on int8 Q/K/V and probabilities (experiment)",
)
