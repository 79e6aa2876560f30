"""benchmarks/measuring_processes.py: the table reports each variant both ways."""

from tests.test_bench_backends import _bench_module


def test_the_table_has_each_variant_both_ways(monkeypatch):
    bench = _bench_module(monkeypatch, "measuring_processes")
    one = {"baseline_mb": 430.0, "peak_mb": 117.0, "peak_load_mb": 90.0, "latency_s": 0.31, "wall_s": 2.5}
    raw = {"fp32": {"zygote": [one, {**one, "peak_mb": 119.0}], "fresh": [{**one, "wall_s": 7.5}] * 2}}
    res = {
        "model": "tiny",
        "rounds": 2,
        "runs": 3,
        "steps": 8,
        "threads": 2,
        "cpu": "cpu",
        "class": "vnni",
        "date": "d",
        "variants": {
            name: {w: {f: bench.summary([m[f] for m in ms]) for f in bench.FIELDS} for w, ms in ways.items()}
            for name, ways in raw.items()
        },
    }
    text = bench.to_markdown(res)
    assert "| fp32 | zygote | 430.0 (430.0-430.0) | 118.0 (117.0-119.0) | 90.0 (90.0-90.0) |" in text
    assert "| fp32 | fresh | 430.0 (430.0-430.0) | 117.0 (117.0-117.0) |" in text and "| 7.500 (7.500-7.500) |" in text
