"""The report helpers of benchmarks/backends.py (ratios, table, error metric); nothing is timed here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SPEC = importlib.util.spec_from_file_location(
    "bench_backends", Path(__file__).resolve().parent.parent / "benchmarks" / "backends.py"
)
bb = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bb)


def _bench_module(monkeypatch, name: str):
    """benchmarks/NAME.py imported as run (benchmarks/ on sys.path, its `backends` this module's)."""
    import sys

    monkeypatch.syspath_prepend(str(Path(bb.__file__).parent))
    monkeypatch.setitem(sys.modules, "backends", bb)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(bb.__file__).parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(name, ms, nbytes, err=0.0, **kw):
    return {
        "name": name,
        "kind": "k",
        "status": "ok",
        "median_ms": ms,
        "bytes": nbytes,
        "peak_rss_mb": 10.0,
        "rel_l2": err,
        "cpu_ms": ms,
        "times_s": [ms / 1e3] * 3,
        "first_call_s": 1.0,
        "notes": [],
        **kw,
    }


def test_a_run_without_only_leaves_the_experiment_rows_out(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(bb.__file__).parent))
    ap = bb.parser()
    default, _ = bb.selected(ap, ap.parse_args([]))
    experiments = set(bb.backend_names()) - set(default)
    assert {"fp32_eager", "nncf_int8_transformer_bf16", "diffusia_w8a8_balanced_attn8_ov_bf16"} <= set(default)
    assert {"diffusia_w8a8_x2_grown_ov_bf16", "diffusia_w8a8_mse_x2_top25_ov_bf16"} <= experiments
    named, _ = bb.selected(ap, ap.parse_args(["--only", "diffusia_w8a8_mse_x2_top25_ov_bf16"]))
    assert named == ["fp32_eager", "diffusia_w8a8_mse_x2_top25_ov_bf16"]  # an experiment runs when named


def test_rel_l2():
    b = torch.tensor([3.0, 4.0])
    assert bb.rel_l2(b, b) == 0.0
    assert abs(bb.rel_l2(b + torch.tensor([0.3, 0.4]), b) - 0.1) < 1e-6


def test_summarize_ratios_use_fp32_eager_and_fastest_fp32_path():
    rows = bb.summarize(
        [
            _row("fp32_eager", 100, 400),
            _row("fp32_compile", 50, 400),
            _row("diffusia_w8a8", 75, 100),
            {"name": "quanto_w8a8", "status": "failed", "reason": "ImportError: x"},
        ]
    )
    w8a8 = rows[2]
    assert w8a8["vs_fp32_eager"] == 0.75 and w8a8["vs_fastest_fp32"] == 1.5 and w8a8["size_pct_fp32"] == 25
    assert "vs_fp32_eager" not in rows[3]


def test_table_has_one_row_per_backend_and_failure_reasons():
    rows = bb.summarize(
        [
            _row("fp32_eager", 100, 4e6),
            _row("fp32_compile", 50, 4e6, 1e-6),
            {"name": "ort_int8_static", "status": "failed", "reason": "RuntimeError: no"},
        ]
    )
    text = bb.table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert "compile (1st call) 1 s" in lines[3] and "| 0.50 |" in lines[3]
    assert "failed" in lines[4] and "RuntimeError: no" in lines[4]


def test_versus_nncf_compares_diffusia_on_openvino_with_the_fastest_nncf_int8_row():
    rows = [
        _row("nncf_int8", 200, 1, 0.08),
        _row("nncf_int8_transformer", 100, 1, 0.06),
        _row("nncf_w8", 50, 1, 0.01),
        _row("diffusia_w8a8_ov", 90, 1, 0.03),
        _row("diffusia_w8a8", 300, 1, 0.03),
    ]
    lines = bb.versus_nncf(rows)
    assert "`nncf_int8_transformer`, 100 ms, 6.00 %" in lines[0]  # weight-only nncf_w8 is not an INT8 peer
    assert [ln for ln in lines if ln.startswith("- ")] == ["- `diffusia_w8a8_ov`: step 0.90x, error 0.50x (3.00 %)"]
    assert bb.versus_nncf([_row("diffusia_w8a8_ov", 90, 1, 0.03)]) == []


