"""benchmarks/generation_runtimes.py: a run of some rows builds and reports only what those rows load."""

from tests.test_bench_backends import _bench_module


def _result(build: dict, rows: list[dict]) -> dict:
    machine = {"cpu": "cpu", "class": "vnni", "threads": 2, "load_start": 0.5, "date": "d", "versions": {"torch": "2"}}
    return {
        "model": "sd15-arch",
        "random": True,
        "preset": "w8a8",
        "calibrator": "mse",
        "steps": 25,
        "runs": 2,
        "calib_size": 2,
        "calib_steps": 8,
        "image": "512x512",
        "build": build,
        "rows": rows,
        "machine": machine,
    }


def _row(name: str, runtime: str, median: float, peak: float) -> dict:
    return {
        "name": name,
        "status": "ok",
        "runtime": runtime,
        "median_s": median,
        "times_s": [median, median],
        "peak_rss_mb": peak,
        "load_s": 3.0,
        "image_diff": 0.0,
    }


def test_a_run_without_nncf_rows_reports_no_nncf_build(monkeypatch):
    bench = _bench_module(monkeypatch, "generation_runtimes")
    build = {
        "diffusia_quantize_s": 100.0,
        "diffusia_calibration_s_per_prompt": 50.0,
        "diffusia_save_and_export_s": 200.0,
        "diffusia_checks": {},
    }
    rows = [_row("fp32_torch", "torch", 200.0, 5000.0), _row("diffusia_onnxruntime", "onnxruntime", 150.0, 2500.0)]
    text = bench.to_markdown(_result(build, rows))
    assert "(50.0 s per prompt)." in text and "NNCF" not in text
    assert "Build: diffusia quantize 100.0 s, save + export + check 200.0 s" in text
    assert (
        "| diffusia_onnxruntime | onnxruntime | torch | f32 | 150.00 | 150.00, 150.00 | 0.75 | 2,500 | 0.50 |" in text
    )
    full = {**build, "fp32_openvino_export_s": 90.0, "nncf_build_s": 600.0, "nncf_calibration_calls": 16}
    text = bench.to_markdown(_result(full, rows))
    assert "Build: FP32 OpenVINO export 90.0 s; NNCF 600.0 s; diffusia quantize" in text
    assert "NNCF calibrated on the 16 U-Net inputs of the same trajectories." in text


def test_heap_kept_rows_run_with_the_release_off_and_the_report_names_them(monkeypatch, tmp_path):
    import argparse
    import subprocess
    import types

    from diffusia.models import heap

    bench = _bench_module(monkeypatch, "generation_runtimes")
    assert bench.ROWS["diffusia_openvino_heap_kept"] == bench.ROWS["diffusia_openvino"]
    envs = {}
    ran = types.SimpleNamespace(returncode=1)
    monkeypatch.setattr(subprocess, "run", lambda cmd, env, **kw: envs.setdefault(cmd[-1], env) and ran)
    args = argparse.Namespace(threads=2, runs=1, steps=2)
    for name in ("diffusia_openvino", "diffusia_openvino_heap_kept"):
        assert bench.measure(name, args, tmp_path)["status"] == "failed"  # nothing ran
    assert [env[heap.ENV] for env in envs.values()] == ["1", "0"]
    build = {"diffusia_quantize_s": 1.0, "diffusia_calibration_s_per_prompt": 0.5, "diffusia_save_and_export_s": 2.0}
    rows = [
        {**_row("fp32_torch", "torch", 200.0, 5000.0), "heap_released": True},
        {**_row("fp32_torch_heap_kept", "torch", 200.0, 5500.0), "heap_released": False},
    ]
    text = bench.to_markdown(_result({**build, "diffusia_checks": {}}, rows))
    assert "before the VAE decodes (`diffusia.models.heap`) in every row but fp32_torch_heap_kept (" in text
    assert "| fp32_torch_heap_kept | torch | torch | f32 | 200.00 | 200.00, 200.00 | 1.00 | 5,500 | 1.10 |" in text
    earlier = [_row("fp32_torch", "torch", 200.0, 5000.0)]  # results before the rows said
    assert "DIFFUSIA_MALLOC_TRIM" not in bench.to_markdown(_result({**build, "diffusia_checks": {}}, earlier))
