"""benchmarks/openvino_cache.py: a load with a cache writes it, the next one reads it, and the table shows each."""

from tests.test_bench_backends import _bench_module


def test_a_cached_load_writes_the_cache_and_the_table_shows_every_load(monkeypatch, tmp_path):
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    bench = _bench_module(monkeypatch, "openvino_cache")
    x = ops.parameter([2, 64], ov.Type.f32, name="sample")
    weight = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    ov.save_model(ov.Model([ops.matmul(x, ops.constant(weight), False, True)], [x]), str(tmp_path / "g.xml"))
    np.savez(tmp_path / "feeds.npz", sample=np.ones((4, 64), np.float32))
    graph, feeds, cache = tmp_path / "g.xml", tmp_path / "feeds.npz", tmp_path / "cache"
    plain = bench.load(graph, feeds, cache, None)
    assert plain["cache_mb"] == 0 and not cache.exists() and plain["compile_s"] > 0
    first = bench.load(graph, feeds, cache, "OPTIMIZE_SPEED")
    assert first["cache_mb"] > 0 and any(cache.iterdir())
    res = {"model": "tiny", "preset": "w8a8", "cpu": "cpu", "class": "vnni", "commit": "c", "date": "d"}
    md = bench.to_markdown({**res, "graph_mb": 0.01, "rows": {"no cache": plain, "first": first}})
    assert f"| first | {first['read_s']:.2f} | {first['compile_s']:.2f} |" in md
    assert sum(line.startswith("|") for line in md.splitlines()) == 4  # header, rule, two loads