def test_versus_nncf_counts_nncf_with_bf16_float_layers_as_a_peer():
    rows = [
        _row("nncf_int8", 200, 1, 0.08),
        _row("nncf_int8_bf16", 160, 1, 0.08),
        _row("diffusia_w8a8_ov", 200, 1, 0.04),
    ]
    lines = bb.versus_nncf(rows)
    assert "`nncf_int8_bf16`, 160 ms" in lines[0]
    assert "- `diffusia_w8a8_ov`: step 1.25x, error 0.50x (4.00 %)" in lines


def test_rounds_compare_each_round_with_its_own_fastest_nncf_row(tmp_path, monkeypatch):
    """A machine 20 % slower in round 2 shifts every row alike: the per-round ratios stay put."""
    import json

    rounds = _bench_module(monkeypatch, "backends_rounds")
    env = {"date": "d", "cpu_model": "cpu", "cpu_features": {"amx": False}, "cpu_class": "vnni", "threads": 2}
    paths = []
    for i, slow in enumerate((1.0, 1.2)):
        rows = [
            _row("fp32_eager", 2000 * slow, 100),
            _row("nncf_int8", 600 * slow, 25, 0.07),
            _row("nncf_int8_bf16", (500 if i == 0 else 620) * slow, 25, 0.07),
            _row("diffusia_w8a8_mse_ov", 550 * slow, 26, 0.03),
        ]
        result = {"model": {"label": "m", "latent": 32}, "environment": env, "budget_s": 40, "repeats": 7}
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps({**result, "rows": rows}))
    res = rounds.aggregate(paths)
    assert [b["name"] for b in res["fastest_nncf"]] == ["nncf_int8_bf16", "nncf_int8"]
    v = res["versus_fastest_nncf"]["diffusia_w8a8_mse_ov"]
    assert v["step"] == pytest.approx([1.1, 550 / 600]) and v["error"] == pytest.approx([0.03 / 0.07] * 2)
    assert res["steps_ms"]["nncf_int8"] == pytest.approx([600, 720])
    md = rounds.markdown(res)
    assert "| diffusia_w8a8_mse_ov | 1.10 / 0.92 | 1.01 (0.92-1.10)x | 0.43 (0.43-0.43)x |" in md
    assert "| nncf_int8 | 600 / 720 | 660 | 7.00 % |" in md


def test_interleave_calls_every_row_twice_per_round_in_shuffled_orders(monkeypatch):
    il = _bench_module(monkeypatch, "backends_interleaved")
    calls = []
    runners = {n: (lambda x, n=n: calls.append(n)) for n in ("a", "b", "c")}
    times = il.interleave(runners, None, rounds=6)
    assert {n: len(t) for n, t in times.items()} == {"a": 6, "b": 6, "c": 6}
    rounds = [calls[i : i + 6] for i in range(0, len(calls), 6)]
    assert len(rounds) == 6 and all(r[0::2] == r[1::2] and sorted(r[0::2]) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r[0::2]) for r in rounds}) > 1  # the order changes between rounds


def test_interleaved_ratios_are_paired_within_each_round(monkeypatch):
    """A machine that slows down mid-run shifts both calls of a round: the paired ratio stays 1.1."""
    il = _bench_module(monkeypatch, "backends_interleaved")
    slow = [1.0, 1.0, 1.3, 1.3, 1.0]
    times = {
        "nncf_int8": [0.600 * s for s in slow],
        "nncf_int8_bf16": [0.700 * s for s in slow],
        "diffusia_w8a8_mse_ov": [0.660 * s for s in slow],
    }
    rows = {
        n: {"rel_l2": e, "notes": [], "bytes": 1e6, "build_s": 1.0, "finite": True}
        for n, e in zip(times, (0.07, 0.07, 0.03))
    }
    res = il.summarize(rows, times)
    assert res["fastest_nncf"] == "nncf_int8" and res["nncf"] == ["nncf_int8", "nncf_int8_bf16"]
    d = res["rows"]["diffusia_w8a8_mse_ov"]
    v = d["versus"]["nncf_int8"]
    assert v["step_ratio"]["median"] == pytest.approx(1.1) and v["step_ratio"]["q3"] == pytest.approx(1.1)
    assert d["versus"]["nncf_int8_bf16"]["step_ratio"]["q1"] == pytest.approx(660 / 700)
    assert d["rounds_at_or_under_fastest"] == 0 and v["error_ratio"] == pytest.approx(0.03 / 0.07)
    assert res["rows"]["nncf_int8"]["step_ms"]["median"] == pytest.approx(600)
    header = {"rounds": 5, "model": "m", "latent": 32, "cpu": "cpu", "class": "vnni", "threads": 2, "versions": "v"}
    md = il.markdown({**res, **header, "date": "d", "load_avg": [0.1, 0.2], "timing_s": 10.0})
    assert "| diffusia_w8a8_mse_ov | 1.100x (1.100-1.100) | 0 of 5 | 0.43x | 1.100x (1.100-1.100), 0.43x | " in md
    assert "| nncf_int8 | 600 (600-780) | 7.00 % | 1 | 1 |" in md


