"""Peak memory: /proc readings in this process, and a fresh worker process that measures a variant alone."""

from __future__ import annotations

import mmap

import pytest

from diffusia.errors import DiffusiaError
from diffusia.eval.images import Job, load_images
from diffusia.eval.memory import PeakMemory, run_isolated, status_mb


def test_peak_memory_sees_an_allocation():
    if status_mb("VmRSS") is None:
        pytest.skip("no /proc/self/status")
    mem = PeakMemory("cpu")
    # a fresh anonymous mapping: new pages whatever the allocator kept resident from earlier tests in this process
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\1" * len(block))  # 64 MiB, touched
    mem.mark("alloc")
    block.close()
    assert mem.marks["alloc"] >= 50
    assert mem.summary()["peak_mb"] >= 50
    assert mem.summary()["kind"] == "cpu_peak_rss_growth"


def test_worker_measures_a_variant_in_a_fresh_process(micro_pipeline_dir, tmp_path):
    jobs = [Job(0, "a red bag", "bags", 42), Job(1, "a blue coat", "tops", 42)]
    task = {
        "name": "fp32",
        "folder": str(micro_pipeline_dir),
        "dtype": None,
        "device": "cpu",
        "steps": 2,
        "guidance": 7.5,
        "seed": 42,
        "height": 32,
        "width": 32,
        "threads": 1,
        "runs": 2,
        "warmup": 1,
        "jobs": [j.to_dict() for j in jobs],
        "images_dir": str(tmp_path / "images"),
    }
    res = run_isolated(task, timeout=600, workdir=tmp_path / "work")
    mem = res["memory"]
    assert mem["peak_mb"] > 0 and mem["peak_load_mb"] > 0 and mem["peak_mb"] >= mem["peak_load_mb"]
    assert mem["baseline_mb"] > 100  # torch and diffusers were imported before the baseline
    assert res["latency"]["end_to_end"]["n"] == 2 and res["latency"]["torch_threads"] == 1
    images = load_images(tmp_path / "images", 2)
    assert images.shape == (2, 32, 32, 3) and 0 <= images.min() and images.max() <= 1


def test_missing_folder_fails_before_spawning(tmp_path):
    task = {"name": "broken", "folder": str(tmp_path / "nowhere"), "jobs": []}
    with pytest.raises(DiffusiaError, match="nowhere does not exist") as e:
        run_isolated(task, workdir=tmp_path / "work")
    assert "\n" not in str(e.value) and not (tmp_path / "work").exists()
