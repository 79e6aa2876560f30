"""benchmarks/onnxruntime_profile.py: kernel time per operator type and call from ONNX Runtime's own profile, every
variant's session called in turn, and the table."""

from tests.test_bench_backends import _bench_module


def _graph(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return {"x": np.ones((8, 64), np.float32)}


def test_every_variant_gets_its_kernel_time_per_operator_over_the_rounds(monkeypatch, tmp_path):
    bench = _bench_module(monkeypatch, "onnxruntime_profile")
    feeds = _graph(tmp_path / "g.onnx")
    graphs = {"as shipped": tmp_path / "g.onnx", "all weights folded": tmp_path / "g.onnx"}
    rows = bench.profile(graphs, feeds, rounds=3)
    for row in rows.values():
        assert row["calls"] == 3  # the warm-up call left out
        assert set(row["by_op_ms"]) == {"MatMul", "Relu"} and all(ms > 0 for ms in row["by_op_ms"].values())
        assert row["total_ms"] > 0
    assert not list(tmp_path.glob("profile-*"))  # the profiles are read and removed
    res = {"model": "tiny", "preset": "w8", "cpu": "cpu", "class": "vnni", "commit": "c", "date": "d"}
    md = bench.to_markdown(
        {**res, "onnxruntime": "1", "sample": [2, 4, 16, 16], "widened_convolutions": 0, "rows": rows}
    )
    assert "| operator | as shipped | all weights folded |" in md and "| **all kernels** |" in md
