"""Experiment rows of `benchmarks/backends.py` (not product options): diffusia on OpenVINO with one change each to
its ranges, its export or its attention, to find where NNCF's INT8 model is faster. The README's VNNI and AMX
sections give what each one measured; `_backends_openvino.py` has the product rows and the peers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from _backends_openvino import _diffusia_on
from _backends_peers import Built, Ctx, _diffusia
from _onnxruntime_convs import widen_weight_only_convs
from _whole_attention import attention_traced_whole
from torch import nn
from x2_layer_gain import LADDER

BACKENDS: dict[str, tuple[Callable[[nn.Module, Ctx], Built], str]] = {}

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
    compensation is then one constant per output channel. Wraps `diffusia.export.qdq_layers.qdq_forward`."""
    import torch.nn.functional as F

    def make(m: nn.Module, **kwargs) -> Callable:
        if not (isinstance(m, nn.Conv2d) and m.spec.act_digits and any(m.padding) and m.padding_mode == "zeros"):
            return make_forward(m, **kwargs)
        ph, pw = m.padding
        m.padding = (0, 0)  # the module is exported, never run again
        inner = make_forward(m)
        return lambda x: inner(F.pad(x, (pw, pw, ph, ph)))

    return make


def _with_forward(build: Callable[[nn.Module, Ctx], Built], wrap, note: str) -> Callable[[nn.Module, Ctx], Built]:
    """`build` with the export's QDQ forwards replaced by `wrap(diffusia.export.qdq_layers.qdq_forward)` (experiments)."""

    def run(unet: nn.Module, ctx: Ctx) -> Built:
        from diffusia.export import qdq_layers as qdq

        qdq.qdq_forward = wrap(qdq.qdq_forward)  # this worker process only
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
    padding. Wraps `diffusia.export.qdq_layers.qdq_forward`."""
    import torch.nn.functional as F

    def make(m: nn.Module, **kwargs) -> Callable:
        if not (isinstance(m, nn.Conv2d) and m.spec.act_digits == 1 and m.spec.onnx_int8_weight and any(m.padding)):
            return make_forward(m, **kwargs)
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
            if qmax < 255:  # as diffusia.export.qdq_layers.fake_quant
                x = torch.clamp(x, 0.0, qmax * scale)
            x = torch.fake_quantize_per_tensor_affine(x, scale, 0, 0, 255)
            # the weight's QDQ pair inside the graph, as qdq_forward (it becomes an int8 initializer)
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
    frozen model, then a QDQ pair after each of them in the export (wraps `diffusia.export.qdq_layers.qdq_forward`)."""
    import re

    def prepare(unet: nn.Module, ctx: Ctx) -> str:
        from diffusia.calib.base import get_calibrator
        from diffusia.export import qdq_layers as qdq
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
        make_forward = qdq.qdq_forward

        def make(m: nn.Module, **kwargs) -> Callable:
            forward = make_forward(m, **kwargs)
            if m not in qparams:
                return forward
            scale, zp = qparams[m]
            return lambda x: torch.fake_quantize_per_tensor_affine(forward(x), scale, zp, 0, 255)

        qdq.qdq_forward = make  # this worker process only
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


# Experiment: the export before it split GEGLU projections into value and gate layers (one wide layer, split after;
# OpenVINO runs that split on a reference kernel). The same quantization and values as the product's row.
def _geglu_whole(unet: nn.Module, ctx: Ctx) -> str:
    from diffusia.export import qdq_layers

    qdq_layers.split_geglus = lambda unet, qmods: []  # this worker process only
    return "GEGLU projections exported whole, split after (experiment)"


for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
    BACKENDS["diffusia_w8a8_balanced_attn8_geglu_whole_ov" + _suffix] = (
        _diffusia_on(
            "openvino", "w8a8", "mse", _precision, activations="balanced", attention="int8", prepare=_geglu_whole
        ),
        "diffusia W8A8 (MSE, --activations balanced, --attention int8) on OpenVINO, GEGLU projections whole "
        f"(experiment), float layers in {_precision}",
    )
