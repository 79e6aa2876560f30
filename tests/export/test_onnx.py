import collections
import contextlib
import dataclasses
import re

import onnx
import pytest
import torch

from diffusia import load_pipeline
from diffusia.config import get_preset
from diffusia.errors import DiffusiaError
from diffusia.export.compare import same_codes
from diffusia.export.onnx import (
    CHECK_BATCH,
    CHECK_SEED,
    check_against_onnxruntime,
    example_inputs,
    export_unet,
    tie_noise,
)
from diffusia.prompts import load_prompts
from diffusia.quant import api, attention, cpu
from diffusia.quant.pipeline import quantize_pipeline
from tests.conftest import build_micro_pipeline
from tests.export import weight_parts

HOST_VNNI = cpu.has_vnni(cpu.detected_features())


def _quantized(preset, cls=None, **changes):
    pipe = build_micro_pipeline()
    recipe = dataclasses.replace(get_preset(preset), **changes)
    with cpu.simulate(cls) if cls else contextlib.nullcontext():
        return quantize_pipeline(
            pipe, recipe, load_prompts("tiny"), calib_size=2, steps=2, progress=False, validate=False
        )


@pytest.mark.parametrize("cls", cpu.CPU_CLASSES)
@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(keep_as="fp32", activations="uint8"),
        dict(activations="uint7"),
        dict(full_res_weights="w8a8x2"),
        dict(attention="int8"),
    ],
    ids=["preset", "uint8-fp32-kept", "uint7", "x2", "attn8"],
)
def test_onnxruntime_computes_the_same_integer_codes(tmp_path, changes, cls):
    pipe = _quantized("w8a8", cls, **changes)
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    check = check_against_onnxruntime(pipe.unet, path)
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    residual_digits = [
        n.name for n in nodes if n.op_type == "QuantizeLinear" and re.search(r"/QuantizeLinear_\d+$", n.name)
    ]
    x2 = [n for n, m in api.qmodules(pipe.unet).items() if m.precision == "w8a8x2"]
    assert bool(residual_digits) == bool(x2)  # w8a8x2: a second quantizer (the residual's) in the layer's scope
    attention_quantizers = [  # int8 attention: Q, K, V and the probabilities, each in its own scope
        n.name for n in nodes if n.op_type == "QuantizeLinear" and re.search(r"/processor/(q|k|v|probs)/Quant", n.name)
    ]
    assert len(attention_quantizers) == 4 * len(attention.processors(pipe.unet))
    assert bool(attention_quantizers) == (changes.get("attention") == "int8")
    # strict, layer by layer on the same input: every activation quantizer of the graph is diffusia's (scale,
    # zero point, range, residual digit), codes equal but for one-step float ties
    q = check["quantizers"]
    assert q["quantizers"] == check["codes"]["layers"] + len(residual_digits) + len(attention_quantizers) > 10
    assert q["other_differences"] == 0, q
    assert q["tie_differences"] <= 1e-4 * q["codes"]
    # along the whole network: output-level agreement is luck on a quantized net (a tie upstream moves every later
    # layer), so codes must agree up to single-step ties at the first layer that differs. ONNX Runtime's own
    # u8 x s8 kernels saturate like oneDNN's on CPUs without VNNI, so the VNNI layout is compared on VNNI only.
    if HOST_VNNI or cls == "avx2":
        assert same_codes(check["codes"]), check["codes"]


def test_onnxruntime_output_matches_diffusia_on_the_trained_tiny_unet(tmp_path):
    # the stated tolerance of `diffusia export` (5 %); the random micro model amplifies ties far more
    pipe = quantize_pipeline(
        load_pipeline("tiny", progress=False),
        get_preset("w8a8"),
        load_prompts("tiny"),
        calib_size=2,
        steps=2,
        progress=False,
        validate=False,
    )
    check = check_against_onnxruntime(pipe.unet, export_unet(pipe.unet, tmp_path / "unet.onnx"))
    assert same_codes(check["codes"])
    assert check["relative_l2_vs_diffusia"] < 0.05


def test_code_comparison_catches_a_different_quantizer(tmp_path):
    pipe = _quantized("w8a8", keep_as="fp32")
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    name, layer = next((n, m) for n, m in api.qmodules(pipe.unet).items() if m.precision == "w8a8")
    layer.act_scale.mul_(1.5)  # diffusia now quantizes this layer's input differently from the exported graph
    check = check_against_onnxruntime(pipe.unet, path)
    assert check["codes"]["first_difference"]["layer"] == name
    assert not same_codes(check["codes"])
    q = check["quantizers"]
    assert q["first_other_difference"]["layer"] == name and q["other_differences"] > 0.1 * q["codes"] / q["quantizers"]


def test_tie_noise_is_the_quantized_models_own():
    float_unet = build_micro_pipeline().unet
    pipe = _quantized("w8a8", keep_as="fp32")
    x = example_inputs(pipe.unet, CHECK_BATCH, CHECK_SEED)
    assert 0 < tie_noise(float_unet, x) < 1e-4  # a float U-Net moves with its input
    # a quantized one is piecewise constant: it stays put until a code crosses a rounding boundary (none does at 1e-6
    # in the micro model; 12 % moves in sd15-arch at 512x512: benchmarks/openvino_check_inputs.py), then jumps
    assert tie_noise(pipe.unet, x) == 0.0
    assert tie_noise(pipe.unet, x, rel=1e-2) > 0


