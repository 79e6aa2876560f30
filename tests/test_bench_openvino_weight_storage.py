"""benchmarks/openvino_weight_storage.py: its widened graph is the exported one with int4 and fp16 weights stored
wide again, value for value, and its report names every row."""

import numpy as np
import pytest

from tests.test_bench_backends import _bench_module

ov = pytest.importorskip("openvino")


def test_widened_graph_holds_the_same_values_in_int8_and_float32(monkeypatch):
    from openvino import opset13 as ops

    from diffusia.export.openvino import compile_model, narrow_weights

    bench = _bench_module(monkeypatch, "openvino_weight_storage")
    rng = np.random.default_rng(0)
    values = [
        rng.integers(-8, 8, size=(64, 33)).astype(np.int8),  # int4 codes, odd count
        rng.standard_normal((64, 32)).astype(np.float16).astype(np.float32),  # fp16 values
        rng.standard_normal((64, 32)).astype(np.float32),
    ]
    model = ov.Model([ops.convert(ops.constant(v), ov.Type.f32) for v in values], [])
    narrow_weights(model)
    assert bench.count_types(model) == {"i4": 1, "f16": 1, "f32": 1}
    bench.widened(model)
    assert bench.count_types(model) == {"i8": 1, "f32": 2}
    for out, v in zip(compile_model(model, "f32")({}).values(), values):
        assert np.array_equal(out, v.astype(np.float32))


def test_report_has_a_row_per_graph_with_its_paired_ratio(monkeypatch):
    bench = _bench_module(monkeypatch, "openvino_weight_storage")
    row = dict(median_ms=10.0, ratio=1.02, ratio_iqr=[1.0, 1.05], relative_l2_vs_diffusia=0.03)
    r = dict(model="tiny", latent=16, threads=2, rounds=3, precision="f32", openvino="o", cpu="c", date="d")
    r.update({"class": "vnni", "isa_caps": {}, "recipe": {"name": "w8a8", "calibrator": "mse"}})
    r["rows"] = {"exported": {**row, "constant_types": {"i8": 3}}, "widened": {**row, "constant_types": {"f32": 3}}}
    text = bench.render(r)
    assert "| exported | 10.0 | 1.020x (1.000-1.050) | 3.00% | i8 3 |" in text and "| widened |" in text