def test_interleaved_rows_against_a_chosen_row(monkeypatch):
    """An experiment against the product's row: paired per round, whatever the machine does between rounds."""
    il = _bench_module(monkeypatch, "backends_interleaved")
    slow = [1.0, 1.2, 1.0, 1.4]
    times = {
        "nncf_int8": [0.600 * s for s in slow],
        "diffusia_a": [0.500 * s for s in slow],
        "diffusia_b": [0.510 * s for s in slow],
    }
    rows = {n: {"rel_l2": 0.05, "notes": [], "bytes": 1e6, "build_s": 1.0, "finite": True} for n in times}
    res = il.summarize(rows, times, against="diffusia_a")
    assert "versus_against" not in res["rows"]["diffusia_a"]
    assert res["rows"]["diffusia_b"]["versus_against"]["median"] == pytest.approx(1.02)
    assert res["rows"]["nncf_int8"]["versus_against"]["q1"] == pytest.approx(1.2)
    header = {"rounds": 4, "model": "m", "latent": 32, "cpu": "cpu", "class": "vnni", "threads": 2, "versions": "v"}
    md = il.markdown({**res, **header, "date": "d", "load_avg": [0.1, 0.2], "timing_s": 10.0})
    assert "Against `diffusia_a`" in md and "| diffusia_b | 1.020x (1.020-1.020) |" in md
    assert "Against `" not in il.markdown(
        {**il.summarize(rows, times), **header, "date": "d", "load_avg": [0, 0], "timing_s": 1.0}
    )


def test_interleaved_weight_only_rows_are_paired_with_nncfs_weight_compressed_rows(monkeypatch):
    il = _bench_module(monkeypatch, "backends_interleaved")
    times = {"nncf_w8": [1.4] * 4, "nncf_w4": [1.3] * 4, "diffusia_w8_ov_dynamic": [1.43] * 4, "ov_fp32": [1.7] * 4}
    rows = {n: {"rel_l2": 0.014} for n in times}
    res = il.summarize(rows, times)
    assert res["nncf"] == ["nncf_w8", "nncf_w4"] and res["fastest_nncf"] == "nncf_w4"
    d = res["rows"]["diffusia_w8_ov_dynamic"]
    assert d["versus"]["nncf_w8"]["step_ratio"]["median"] == pytest.approx(1.43 / 1.4)
    assert "versus" not in res["rows"]["ov_fp32"]


def test_an_instruction_set_cap_is_recorded_and_stated(monkeypatch):
    results = _bench_module(monkeypatch, "_results")
    for k in results.ISA_CAP_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    assert results.isa_caps() == {} and results.result_header()["isa_caps"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("DIFFUSIA_CPU", "avx2")
    caps = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DIFFUSIA_CPU": "avx2"}
    assert results.isa_caps() == caps and results.result_header()["class"] == results.machine_class()
    env = {
        "cpu_model": "c",
        "cpu_features": {"avx2": True},
        "cpu_class": "vnni",
        "cores": 2,
        "threads": 2,
        "versions": {},
        "load_avg_start": 0.1,
        "load_avg_end": 0.2,
        "date": "d",
    }
    res = {
        "environment": env,
        "model": {"label": "m", "latent": 32},
        "quick": False,
        "total_s": 1.0,
        "repeats": 3,
        "budget_s": 9.0,
        "calibration": "c",
        "rows": [_row("fp32_eager", 10.0, 100)],
    }
    assert "capped" not in bb.markdown(res)
    md = bb.markdown({**res, "environment": {**env, "isa_caps": caps}})
    assert "**Instruction sets capped** (`ONEDNN_MAX_CPU_ISA=AVX2`, `DIFFUSIA_CPU=avx2`)" in md


def test_interleaved_reloads_diffusias_pytorch_row_as_built(monkeypatch, tmp_path):
    from diffusers import UNet2DConditionModel

    from tests.conftest import MICRO_UNET

    inter = _bench_module(monkeypatch, "backends_interleaved")
    peers = importlib.import_module("_backends_peers")  # benchmarks/ is on sys.path now
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**MICRO_UNET).eval()
    config = dict(unet.config)
    g = torch.Generator().manual_seed(0)

    def x():
        return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([500, 500]), torch.randn(2, 77, 32, generator=g)

    ctx = peers.Ctx(calib=[x(), x()], out=tmp_path, cache=tmp_path, threads=1, calibrator="preset")
    with torch.no_grad():
        built = peers._diffusia("w8a8", "mse")(unet, ctx)
        timed = x()
        reloaded = inter._quantized_torch_unet(config, built.reload)(*timed, return_dict=False)[0]
        assert torch.equal(reloaded, built.run(timed))
    assert built.reload["safetensors"].endswith(".safetensors")


