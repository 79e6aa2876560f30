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


def test_block_of_groups_modules_into_resnets_attentions_and_top_level_modules(monkeypatch):
    bench = _bench_module(monkeypatch, "openvino_profile")
    attn = "/unet/up_blocks.3/attentions.2"
    assert bench.block_of(attn + "/transformer_blocks.0/attn1/processor") == attn
    assert bench.block_of(attn + "/transformer_blocks.0/ff/net.2") == attn
    assert bench.block_of("/unet/mid_block/resnets.1/conv1") == "/unet/mid_block/resnets.1"
    assert bench.block_of("/unet/up_blocks.3") == "/unet/up_blocks.3"
    assert bench.block_of("/unet/conv_in") == "/unet/conv_in"
    assert bench.block_of("VariadicSplit_3299217") == bench.block_of("sample") == bench.OUTSIDE


def test_block_differences_rank_by_size_in_both_directions(monkeypatch):
    bench = _bench_module(monkeypatch, "openvino_profile")
    a, b, c = "/unet/down_blocks.0/resnets.0", "/unet/down_blocks.0/attentions.0", "/unet/conv_in"
    results = {
        "nncf_int8": {"by_module_ms": {a + "/conv1": 10.0, b + "/attn1": 5.0, c: 1.0}, "paired": {}},
        "diffusia_w8a8": {
            # the same attention under other module names (its processor): one block
            "by_module_ms": {a + "/conv1": 9.0, b + "/attn1/processor": 7.0, b + "/ff/net.2": 1.0, "Split_7": 0.5},
            "paired": {"nncf_int8": [1.1, 0.9, 1.0, 1.2]},
        },
    }
    lines = bench.block_differences(results, "nncf_int8", top=3)
    assert lines[0] == (
        "### diffusia_w8a8 against nncf_int8: +1.5 ms over all nodes; wall time per round 1.050x theirs "
        "(IQR 0.975-1.125)"  # inclusive quartiles, as every benchmark's
    )
    rows = [line for line in lines if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [b, c, a]  # +3, then the two -1 by name (the outside +0.5 cut)
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
