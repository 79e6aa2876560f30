"""benchmarks/pipeline_parts.py on the micro pipeline: both parts converted for OpenVINO, compared with PyTorch on
the same input and timed in paired rounds."""

from tests.test_bench_backends import _bench_module


def test_parts_run_on_openvino_as_on_pytorch(monkeypatch, micro_pipeline_dir):
    parts = _bench_module(monkeypatch, "pipeline_parts")
    res = parts.measure(str(micro_pipeline_dir), rounds=2, threads=1)
    assert set(res) == {"text_encoder", "vae_decoder"}
    for part in res.values():
        rows = part["rows"]
        assert {"torch", "openvino_f32"} <= set(rows) <= {"torch", "openvino_f32", "openvino_bf16"}
        assert rows["torch"]["rel_l2"] == 0 and rows["openvino_f32"]["rel_l2"] < 1e-4
        assert all(len(r["times_ms"]) == 2 and r["ms"]["median"] > 0 for r in rows.values())
        assert rows["openvino_f32"]["vs_torch"]["median"] > 0 and "vs_torch" not in rows["torch"]
    header = dict(model="micro", rounds=2, threads=1, torch="t", openvino="o", cpu="c", date="d")
    text = parts.markdown({**header, "class": "vnni", "parts": res})
    assert text.count("| vae_decoder |") == len(res["vae_decoder"]["rows"])
