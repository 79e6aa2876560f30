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