BACKENDS["diffusia_w8a8_mse_geglu_whole_ort"] = (
    _diffusia_on("onnxruntime", "w8a8", "mse", prepare=_geglu_whole),
    "diffusia W8A8 (MSE calibrator) on ONNX Runtime, GEGLU projections whole (experiment)",
)


# Experiment: int8 attention traced as before it kept [batch, heads, tokens, dim] (3-D matrices of batch x heads,
# sliced as PyTorch computes them in chunks, one chunk).
def _attention_3d(unet: nn.Module, ctx: Ctx) -> str:
    from diffusia.quant.attention import QAttnProcessor

    def attend(self, q, k, v, mask):
        return self._in_chunks(q, k, v, mask, q.shape[0] * q.shape[1])

    QAttnProcessor._attend = attend  # this worker process only
    return "int8 attention traced on 3-D batch x heads matrices (experiment)"


BACKENDS["diffusia_w8a8_balanced_attn8_3d_ov_bf16"] = (
    _diffusia_on("openvino", "w8a8", "mse", "bf16", activations="balanced", attention="int8", prepare=_attention_3d),
    "diffusia W8A8 (MSE, --activations balanced, --attention int8) on OpenVINO, int8 attention traced 3-D "
    "(experiment), float layers in bf16",
)


# Experiment rows (the AVX2 class's <= 3 % question; SD v1.5 layer names): W8A8-MSE on diffusia's PyTorch kernels
# with the second activation digit on the last up block only, or on its convolutions only
# (`benchmarks/w8a8_schemes.py` has their errors).
_UP3 = r"re:up_blocks\.3\..*"
for _name, (_kinds, _what) in {
    "diffusia_w8a8_mse_x2_up3": (
        r"(resnets\.\d+\.(conv1|conv2|conv_shortcut)|proj_in|proj_out|to_[qkv]|to_out\.0|ff\.net\.(0\.proj|2))$",
        "the last up block",
    ),
    "diffusia_w8a8_mse_x2_up3_convs": (
        r"(resnets\.\d+\.(conv1|conv2|conv_shortcut)|proj_in|proj_out)$",
        "the last up block's convolutions",
    ),
}.items():
    BACKENDS[_name] = (
        _diffusia("w8a8", "mse", rules=(f"{_UP3}{_kinds}=w8a8x2",)),
        f"diffusia W8A8-MSE on its PyTorch kernels, second activation digit on {_what} (experiment)",
    )


_REPO = Path(__file__).resolve().parent.parent


def _x2_plan(
    runtime: str | None = None, precision: str = "f32", top: int | None = None, env: str = "X2_PLAN"
) -> Callable[[nn.Module, Ctx], Built]:
    """W8A8-MSE with the second digit on the layers `benchmarks/x2_layer_gain.py` chose, with the activations and
    attention it measured them with: its JSON at $X2_PLAN (or the variable `env` names), by default (X2_PLAN) this
    class's `results/<class>/x2_layer_gain.json`; on diffusia's PyTorch kernels, or exported to `runtime`. `top`: the
    first `top` layers of its ranking instead of its plan (one of the top-k lists it measured), so plans of several
    sizes are timed in one run."""

    def build(unet: nn.Module, ctx: Ctx) -> Built:
        import json
        import os

        from _results import results_dir

        if not (os.environ.get(env) or env == "X2_PLAN"):
            raise SystemExit(f"set {env} to the JSON of a benchmarks/x2_layer_gain.py run")
        path = Path(os.environ.get(env) or results_dir() / "x2_layer_gain.json")
        if not path.is_file():
            raise SystemExit(f"no layer plan at {path}: run benchmarks/x2_layer_gain.py first, or set {env}")
        from x2_layer_gain import measured_plan, plan_settings

        result = json.loads(path.read_text())
        plan = result["plan"] = measured_plan(result, top)
        if not plan:
            raise SystemExit(f"{path} has no plan: no top-k list reached its target error")
        options = plan_settings(result)
        if runtime:
            built = _diffusia_on(runtime, "w8a8", "mse", precision, **options)(unet, ctx)
        else:
            built = _diffusia("w8a8", "mse", **options)(unet, ctx)
        shown = path.resolve().relative_to(_REPO) if path.resolve().is_relative_to(_REPO) else path
        built.notes[0] = built.notes[0].replace(plan["rule"], f"second digit on the top {plan['k']} layers of {shown}")
        return built

    return build


