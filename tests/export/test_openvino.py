import collections
import contextlib
import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")
import openvino as ov  # noqa: E402

from diffusia import load_pipeline  # noqa: E402
from diffusia.config import get_preset  # noqa: E402
from diffusia.export import compare
from diffusia.export import onnx as qdq  # noqa: E402
from diffusia.export.openvino import check_against_openvino  # noqa: E402
from diffusia.prompts import load_prompts  # noqa: E402
from diffusia.quant import api, cpu  # noqa: E402
from diffusia.quant.pipeline import quantize_pipeline  # noqa: E402
from diffusia.runtime.artifact import export_runtime, group_timesteps, read_manifest  # noqa: E402
from tests.conftest import build_micro_pipeline  # noqa: E402
from tests.export import weight_parts  # noqa: E402

HOST_VNNI = cpu.has_vnni(cpu.detected_features())


def _quantized(preset, cls=None, pipe=None, steps=2, **changes):
    pipe = pipe or build_micro_pipeline()
    recipe = dataclasses.replace(get_preset(preset), **changes)
    with cpu.simulate(cls) if cls else contextlib.nullcontext():
        return quantize_pipeline(
            pipe, recipe, load_prompts("tiny"), calib_size=2, steps=steps, progress=False, validate=False
        )


@pytest.mark.parametrize("cls", cpu.CPU_CLASSES)
@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(activations="uint7"),
        dict(activations="balanced"),
        dict(full_res_weights="w8a8x2"),
        dict(attention="int8", full_res_weights="w8a8x2"),
    ],
    ids=["preset", "uint7", "balanced", "x2", "attn8-x2"],
)
def test_openvino_quantizes_every_activation_as_diffusia(tmp_path, monkeypatch, changes, cls):
    from diffusia.export import openvino as ovx

    pipe = _quantized("w8a8", cls, **changes)
    found = []  # the quantizers the export read from its own QDQ graph
    read = ovx.activation_quantizers
    monkeypatch.setattr(ovx, "activation_quantizers", lambda path: found.append(read(path)) or found[-1])
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov", check=False)
    (quantizers,) = found
    if changes.get("activations") == "balanced":  # both kinds of range, so both the int8 and the uint8 path ran
        layers = api.qmodules(pipe.unet).values()
        mid_scale = [int(m.act_zero_point[0]) == (m.settings.act_qmax + 1) // 2 for m in layers if m.spec.act_digits]
        assert any(mid_scale) and not all(mid_scale)
    x2 = sum(m.precision == "w8a8x2" for m in api.qmodules(pipe.unet).values())
    assert bool(x2) == any(d == 2 for _, d in quantizers.values())
    check = check_against_openvino(
        pipe.unet, [tmp_path / "ov" / f for f in manifest["files"]], group_timesteps(pipe.unet), quantizers
    )
    q = check["quantizers"]
    # every FakeQuantize of the IR (OpenVINO merges identical ones, e.g. q/k/v's) was found and compared on its own
    # input: diffusia's scale, zero point, range and residual digit, codes equal but for one-step float ties
    model = ov.Core().read_model(str(tmp_path / "ov" / manifest["files"][0]))
    n_fq = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    assert q["quantizers"] == n_fq and q["unmatched"] == 0 and len(quantizers) - 8 <= n_fq <= len(quantizers) > 10
    assert q["other_differences"] == 0, q
    assert q["tie_differences"] <= 1e-4 * q["codes"]
    # OpenVINO's u8 x s8 kernels saturate their pair sums on CPUs without VNNI like oneDNN's: the VNNI layout's
    # output is compared on VNNI only
    if HOST_VNNI or cls == "avx2":
        assert check["relative_l2_vs_diffusia"] < 0.15


def test_openvino_graph_keeps_int8_weights_and_reproduces_the_trained_tiny_unet(tmp_path):
    pipe = _quantized("w8a8", pipe=load_pipeline("tiny", progress=False))
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov")  # checked: raises if it fails
    assert manifest["check"]["relative_l2_vs_diffusia"] < 0.05
    model = ov.Core().read_model(str(tmp_path / "ov" / manifest["files"][0]))
    int8 = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    parts = weight_parts(pipe.unet)  # a GEGLU projection's weight in two halves
    n_int8 = sum(parts[id(m)] for m in api.qmodules(pipe.unet).values() if m.spec.storage == torch.int8)
    assert len(int8) == n_int8
    int8_bytes = sum(np.prod(op.get_output_shape(0)) for op in int8)
    bin_bytes = (tmp_path / "ov" / "unet-g0.bin").stat().st_size
    float_bytes = sum(p.numel() * 4 for p in load_pipeline("tiny", progress=False).unet.parameters())
    assert int8_bytes > 0.5 * bin_bytes and bin_bytes < 0.5 * float_bytes


def test_hybrid_graph_runs_int8_convolutions_and_weight_only_linears(tmp_path):
    """`hybrid`: OpenVINO computes the W8A8 convolutions on u8 inputs and the Linears on float inputs with their
    int8 weights, as diffusia does (the export check passes, at the micro U-Net's bound of the test above)."""
    from diffusia.export.openvino import compile_model

    pipe = _quantized("hybrid")
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov", tolerance=0.15)  # raises if it fails
    count = collections.Counter(m.precision for m in api.qmodules(pipe.unet).values())
    assert manifest["weight_only_layers"] == count["w8"] > 20 and count["w8a8"] > 20
    model = ov.Core().read_model(str(tmp_path / "ov" / manifest["files"][0]))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) == count["w8a8"]
    runtime = compile_model(str(tmp_path / "ov" / manifest["files"][0]), "f32", 1).get_runtime_model()
    kernels = collections.Counter(
        (op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
        for op in runtime.get_ops()
    )
    assert kernels["Convolution", "u8"] == count["w8a8"]
    assert kernels["FullyConnected", "i8"] >= count["w8"]  # a GEGLU projection's weight in two halves


def test_one_graph_per_timestep_group_each_with_its_ranges(tmp_path):
    # 6 sampler steps: calibration visits both halves of the timestep range
    pipe = _quantized("w8a8", "vnni" if HOST_VNNI else "avx2", steps=6, timestep_groups=2)
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov", check=False)
    assert manifest["files"] == ["unet-g0.xml", "unet-g1.xml"] and manifest["timestep_groups"] == 2

    def ranges(file):
        model = ov.Core().read_model(str(tmp_path / "ov" / file))
        return [
            float(op.input_value(2).get_node().get_data().reshape(-1)[0])
            for op in model.get_ops()
            if op.get_type_name() == "FakeQuantize"
        ]

    assert ranges("unet-g0.xml") != ranges("unet-g1.xml")
    from diffusia.runtime.openvino import OpenVINOUNet

    ov_unet = OpenVINOUNet(tmp_path / "ov", pipe.unet.config, precision="f32")
    for t in group_timesteps(pipe.unet):  # the runtime U-Net picks the group's graph by timestep
        x = qdq.example_inputs(pipe.unet, 2, 3, timestep=t)
        with torch.no_grad():
            ref = pipe.unet(*x).sample
        other = ov_unet._run(*x, 1 - ov_unet.group_of(x[1]))
        ours = ov_unet(*x).sample
        assert compare.relative_l2(ours.numpy(), ref.numpy()) < compare.relative_l2(other.numpy(), ref.numpy())


def test_float_unet_exports_unchanged(tmp_path):
    pipe = build_micro_pipeline()
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov")
    assert not manifest["quantized"] and manifest["check"]["quantizers"] is None
    assert manifest["check"]["relative_l2_vs_diffusia"] < 1e-4
    assert read_manifest(tmp_path / "ov")["files"] == ["unet-g0.xml"]


def test_the_second_digit_reaches_openvino_symmetric(tmp_path):
    """w8a8x2's residual digit (x - dequantized first digit) has codes -128..127 around zero point 128 whatever the
    first digit's range, so OpenVINO can run it as signed INT8 without a zero point (the 8-bit layout: the 7-bit
    one clamps its input first)."""
    pipe = _quantized("w8a8", "vnni", full_res_weights="w8a8x2")
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov", check=False)
    residual = []
    for op in ov.Core().read_model(str(tmp_path / "ov" / manifest["files"][0])).get_ops():
        if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() == "Subtract":
            lo, hi = (float(op.input_value(i).get_node().get_data().reshape(-1)[0]) for i in (1, 2))
            residual.append((lo, hi))
    assert len(residual) >= 2 and all(lo < 0 and hi == pytest.approx(-lo * 127 / 128, rel=1e-5) for lo, hi in residual)


def test_int8_activations_reach_openvino_as_symmetric_ranges(tmp_path):
    from diffusia.export.openvino import compile_model

    def layers(activations):
        pipe = _quantized("w8a8", "vnni" if HOST_VNNI else "avx2", activations=activations)
        manifest = export_runtime(pipe.unet, "openvino", tmp_path / activations, check=False)
        xml = tmp_path / activations / manifest["files"][0]
        bounds = []
        for op in ov.Core().read_model(str(xml)).get_ops():
            if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() != "Constant":
                lo, hi = (float(op.input_value(i).get_node().get_data().reshape(-1)[0]) for i in (1, 2))
                bounds.append((lo, hi))
        runtime = compile_model(str(xml), "f32", 1).get_runtime_model()
        linears = [  # the input precision OpenVINO chose for each matrix-multiply layer
            op.get_rt_info()["runtimePrecision"].astype(str)
            for op in runtime.get_ops()
            if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"
        ]
        return bounds, linears

    sym, sym_inputs = layers("int8")
    asym, asym_inputs = layers("uint8")
    negative = [(lo, hi) for lo, hi in sym if lo < 0]
    assert len(negative) > 0.8 * len(sym) > 10  # on the micro U-Net (SiLU/GELU inputs) nearly every range
    # codes -128..127 around zero point 128: lo = -128 steps, hi = 127 steps
    assert all(hi == pytest.approx(-lo * 127 / 128, rel=1e-5) for lo, hi in negative)
    assert not all(hi == pytest.approx(-lo * 127 / 128, rel=1e-5) for lo, hi in asym if lo < 0)
    if HOST_VNNI:  # OpenVINO's linears then take signed INT8 inputs where the uint8 ranges gave u8 with zero points
        # (convolutions too with AMX; without it, as on AMD Zen 4, its convolutions shift them back to u8)
        quantized = len(sym_inputs) - sym_inputs.count("f32")
        assert sym_inputs.count("i8") >= 0.9 * quantized > 4 * asym_inputs.count("i8"), (sym_inputs, asym_inputs)
        assert quantized > 10


def test_export_checks_probe_quantizers_at_most_at_the_probe_side(tmp_path, monkeypatch):
    """The output is compared at the U-Net's own size, every quantizer probed at most at PROBE_MAX_SIDE (at SD's
    64x64 the probes of int8 attention took all 24 GB of RAM)."""
    pipe = _quantized("w8a8", attention="int8")
    sides, feeds = [], qdq.graph_feeds
    monkeypatch.setattr(qdq, "graph_feeds", lambda inputs: sides.append(inputs[0].shape[-1]) or feeds(inputs))
    monkeypatch.setattr(qdq, "PROBE_MAX_SIDE", 4)  # the micro U-Net's sample_size is 8
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov")
    assert manifest["check"]["quantizers"]["other_differences"] == 0 and sorted(set(sides)) == [4, 8]
    sides.clear()
    check = qdq.check_against_onnxruntime(pipe.unet, qdq.export_unet(pipe.unet, tmp_path / "u.onnx", dynamic=True))
    assert check["quantizers"]["other_differences"] == 0 and sorted(set(sides)) == [4, 8]
    assert check["relative_l2_vs_diffusia"] < 0.05


def test_narrow_weights_stores_int4_codes_and_fp16_values_exactly_and_nothing_else():
    from openvino import opset13 as ops

    from diffusia.export.openvino import compile_model, int4_values, narrow_weights

    rng = np.random.default_rng(0)
    int4 = rng.integers(-8, 8, size=(64, 33)).astype(np.int8)  # odd element count: the last byte is half used
    int8 = rng.integers(-127, 128, size=(64, 32)).astype(np.int8)
    half = rng.standard_normal((64, 32)).astype(np.float16).astype(np.float32)
    single = rng.standard_normal((64, 32)).astype(np.float32)
    small = np.ones((4, 4), np.float32)  # below the size of a weight: left alone
    values = [int4, int8, half, single, small]
    model = ov.Model([ops.convert(ops.constant(v), ov.Type.f32) for v in values], [])
    assert narrow_weights(model) == {"int4": 1, "float16": 1}
    kinds = [str(op.get_element_type()) for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
    assert sorted(kinds) == sorted(map(str, [ov.Type.i4, ov.Type.i8, ov.Type.f16, ov.Type.f32, ov.Type.f32]))
    outputs = compile_model(model, "f32")({})
    for k, v in enumerate(values):
        assert np.array_equal(outputs[k], v.astype(np.float32))
    (packed,) = [op for op in model.get_ordered_ops() if op.get_element_type() == ov.Type.i4]
    assert np.array_equal(int4_values(packed), int4)  # unpacked exactly as packed


def test_group_int4_weights_reshapes_whole_and_single_padded_groups_and_keeps_every_value():
    from openvino import opset13 as ops

    from diffusia.export.openvino import compile_model, group_int4_weights

    rng = np.random.default_rng(0)

    def weight(out, groups, cols):  # as the export writes int4 groups: codes [out x groups, 64], a scale per row
        codes = rng.integers(-8, 8, size=(out * groups, 64)).astype(np.int8)
        scale = rng.uniform(0.01, 0.1, size=(out * groups, 1)).astype(np.float32)
        w = ops.multiply(ops.convert(ops.constant(codes), ov.Type.f32), ops.constant(scale))
        if groups > 1:
            w = ops.reshape(w, ops.constant(np.array([out, groups * 64])), False)
        if cols < groups * 64:
            w = ops.slice(w, ops.constant(np.array([0, 0])), ops.constant(np.array([out, cols])), ops.constant([1, 1]))
        return w

    model = ov.Model([weight(8, 2, 128), weight(8, 1, 40), weight(8, 2, 96)], [])
    before = compile_model(model.clone(), "f32")({})
    assert group_int4_weights(model) == 2  # the partial last group stays as exported
    codes = [list(op.get_output_shape(0)) for op in model.get_ordered_ops() if op.get_element_type() == ov.Type.i8]
    assert sorted(codes) == [[8, 2, 64], [8, 40], [16, 64]]
    after = compile_model(model, "f32")({})
    for k in range(3):
        assert np.array_equal(before[k], after[k])


@pytest.mark.parametrize(
    "preset,kind,at_most", [("w4", ov.Type.i4, 0.2), ("fp16", ov.Type.f16, 0.55), ("w8", ov.Type.i8, 0.3)]
)
def test_weight_only_graphs_keep_their_weights_narrow_and_their_activations_float(tmp_path, preset, kind, at_most):
    from diffusia.runtime.artifact import graph_bytes

    pipe = _quantized(preset, pipe=load_pipeline("tiny", progress=False))
    manifest = export_runtime(pipe.unet, "openvino", tmp_path / "ov")
    # weight-only layers compute the exact dequantized weights on float activations: OpenVINO's CPU default would
    # quantize the inputs of MatMuls with int8/int4 weights dynamically (0.3 % on this U-Net's w8)
    assert manifest["check"]["relative_l2_vs_diffusia"] < 1e-5
    model = ov.Core().read_model(str(tmp_path / "ov" / manifest["files"][0]))
    narrow = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == kind]
    assert len(narrow) >= sum(m.precision == preset for m in api.qmodules(pipe.unet).values()) > 100
    float_bytes = sum(p.numel() * 4 for p in load_pipeline("tiny", progress=False).unet.parameters())
    files = tmp_path / "ov" / "unet-g0.xml", tmp_path / "ov" / "unet-g0.bin"
    assert graph_bytes(tmp_path / "ov") == sum(f.stat().st_size for f in files)
    assert files[1].stat().st_size < at_most * float_bytes  # the weights; the .xml is the graph's structure
    if preset == "w4":  # OpenVINO keeps int4 in memory for every linear whose groups it can express
        from diffusia.export.openvino import compile_model

        runtime = compile_model(str(files[0]), "f32", 1).get_runtime_model()
        linears = [
            op.get_rt_info()["runtimePrecision"].astype(str)
            for op in runtime.get_ops()
            if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"
        ]
        whole = [  # in_features a multiple of the group, or one padded group
            m
            for m in api.qmodules(pipe.unet).values()
            if m.precision == "w4"
            and isinstance(m, torch.nn.Linear)
            and (m.in_features % m.settings.group_size == 0 or m.in_features < m.settings.group_size)
        ]
        assert linears.count("i4") == len(whole) > 50  # was 35 of 93 before group_int4_weights