def test_interleaved_report_states_an_instruction_set_cap(monkeypatch):
    inter = _bench_module(monkeypatch, "backends_interleaved")
    assert inter._caps_line({"isa_caps": {}}) == []
    (line,) = [s for s in inter._caps_line({"isa_caps": {"DIFFUSIA_CPU": "avx2"}}) if s]
    assert line.startswith("**Instruction sets capped** (`DIFFUSIA_CPU=avx2`)")


def test_tiny_inputs_are_recorded_sampler_calls_at_batch_two(tmp_path):
    info = bb.make_inputs("tiny", 16, 2, tmp_path)
    data = torch.load(tmp_path / "inputs.pt")
    assert len(data["calib"]) == 2 and info["weights"].startswith("diffusia/assets/tiny/unet/")
    for sample, timestep, text in [data["timed"], *data["calib"]]:
        assert sample.shape[0] == timestep.shape[0] == text.shape[0] == 2 and timestep.dtype == torch.int64
    assert data["calib"][0][1][0] > data["calib"][1][1][0]  # spread over the trajectory: first and last call


def _conv_graph(rng):
    """x -> Conv(DequantizeLinear(int8 weight)) [weight-only] -> QDQ -> Conv(DequantizeLinear(int8 weight)) [W8A8]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    codes = [rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8) for _ in range(2)]
    scales = [rng.uniform(1e-3, 1e-2, 8).astype(np.float32) for _ in range(2)]
    inits = [
        numpy_helper.from_array(a, f"{kind}{k}") for k in range(2) for kind, a in (("q", codes[k]), ("s", scales[k]))
    ]
    inits += [numpy_helper.from_array(np.zeros(8, np.int8), "z"), numpy_helper.from_array(np.float32(0.05), "a_s")]
    inits += [numpy_helper.from_array(np.uint8(128), "a_z")]
    nodes = [
        helper.make_node("DequantizeLinear", ["q0", "s0", "z"], ["w0"], axis=0),
        helper.make_node("Conv", ["x", "w0"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["h", "a_s", "a_z"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "a_s", "a_z"], ["hd"]),
        helper.make_node("DequantizeLinear", ["q1", "s1", "z"], ["w1"], axis=0),
        helper.make_node("Conv", ["hd", "w1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_widened_convs_experiment_folds_weight_only_convolutions_at_load_and_keeps_w8a8_pairs(tmp_path, monkeypatch):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from diffusia.export.onnx import onnxruntime_session

    experiments = _bench_module(monkeypatch, "_onnxruntime_convs")

    rng = np.random.default_rng(0)
    model, x = _conv_graph(rng), rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    before = tmp_path / "before.onnx"
    onnx.save(model, str(before))
    assert experiments.widen_weight_only_convs(model) == 1
    onnx.checker.check_model(model)
    dq_weights = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq_weights == ["hq", "q1"]  # the W8A8 convolution keeps its weight's pair, the int8 codes stay stored
    assert {i.name: i.data_type for i in model.graph.initializer}["q0"] == TensorProto.INT8
    after = tmp_path / "after.onnx"
    onnx.save(model, str(after))
    ref, got = (onnxruntime_session(p).run(None, {"x": x})[0] for p in (before, after))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    options = ort.SessionOptions()  # the graph ONNX Runtime runs: the widened weight folded into a float constant
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(str(after), options, providers=["CPUExecutionProvider"])
    loaded = onnx.load(str(tmp_path / "loaded.onnx"))
    first = next(n for n in loaded.graph.node if n.op_type == "Conv" and n.input[0] == "x")
    assert first.input[1] in {i.name for i in loaded.graph.initializer}
    assert not any(n.op_type in ("Cast", "Mul") for n in loaded.graph.node)
