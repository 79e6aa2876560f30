"""benchmarks/runtime_exports.py: the bytes it reports are the U-Net graph's weight files, not the graph's structure,
its manifest or the VAE decoder."""

from tests.test_bench_backends import _bench_module


def test_weight_bytes_count_the_unet_weight_files_only(monkeypatch, tmp_path):
    bench = _bench_module(monkeypatch, "runtime_exports")
    for name, n in (("unet-g0.bin", 700), ("unet-g0.xml", 50), ("runtime.json", 9), ("vae_decoder.bin", 400)):
        (tmp_path / name).write_bytes(b"x" * n)
    assert bench.weight_bytes(tmp_path) == 700
    (tmp_path / "unet-g1.onnx").write_bytes(b"x" * 30)
    assert bench.weight_bytes(tmp_path) == 730


def test_compiled_reports_the_fresh_process_memory_and_its_linears_and_the_table_shows_them(monkeypatch, tmp_path):
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    bench = _bench_module(monkeypatch, "runtime_exports")
    x = ops.parameter([2, 64], ov.Type.f32, name="sample")
    weight = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    ov.save_model(
        ov.Model([ops.matmul(x, ops.constant(weight), False, True)], [x]),
        str(tmp_path / "g.xml"),
        compress_to_fp16=False,
    )
    np.savez(tmp_path / "feeds.npz", sample=np.ones((4, 64), np.float32))  # compiled for these shapes
    compiled = bench.loaded(tmp_path / "g.xml", tmp_path / "feeds.npz")
    assert compiled["fully_connected"] == {"f32": 1} and compiled["peak_growth_mb"] >= compiled["held_mb"] > 0
    row = {"weights_mb": 1.5, "relative_l2_vs_diffusia": 2e-7}
    res = {"model": "tiny", "cpu": "cpu", "class": "vnni", "commit": "c", "date": "d"}
    rows = {"w4 openvino": {**row, "loaded": compiled}, "w4 onnxruntime": {**row, "loaded": None}}
    lines = bench.to_markdown({**res, "rows": rows}).splitlines()
    peak, held, mapped = compiled["peak_growth_mb"], compiled["held_mb"], compiled["mapped_mb"]
    assert f"| w4 openvino | 1.50 | 2.00e-07 | {peak:.1f} | {held:.1f} | {mapped:.1f} | f32 1 |" in lines
    assert "| w4 onnxruntime | 1.50 | 2.00e-07 | - | - | - | - |" in lines


def test_onnxruntime_rows_load_with_each_memory_arena_and_an_unknown_one_is_refused(monkeypatch, tmp_path, capsys):
    import numpy as np
    import onnx
    import pytest
    from onnx import TensorProto, helper, numpy_helper

    bench = _bench_module(monkeypatch, "runtime_exports")
    weight = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["sample", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("sample", TensorProto.FLOAT, [512, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 256])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "g.onnx"))
    np.savez(tmp_path / "feeds.npz", sample=np.ones((512, 64), np.float32))
    for arena in (None, "off"):  # diffusia's and one other (every arena's sessions: tests/runtime/test_runtime.py)
        got = bench.loaded(tmp_path / "g.onnx", tmp_path / "feeds.npz", arena, calls=2)
        assert got["fully_connected"] is None and got["peak_growth_mb"] >= got["held_mb"], arena
    monkeypatch.setattr("sys.argv", ["runtime_exports.py", "--arena", "kept,pooled"])
    with pytest.raises(SystemExit):
        bench.main()
    assert (
        "--arena: unknown pooled; choose from kept, shrunk, off, unplanned, exact, exact-unplanned"
        in capsys.readouterr().err
    )


def test_onnxruntime_graphs_trace_attention_per_head_or_whole_and_an_unknown_layout_is_refused(
    monkeypatch, tmp_path, capsys
):
    import onnx
    import pytest

    from diffusia.export import head_slices
    from diffusia.quant import attention
    from tests.export.test_onnx import _quantized

    bench = _bench_module(monkeypatch, "runtime_exports")
    monkeypatch.setattr(head_slices, "SCORES_AT_ONCE", 0)  # every attention counts as large
    unet = _quantized("w8").unet
    per_head = head_slices.one_head_at_a_time
    softmaxes = {}
    for layout in bench.ATTENTION:
        manifest = bench.exported(unet, "onnxruntime", tmp_path / layout, layout)
        nodes = onnx.load(str(tmp_path / layout / manifest["files"][0]), load_external_data=False).graph.node
        softmaxes[layout] = sum(n.op_type == "Softmax" for n in nodes)
        assert head_slices.one_head_at_a_time is per_head  # the experiment's patch does not outlive its export
    assert softmaxes == {"per-head": 8 * len(attention.attentions(unet)), "whole": len(attention.attentions(unet))}
    monkeypatch.setattr("sys.argv", ["runtime_exports.py", "--attention", "whole,tiled"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--attention: unknown tiled; choose from per-head, whole" in capsys.readouterr().err
