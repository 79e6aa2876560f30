"""Report: tables from hand-made results, strict JSON, FD named by its extractor, the grid PNG."""

from __future__ import annotations

import json
import math

import numpy as np

from diffusia.eval.report import json_safe, machine_info, render_markdown, save_grid, write_report


def _lat(median: float) -> dict:
    s = {"median": median, "q1": median - 0.1, "q3": median + 0.2, "mean": median, "std": 0.1, "n": 10}
    return {
        "end_to_end": s,
        "unet_step": {"median": median / 30, "n": 250},
        "components_per_image": {"text_encoder": {"median": 0.01}, "vae_decode": {"median": 0.05}},
        "images_per_hour": 3600 / median,
        "load_average": [[1.25, 1.0, 0.5], [1.75, 1.1, 0.6]],
    }


def _results(fd_name: str = "FD-EffNetLite0") -> dict:
    q = {
        "reference": "fp32",
        "fd_name": fd_name,
        "images": 4,
        "psnr_cap_db": 100.0,
        "real_images": 4,
        "notes": [],
        "variants": {
            n: {
                "overall": {"ssim": {"mean": s}, "lpips": {"mean": lp}, "psnr": {"mean": p}},
                "per_category": {"tops": {"ssim": {"mean": s, "n": 3}, "lpips": {"mean": lp}, "psnr": {"mean": p}}},
                "fd_vs_reference": fd,
                "fd_vs_real": 5.0,
            }
            for n, s, lp, p, fd in (("fp32", 1.0, 0.0, 100.0, 0.0), ("w8a8", 0.93, 0.04, 31.2, 1.5))
        },
    }

    def size(u, w, c):
        return {
            "unet_mb": u,
            "pipeline_mb": w,
            "unet_change_pct": c,
            "pipeline_change_pct": None if c is None else c / 2,
        }

    return {
        "config": {
            "model": "tiny",
            "model_label": "tiny",
            "prompts": "eval",
            "num": 4,
            "seed": 42,
            "seed_range": [42, 42],
            "steps": 25,
            "guidance": 7.5,
            "device": "cpu",
            "runs": 10,
            "warmup": 1,
            "threads": 2,
            "budget_mb": 4096,
        },
        "machine": {"cpu_model": "Test CPU", "cpu_cores": 2, "torch": "2.x", "loadavg": [1.0]},
        "packages": {"torch": "2.x"},
        "jobs": [{"prompt": f"p{i}"} for i in range(4)],
        "variants": {
            "fp32": {
                "size": size(10.0, 40.0, None),
                "memory": {"peak_mb": 300.0, "peak_load_mb": 200.0, "percent_of_budget": 7.3},
                "latency": _lat(3.0),
            },
            "w8a8": {
                "size": size(2.6, 32.6, -74.0),
                "memory": {"peak_mb": 150.0, "peak_load_mb": 100.0, "percent_of_budget": 3.7},
                "latency": _lat(float("nan")),
            },
        },
        "quality": q,
        "real_set": "Fashion-MNIST test",
        "grid": "grid.png",
        "notes": ["a note"],
    }


def test_markdown_has_the_four_tables_and_names_fd_honestly():
    md = render_markdown(json_safe(_results()))
    for title in (
        "## I. Model size",
        "## II. Peak memory",
        "## III. Latency and throughput",
        "## IV. Quality vs FP32",
        "### Quality per prompt category",
    ):
        assert title in md
    assert "| w8a8 | 2.60 | -74.0% | 32.60 | -37.0% |" in md
    assert "| fp32 | 200.0 | 300.0 | 7.3 |" in md and "budget 4096 MB" in md
    assert "FD-EffNetLite0 vs FP32" in md and "FD-EffNetLite0 vs Fashion-MNIST test" in md
    assert "FID vs" not in md and "| FID" not in md  # "FID" only in "not comparable with published FID"
    assert "| fp32 | 3.000 | 2.900-3.200 | 10 |" in md  # median, then the interquartile range
    assert "| w8a8 | - | - | 10 |" in md  # NaN shown as '-', not 'nan'
    assert "load average 1.25 before, 1.75 after" in md and "interleaved" in md
    assert "| w8a8 | tops | 3 | 0.9300 | 0.0400 | 31.20 |" in md
    assert "![grid](grid.png)" in md and "- a note" in md
    assert "FID vs FP32" in render_markdown(json_safe(_results("FID")))


def test_results_json_is_strict_and_written_atomically(tmp_path):
    res = _results()
    res["variants"]["fp32"]["x"] = np.float32(1.5)
    write_report(res, tmp_path)
    text = (tmp_path / "results.json").read_text()
    data = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert data["variants"]["w8a8"]["latency"]["end_to_end"]["mean"] is None
    assert data["variants"]["fp32"]["x"] == 1.5
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation: tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.json"]  # no temporary leftovers
    assert json_safe({"a": [math.inf]}) == {"a": [None]}


def test_round_off_below_zero_prints_as_zero():
    res = json_safe(_results())
    res["quality"]["variants"]["fp32"]["fd_vs_reference"] = -1e-12
    md = render_markdown(res)
    assert "-0.000" not in md and "| 100.00 | 0.000 |" in md


def test_grid_png(tmp_path):
    from PIL import Image

    rows = {"fp32": np.zeros((3, 16, 16, 3)), "fp16": np.ones((3, 16, 16, 3))}
    path = save_grid(
        rows, ["a red bag", "a blue coat", "a very long prompt that will be shortened here"], tmp_path / "grid.png"
    )
    w, h = Image.open(path).size
    assert w > h > 0


def test_machine_info_has_what_latency_depends_on():
    info = machine_info()
    assert info["cpu_cores"] >= 1 and info["torch_threads"] >= 1 and info["torch"] and info["cpu_model"]


def test_size_table_shows_the_runtime_graph_only_when_a_variant_ran_on_one():
    res = _results()
    assert "U-Net graph MB" not in render_markdown(json_safe(res))
    res["variants"]["w8a8"]["size"]["runtime_graph_mb"] = 2.75  # the fp32 graph was exported at load: no size
    md = render_markdown(json_safe(res))
    assert "| Variant | U-Net MB | vs FP32 | U-Net graph MB | Pipeline MB | vs FP32 |" in md
    assert "| w8a8 | 2.60 | -74.0% | 2.75 | 32.60 | -37.0% |" in md and "| fp32 | 10.00 | - | - | 40.00 | - |" in md
