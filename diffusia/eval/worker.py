"""Measure variants in a fresh process: `python -m diffusia.eval.worker TASK.json` (run by `memory.run_isolated`).

One variant (task["folder"]): baseline memory after imports, load the folder, latency (warm-up + timed runs),
render the jobs' images into PNGs, peak memory. Several (task["variants"]: name, folder, dtype): load them all and
time them in interleaved rounds (`latency.measure_interleaved`). The result is written as JSON to the task's
`result` path.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline  # noqa: F401
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

import diffusia  # noqa: F401  (import cost belongs to the baseline, not to the variant)
from diffusia.errors import DiffusiaError
from diffusia.eval.images import jobs_from_dicts, render, save_images
from diffusia.eval.latency import measure_interleaved, measure_latency
from diffusia.eval.memory import PeakMemory
from diffusia.fileio import atomic_dir, write_json
from diffusia.generate import GenerationConfig
from diffusia.runtime import runtime_of, runtime_precision_of

try:  # the quantized-folder loader and its kernels, when this diffusia has them
    import diffusia.quant.serialization  # noqa: F401
except ImportError:
    pass

log = logging.getLogger(__name__)


def generation_config(task: dict[str, Any], seed: int | None = None) -> GenerationConfig:
    return GenerationConfig(
        steps=int(task["steps"]),
        guidance=float(task["guidance"]),
        seed=int(task["seed"] if seed is None else seed),
        height=task.get("height"),
        width=task.get("width"),
    )


def load_variant(spec: dict[str, Any], device: str, threads: int | None):
    """The pipeline of a task's variant: its folder, dtype, runtime and runtime precision."""
    from diffusia import load_pipeline

    return load_pipeline(
        spec["folder"],
        device=device,
        dtype=spec.get("dtype"),
        progress=False,
        runtime=spec.get("runtime"),
        threads=threads,
        runtime_precision=spec.get("runtime_precision", "f32"),
    )


def run_interleaved(task: dict[str, Any]) -> dict[str, Any]:
    """Latency of every variant of task["variants"], interleaved in this one process."""

    device = task.get("device", "cpu")
    pipes = {v["name"]: load_variant(v, device, task.get("threads")) for v in task["variants"]}
    first = jobs_from_dicts(task["jobs"])[0]
    return {
        "latency": measure_interleaved(
            pipes,
            first.prompt,
            generation_config(task, first.seed),
            runs=int(task["runs"]),
            warmup=int(task.get("warmup", 1)),
        )
    }


def run(task: dict[str, Any]) -> dict[str, Any]:
    """Do the task in this process (it must be fresh for the memory numbers to mean anything)."""

    if task.get("threads"):
        torch.set_num_threads(int(task["threads"]))
    if "variants" in task:
        return run_interleaved(task)
    device = task.get("device", "cpu")
    mem = PeakMemory(device)
    t0 = time.perf_counter()
    pipe = load_variant(task, device, task.get("threads"))
    load_s = time.perf_counter() - t0
    mem.mark("load")
    jobs = jobs_from_dicts(task["jobs"])
    result: dict[str, Any] = {
        "name": task.get("name"),
        "folder": task["folder"],
        "load_seconds": load_s,
        "unet_dtype": str(pipe.unet.dtype).replace("torch.", ""),
        "runtime": runtime_of(pipe),
        "runtime_precision": runtime_precision_of(pipe),
    }
    if task.get("runs", 0) > 0:
        first = jobs[0]
        result["latency"] = measure_latency(
            pipe,
            first.prompt,
            generation_config(task, first.seed),
            runs=int(task["runs"]),
            warmup=int(task.get("warmup", 1)),
        )
    if task.get("images_dir"):
        images = render(pipe, jobs, generation_config(task))
        with atomic_dir(task["images_dir"]) as tmp:
            save_images(images, [j.index for j in jobs], tmp)
        result["images"] = {"dir": task["images_dir"], "count": len(jobs), "shape": list(images.shape[1:])}
    mem.mark("end")
    result["memory"] = mem.summary()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    task = json.loads(Path(argv[0]).read_text())
    try:
        result = run(task)
    except DiffusiaError as e:
        print(f"diffusia: error: {e}", file=sys.stderr)
        return 2
    write_json(task["result"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
