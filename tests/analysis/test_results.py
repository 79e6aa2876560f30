"""Loading results.json of evaluation runs."""

from __future__ import annotations

import json

import pytest

from diffusia.analysis.results import load_many, load_results
from diffusia.errors import DiffusiaError


def test_aliases_nesting_and_duplicates(tmp_path):
    run = {
        "device": "cpu",
        "variants": [
            {
                "name": "fp32",
                "unet_size_mb": 10,
                "peak_memory_mb": 100,
                "latency_s_per_image": 1.5,
                "metrics": {"lpips": {"mean": 0.0}, "ssim": 1.0, "frechet": 0.0},
            },
            {"name": "w8a8-fake", "mode": "fake", "size_mb": 3, "metrics": {"lpips": 0.1}},
        ],
    }
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "results.json").write_text(json.dumps(run))
    one = load_results(tmp_path / "a")
    assert one[0].size_mb == 10 and one[0].peak_mb == 100 and one[0].latency_s == 1.5
    assert one[0].lpips == 0.0 and one[0].fd == 0.0 and one[0].device == "cpu"
    assert one[1].simulated and one[1].peak_mb is None
    many = load_many([tmp_path])
    assert sorted(v.name for v in many) == ["a/fp32", "a/w8a8-fake", "b/fp32", "b/w8a8-fake"]
    with pytest.raises(DiffusiaError, match="no results.json"):
        load_results(tmp_path / "missing")


def _harness_run() -> dict:
    """The shape of diffusia.eval.harness.evaluate()'s results.json (only the fields read)."""

    def variant(kind, dtype, unet_mb, peak, lat):
        return {
            "kind": kind,
            "description": f"{kind} variant",
            "dtype": dtype,
            "size": {"unet_mb": unet_mb, "pipeline_mb": unet_mb + 5, "unet_bytes": int(unet_mb * 2**20)},
            "memory": {"peak_mb": peak, "peak_load_mb": peak / 2, "percent_of_budget": peak / 40.96},
            "latency": {
                "end_to_end": {"median": lat, "q1": lat * 0.98, "q3": lat * 1.02, "mean": lat, "std": 0.01, "n": 5},
                "unet_step": {"median": lat / 30},
                "components_per_image": {},
                "images_per_hour": 3600 / lat,
            },
        }

    def quality(ssim, lpips, psnr, fd):
        return {
            "overall": {
                "ssim": {"mean": ssim, "std": 0, "n": 4},
                "lpips": {"mean": lpips, "std": 0, "n": 4},
                "psnr": {"mean": psnr, "std": 0, "n": 4},
            },
            "per_category": {},
            "fd_vs_reference": fd,
        }

    return {
        "config": {"model": "tiny", "device": "cpu", "threads": 2, "budget_mb": 4096},
        "machine": {"cpu_model": "Test CPU", "cpu_cores": 2},
        "variants": {
            "fp32": variant("fp32", None, 10.0, 300.0, 1.0),
            "fp16": variant("dtype", "fp16", 5.0, 280.0, 1.3),
            "w8a8": variant("preset", None, 2.6, 250.0, 0.8),
        },
        "quality": {
            "reference": "fp32",
            "fd_name": "FD-EffNetLite0",
            "variants": {
                "fp32": quality(1.0, 0.0, 100.0, 0.0),
                "fp16": quality(0.999, 0.001, 60.0, 0.01),
                "w8a8": quality(0.95, 0.04, 30.0, 1.5),
            },
        },
    }


def test_harness_format(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_harness_run()))
    fp32, fp16, w8a8 = load_results(tmp_path)
    assert (fp32.name, fp32.precision, fp16.precision, w8a8.precision) == ("fp32", "fp32", "fp16", "w8a8")
    assert w8a8.size_mb == 2.6 and w8a8.pipeline_size_mb == 7.6 and w8a8.peak_mb == 250.0
    assert w8a8.latency_s == 0.8 and (w8a8.latency_q1_s, w8a8.latency_q3_s) == (0.8 * 0.98, 0.8 * 1.02)
    assert w8a8.throughput == pytest.approx(1 / 0.8)
    assert (w8a8.lpips, w8a8.ssim, w8a8.psnr, w8a8.fd) == (0.04, 0.95, 30.0, 1.5)
    assert not w8a8.simulated and w8a8.device == "cpu (Test CPU, 2 threads)"
    from diffusia.analysis.recommend import device_report, recommend

    assert recommend([fp32, fp16, w8a8], memory_mb=260).name == "w8a8"
    assert "fp16 is slower than FP32 on cpu (Test CPU, 2 threads)" in device_report([fp32, fp16, w8a8])
