"""Spread the evaluation images of one variant over processes with accelerate.

    torchrun --standalone --nproc_per_node 2 -m diffusia.eval.generate_shards TASK.json

Each process takes its share of the jobs (`PartialState().split_between_processes`) and writes their PNGs,
named by job index, into the task's `images_dir`; as every image depends only on its prompt and seed, the
result equals a single-process run. `launch()` starts the processes (CPU: gloo over loopback) and waits.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)


def run_shard(task: dict[str, Any]) -> list[int]:
    """Render this process's share of the jobs into `images_dir`; returns the job indices it did."""
    import torch
    from accelerate import PartialState

    from diffusia.eval.images import jobs_from_dicts, render, save_images
    from diffusia.eval.worker import generation_config, load_variant

    if task.get("threads"):
        torch.set_num_threads(int(task["threads"]))
    state = PartialState(cpu=str(task.get("device", "cpu")) == "cpu")
    device = task.get("device", "cpu")
    if device.startswith("cuda") and state.num_processes > 1:
        device = str(state.device)
    jobs = jobs_from_dicts(task["jobs"])
    with state.split_between_processes(jobs) as mine:
        mine = list(mine)
        if mine:
            pipe = load_variant(task, device, task.get("threads"))
            images = render(pipe, mine, generation_config(task))
            save_images(images, [j.index for j in mine], task["images_dir"])
    log.info("process %d of %d rendered %d images", state.process_index, state.num_processes, len(mine))
    state.wait_for_everyone()
    return [j.index for j in mine]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(task: dict[str, Any], processes: int, workdir: str | Path, timeout: float | None = None) -> None:
    """Run `processes` copies of this module on `task` (torch.distributed.run on loopback) and wait for them."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    task_path = workdir / f"{task.get('name', 'variant')}.shards.json"
    task_path.write_text(json.dumps(task))
    Path(task["images_dir"]).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "diffusia.eval.generate_shards",
        str(task_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(task.get("threads") or 1)}
    if str(task.get("device", "cpu")) == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    log.info("scale-out: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DiffusiaError(f"the {processes} generation processes took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()] or proc.stderr.splitlines() or ["?"]
        raise DiffusiaError(f"scale-out generation failed (exit {proc.returncode}): {lines[-1].strip()}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        run_shard(json.loads(Path(argv[0]).read_text()))
    except DiffusiaError as e:
        print(f"diffusia: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
