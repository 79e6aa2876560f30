"""benchmarks/openvino_profile.py: nodes are grouped by the U-Net module they come from, and the per-module table
ranks the largest differences from the NNCF row, both directions."""

from tests.test_bench_backends import _bench_module


def test_module_of_cuts_a_node_name_at_its_first_onnx_op(monkeypatch):
    bench = _bench_module(monkeypatch, "openvino_profile")
    assert (
        bench.module_of("/unet/up_blocks.1/upsamplers.0/conv/Conv/WithoutBiases")
        == "/unet/up_blocks.1/upsamplers.0/conv"
    )
    attn = "/unet/up_blocks.3/attentions.2/transformer_blocks.0/attn1"
    assert bench.module_of(attn + "/Transpose_3") == attn
    assert bench.module_of("sample") == "sample"  # a graph input has no module


def test_module_differences_rank_by_size_in_both_directions(monkeypatch):
    bench = _bench_module(monkeypatch, "openvino_profile")
    results = {
        "nncf_int8": {"by_module_ms": {"/unet/a": 10.0, "/unet/b": 5.0, "/unet/c": 1.0}},
        "diffusia_w8a8": {"by_module_ms": {"/unet/a": 9.0, "/unet/b": 8.0, "/unet/d": 0.5}},
    }
    lines = bench.module_differences(results, "nncf_int8", top=3)
    assert lines[0] == "### diffusia_w8a8 against nncf_int8: +1.5 ms over all nodes"
    rows = [line for line in lines if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["/unet/b", "/unet/a", "/unet/c"]  # +3, -1, -1 (d's +0.5 cut)
    assert rows[0].endswith("| 8.00 | 5.00 | +3.00 |")


def test_profile_interleaves_the_rows_and_sums_each_nodes_median(monkeypatch):
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    bench = _bench_module(monkeypatch, "openvino_profile")
    x = ops.parameter([4, 64], ov.Type.f32, name="sample")
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    small = ov.Model([ops.relu(ops.matmul(x, ops.constant(weight), False, True))], [x])
    large = ov.Model(
        [ops.relu(ops.matmul(ops.matmul(x, ops.constant(weight), False, True), ops.constant(weight), False, True))], [x]
    )
    core = ov.Core()
    compiled = {
        n: core.compile_model(m, "CPU", {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32"})
        for n, m in (("a", small), ("b", large))
    }
    results = bench.profile(compiled, {"sample": np.ones((4, 64), np.float32)}, rounds=3)
    for name, other in (("a", "b"), ("b", "a")):
        r = results[name]
        assert list(r["paired"]) == [other] and len(r["paired"][other]) == 3 and all(v > 0 for v in r["paired"][other])
        per_node = sum(n["ms"] for n in r["slowest_nodes"])
        for grouping in ("by_type_ms", "by_exec_ms", "by_module_ms"):
            assert abs(sum(r[grouping].values()) - per_node) < 1e-9  # every node counted once in each grouping
        executed = {op.get_friendly_name() for op in compiled[name].get_runtime_model().get_ops()}
        assert {n["name"] for n in r["slowest_nodes"]} <= executed  # each row's nodes from its own model
    assert "FullyConnected" in results["a"]["by_type_ms"]