_PLAN = "second activation digit on the layers of x2_layer_gain.py's plan (experiment)"
BACKENDS["diffusia_w8a8_mse_x2_plan"] = (_x2_plan(), f"diffusia W8A8-MSE on its PyTorch kernels, {_PLAN}")
for _precision, _suffix in (("f32", ""), ("bf16", "_bf16")):
    BACKENDS["diffusia_w8a8_mse_x2_plan_ov" + _suffix] = (
        _x2_plan("openvino", _precision),
        f"diffusia W8A8-MSE on OpenVINO, {_PLAN}, float layers in {_precision}",
    )
BACKENDS["diffusia_w8a8_x2_grown_ov_bf16"] = (
    _x2_plan("openvino", "bf16", env="X2_GROWN"),
    "diffusia W8A8 on OpenVINO grown by a few second activation digits (x2_layer_gain.py's plan at $X2_GROWN, from"
    " W8A8), float layers in bf16",
)
# The plan's ranking cut at each size it measured (x2_layer_gain.LADDER), bf16 float layers: which size a step's
# margin can pay for.
for _k in LADDER:
    BACKENDS[f"diffusia_w8a8_mse_x2_top{_k}_ov_bf16"] = (
        _x2_plan("openvino", "bf16", top=_k),
        f"diffusia W8A8-MSE on OpenVINO, second activation digit on the top {_k} layers of x2_layer_gain.py's"
        " ranking (experiment), float layers in bf16",
    )


def _widened_convs(preset: str) -> Callable[[nn.Module, Ctx], Built]:
    """Experiment: diffusia's ONNX Runtime graph with `_onnxruntime_convs.widen_weight_only_convs` applied after its
    own passes."""

    def build(unet: nn.Module, ctx: Ctx) -> Built:
        from diffusia.export import weights

        int4_matmuls = weights.int4_matmuls  # the last pass of an ONNX Runtime graph's export

        def passes(model) -> int:
            n = int4_matmuls(model)
            widen_weight_only_convs(model)
            return n

        weights.int4_matmuls = passes  # this worker process only
        built = _diffusia_on("onnxruntime", preset)(unet, ctx)
        built.notes.append("weight-only convolutions widened by ONNX Runtime at load (experiment)")
        return built

    return build


BACKENDS["diffusia_w8_ort_widened_convs"] = (
    _widened_convs("w8"),
    "diffusia weight-only INT8 on ONNX Runtime, convolutions widened at load (experiment)",
)


def _whole_attention(preset: str, calibrator: str | None) -> Callable[[nn.Module, Ctx], Built]:
    """diffusia's ONNX Runtime row with float attention traced whole, as its graphs were before `head_slices`."""

    def build(unet: nn.Module, ctx: Ctx) -> Built:
        with attention_traced_whole():
            built = _diffusia_on("onnxruntime", preset, calibrator)(unet, ctx)
        built.notes.append("float attention traced whole (experiment)")
        return built

    return build


# ONNX Runtime sessions that allocate otherwise than diffusia's (diffusia.export.onnx.ARENA; kept is ONNX Runtime's
# default, which diffusia's sessions used until exact-unplanned was measured), and graphs with attention traced whole
for _row, _preset, _calibrator, _what in (
    ("diffusia_w8a8_mse_ort", "w8a8", "mse", "W8A8 (MSE calibrator)"),
    ("diffusia_w8_ort", "w8", None, "weight-only INT8"),
):
    for _arena in ("kept", "shrunk", "off", "unplanned", "exact"):
        BACKENDS[f"{_row}_arena_{_arena}"] = (
            _diffusia_on("onnxruntime", _preset, _calibrator, arena=_arena),
            f"diffusia {_what} on ONNX Runtime, memory arena {_arena} (experiment)",
        )
    BACKENDS[f"{_row}_whole_attention"] = (
        _whole_attention(_preset, _calibrator),
        f"diffusia {_what} on ONNX Runtime, float attention traced whole (experiment)",
    )