def test_int8_attention_exports_on_4d_tensors(tmp_path):
    # [batch, heads, tokens, dim] throughout, the pattern OpenVINO fuses with its transposes: no 3-D batch x heads
    # matrices, whose reshapes and slices OpenVINO ran on int8 tensors one by one
    pipe = _quantized("w8a8", attention="int8")
    nodes = onnx.load(str(export_unet(pipe.unet, tmp_path / "unet.onnx"))).graph.node
    ops = collections.Counter(n.op_type for n in nodes if "/processor/" in n.name)
    attentions = len(attention.processors(pipe.unet))
    assert ops["Softmax"] == attentions > 0 and ops["MatMul"] >= 2 * attentions
    assert ops["Slice"] == 0 and ops["Reshape"] <= 4 * attentions  # Q, K, V into heads and the output back


def test_w8a8_exports_qdq_with_int8_weights(tmp_path):
    pipe = _quantized("w8a8", activations="uint7", keep_as="fp32")
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    model = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    int8_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert len(int8_inits) == ops["DequantizeLinear"] - ops["QuantizeLinear"]  # one per quantized weight
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in int8_inits}
    parts = weight_parts(pipe.unet)  # a GEGLU projection's weight in two halves
    frozen = [
        half
        for m in api.qmodules(pipe.unet).values()
        if m.precision == "w8a8"
        for half in m.weight_int8.chunk(parts[id(m)])
    ]
    assert len(weights) == len(frozen) and sorted(int(w.__abs__().max()) for w in weights.values()) == sorted(
        int(w.abs().max()) for w in frozen
    )  # the int8 weights are diffusia's, not re-quantized


def test_weight_only_int8_export(tmp_path):
    pipe = _quantized("w8")
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    # float activations: ONNX Runtime's MatMulNBits fusion would quantize them at its default accuracy level
    assert check_against_onnxruntime(pipe.unet, path)["relative_l2_vs_diffusia"] < 1e-5


def test_fp16_weights_export_as_fp16_behind_a_cast(tmp_path):
    pipe = _quantized("fp16")
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    assert check_against_onnxruntime(pipe.unet, path)["relative_l2_vs_diffusia"] < 1e-5
    graph = onnx.load(str(path)).graph
    constants = [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    half = [t for t in [*graph.initializer, *constants] if t.data_type == onnx.TensorProto.FLOAT16]
    parts = weight_parts(pipe.unet)
    big = [
        half
        for m in api.qmodules(pipe.unet).values()
        if m.precision == "fp16"
        for half in m.weight_fp16.chunk(parts[id(m)])
        if half.numel() >= 1024
    ]
    assert len(half) == len(big) > 5
    assert sum(n.op_type == "Cast" and n.input[0].endswith("_fp16") for n in graph.node) == len(half)


@pytest.mark.parametrize("group_size", [64, 48], ids=["whole-groups", "padded-groups"])
def test_int4_weights_export_as_their_codes_and_group_scales(tmp_path, group_size):
    pipe = _quantized("w4", int4_group_size=group_size)
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    assert check_against_onnxruntime(pipe.unet, path)["relative_l2_vs_diffusia"] < 1e-5
    model = onnx.load(str(path))
    codes = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    w4 = [m for m in api.qmodules(pipe.unet).values() if m.precision == "w4"]
    assert len(codes) == len(w4) > 10 and all(c.min() >= -8 and c.max() <= 7 for c in codes)
    assert sorted(c.size for c in codes) == sorted(2 * m.weight_int4.numel() for m in w4)  # padded, one per nibble


@pytest.mark.parametrize("group_size", [64, 48], ids=["power-of-two-groups", "other-groups"])
def test_int4_linears_become_matmulnbits_for_onnxruntime_and_compute_the_same(tmp_path, group_size):
    pipe = _quantized("w4", int4_group_size=group_size)
    path = export_unet(pipe.unet, tmp_path / "unet.onnx", matmul_nbits=True)
    assert check_against_onnxruntime(pipe.unet, path)["relative_l2_vs_diffusia"] < 1e-5
    nodes = onnx.load(str(path)).graph.node
    linears = [m for m in api.qmodules(pipe.unet).values() if m.precision == "w4" and isinstance(m, torch.nn.Linear)]
    nbits = [n for n in nodes if n.op_type == "MatMulNBits"]
    assert len(linears) > 5 and len(nbits) == (len(linears) if group_size == 64 else 0)  # its blocks: powers of 2
    if group_size == 64:  # per-channel int8 weights stay DequantizeLinear (ONNX Runtime fuses those itself)
        w8 = export_unet(_quantized("w8").unet, tmp_path / "w8.onnx", matmul_nbits=True)
        assert not any(n.op_type == "MatMulNBits" for n in onnx.load(str(w8)).graph.node)


def test_float_unet_is_refused(tmp_path):
    with pytest.raises(DiffusiaError, match="frozen quantized"):
        export_unet(build_micro_pipeline().unet, tmp_path / "unet.onnx")
    assert not list(tmp_path.iterdir())
