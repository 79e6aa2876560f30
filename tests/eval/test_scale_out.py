"""Scale-out: images rendered by 2 CPU processes (accelerate, via torch.distributed.run) equal a single process's."""

from __future__ import annotations

import numpy as np
import torch

from diffusia.eval import generate_shards
from diffusia.eval.images import Job, load_images, render, to_uint8
from diffusia.generate import GenerationConfig


def test_two_processes_match_one(micro_pipeline_dir, micro_pipe, tmp_path):
    jobs = [
        Job(0, "a red bag", "bags", 42),
        Job(1, "a blue coat", "tops", 42),
        Job(2, "a green shirt", "tops", 42),
        Job(3, "a red bag", "bags", 43),
    ]
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
        "jobs": [j.to_dict() for j in jobs],
        "images_dir": str(tmp_path / "images"),
    }
    generate_shards.launch(task, processes=2, workdir=tmp_path / "work", timeout=900)
    sharded = load_images(tmp_path / "images", len(jobs))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = render(micro_pipe, jobs, GenerationConfig(steps=2, height=32, width=32))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(to_uint8(sharded), to_uint8(single))
    assert not np.array_equal(sharded[0], sharded[3])  # same prompt, next seed
