"""Recommendation logic on hand-made results."""

from __future__ import annotations

from diffusia.analysis.recommend import device_report, quantization_verdicts, recommend
from diffusia.analysis.results import VariantResult

V = VariantResult


def _results():
    return [_spread(v) for v in _point_results()]


def _spread(v):
    """The runs' interquartile range: +-3 % around the median (a quiet machine)."""
    if v.latency_s is not None and not v.simulated:
        v.latency_q1_s, v.latency_q3_s = v.latency_s * 0.97, v.latency_s * 1.03
    return v


def _point_results():
    return [
        V("fp32", size_mb=3300, peak_mb=5200, latency_s=20.0, lpips=0.0, ssim=1.0, precision="fp32", device="cpu"),
        V("fp16", size_mb=1650, peak_mb=3600, latency_s=21.0, lpips=0.002, ssim=0.999, precision="fp16", device="cpu"),
        V("w8a8", size_mb=830, peak_mb=2600, latency_s=12.0, lpips=0.05, ssim=0.95, precision="w8a8", device="cpu"),
        V("w4", size_mb=450, peak_mb=1900, latency_s=30.0, lpips=0.15, ssim=0.85, precision="w4", device="cpu"),
        V("w4a4-sim", size_mb=400, peak_mb=500, latency_s=1.0, lpips=0.01, simulated=True),
    ]


def test_picks_best_quality_that_fits():
    r = recommend(_results(), memory_mb=4096)
    assert r.name == "fp16"
    assert "fp16" in r.reason and "3.52 GB" in r.reason and "w4a4-sim" in r.rejected
    assert r.rejected["fp32"].startswith("peak memory")
    assert recommend(_results(), memory_mb=8192).name == "fp32"
    assert recommend(_results(), memory_mb=3000).name == "w8a8"
    assert recommend(_results(), memory_mb=2000).name == "w4"


def test_latency_limit_and_tolerance():
    assert recommend(_results(), memory_mb=8192, latency_s=15).name == "w8a8"
    # within 0.01 LPIPS of the best: the smaller one wins
    assert recommend(_results(), memory_mb=8192, quality_tolerance=0.01).name == "fp16"


def test_none_fits():
    r = recommend(_results(), memory_mb=1024)
    assert r.variant is None and "No measured variant fits" in r.reason and "w4" in r.reason
    r = recommend(_results(), memory_mb=8192, latency_s=5)
    assert r.variant is None and "none meets" in r.reason and "w8a8" in r.reason
    assert recommend([_results()[-1]], memory_mb=8192).variant is None  # simulated only


def test_device_report_and_verdicts():
    text = device_report(_results())
    assert "phone-class" in text and "laptop GPU" in text and "workstation" in text
    assert "fp16: no measurable difference in latency from FP32" in text  # 21 vs 20 s inside +-3 %
    v = quantization_verdicts(_results(), 24576)
    assert any(s.startswith("Quantization does not pay for speed with w4") for s in v)
    assert any(s.startswith("w8a8 is 1.67x faster") for s in v)
    assert any("FP32 does not fit" in s for s in quantization_verdicts(_results(), 4096))


def test_no_speedup_is_claimed_inside_the_measured_spread():
    from diffusia.analysis.recommend import compare_latency, quantization_verdicts

    fp32 = V("fp32", size_mb=26, peak_mb=130, latency_s=2.0, latency_q1_s=1.9, latency_q3_s=2.3, precision="fp32")
    fp16 = V("fp16", size_mb=13, peak_mb=118, latency_s=1.8, latency_q1_s=1.7, latency_q3_s=2.0, precision="fp16")
    w8a8 = V("w8a8", size_mb=7, peak_mb=119, latency_s=1.2, latency_q1_s=1.1, latency_q3_s=1.3, precision="w8a8")
    assert compare_latency(fp16, fp32) == "same" and compare_latency(w8a8, fp32) == "faster"
    assert compare_latency(fp32, w8a8) == "slower"
    text = " ".join(quantization_verdicts([fp32, fp16, w8a8], 4096))
    assert "fp16: no measurable difference in latency from FP32" in text and "fp16 is" not in text
    assert "w8a8 is 1.67x faster than FP32" in text and "IQR 1.1-1.3" in text


def test_single_figures_never_make_a_speedup_claim():
    from diffusia.analysis.recommend import compare_latency, quantization_verdicts

    fp32, fp16, w8a8, *_ = _point_results()  # latencies without a measured spread (e.g. one timed run each)
    assert compare_latency(w8a8, fp32) == "unknown"
    text = " ".join(quantization_verdicts([fp32, fp16, w8a8], 24576))
    assert "faster" not in text and "slower" not in text and text.count("too few timed runs") == 2
