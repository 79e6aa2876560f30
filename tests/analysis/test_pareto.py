"""Pareto fronts on hand-made points."""

from __future__ import annotations

import json

from diffusia.analysis.pareto import pareto_front, write_pareto
from diffusia.analysis.results import VariantResult

V = VariantResult


def _points():
    return [
        V("fp32", size_mb=100, peak_mb=900, latency_s=2.0, lpips=0.00, ssim=1.00, fd=0.0),
        V("fp16", size_mb=50, peak_mb=850, latency_s=2.2, lpips=0.01, ssim=0.99, fd=0.5),
        V("w8a8", size_mb=26, peak_mb=700, latency_s=1.5, lpips=0.05, ssim=0.95, fd=2.0),
        V("w8", size_mb=26, peak_mb=720, latency_s=2.5, lpips=0.04, ssim=0.96, fd=1.5),
        V("w4", size_mb=14, peak_mb=650, latency_s=3.0, lpips=0.20, ssim=0.80, fd=9.0),
        V("bad", size_mb=60, peak_mb=950, latency_s=3.5, lpips=0.30, ssim=0.70, fd=20.0),  # dominated everywhere
        V("sim-w4a4", size_mb=8, peak_mb=100, latency_s=0.1, lpips=0.10, ssim=0.9, fd=5.0, simulated=True),
        V("no-lpips", size_mb=5, peak_mb=600, latency_s=1.0),
    ]


def _names(front):
    return {p.name for p in front}


def test_size_front_exact():
    # a simulated variant's size is exact (from shapes): it may be on a size front (and dominate w4 here)
    assert _names(pareto_front(_points(), [("size_mb", "min"), ("lpips", "min")])) == {"fp32", "fp16", "w8", "sim-w4a4"}
    assert _names(pareto_front(_points(), [("size_mb", "min"), ("ssim", "max")])) == {"fp32", "fp16", "w8", "sim-w4a4"}
    measured = [p for p in _points() if not p.simulated]
    assert _names(pareto_front(measured, [("size_mb", "min"), ("lpips", "min")])) == {"fp32", "fp16", "w8", "w4"}


def test_latency_front_excludes_simulated():
    assert _names(pareto_front(_points(), [("latency_s", "min"), ("lpips", "min")])) == {"fp32", "w8a8"}
    assert _names(pareto_front(_points(), [("peak_mb", "min"), ("lpips", "min")])) == {
        "fp32",
        "fp16",
        "w8a8",
        "w8",
        "w4",
    }


def test_ties_and_dicts():
    pts = [{"name": "a", "x": 1, "q": 1}, {"name": "b", "x": 1, "q": 1}, {"name": "c", "x": 2, "q": 1}]
    assert [p["name"] for p in pareto_front(pts, [("x", "min"), ("q", "min")])] == ["a", "b"]


def test_write_pareto(tmp_path):
    data = write_pareto(_points(), tmp_path)
    fronts = data["fronts"]
    assert set(fronts["latency_s:lpips"]) == {"fp32", "w8a8"}
    assert "sim-w4a4" not in fronts["peak_mb:fd"]
    assert "bad" not in {n for names in fronts.values() for n in names}
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "pareto_size_mb.png",
        "pareto_latency_s.png",
        "pareto_peak_mb.png",
    }
    md = (tmp_path / "pareto.md").read_text()
    assert "| sim-w4a4 | yes |" in md
    assert json.loads((tmp_path / "pareto.json").read_text())["fronts"] == fronts
