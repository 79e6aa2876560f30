"""Peak memory of one variant, measured alone: a fresh process per variant (`python -m diffusia.eval.worker`, forked
after its imports by `diffusia.eval.zygote`).

On CPU the peak is the growth of the resident set over the process baseline taken after imports, before
loading, with the imported libraries wholly resident (`libraries`): VmHWM (reset through /proc/self/clear_refs where
the kernel allows it) minus VmRSS at that point.
On CUDA it is `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from diffusia.errors import DiffusiaError
from diffusia.eval import libraries, zygote
from diffusia.fileio import write_json

log = logging.getLogger(__name__)

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def status_mb(field: str) -> float | None:
    """A `Vm*` field of /proc/self/status in MiB, or None where /proc is absent."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not permitted."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory growth over a baseline taken at construction (call it after imports, before loading)."""

    def __init__(self, device: str = "cpu"):
        self.cuda = str(device).startswith("cuda")
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.baseline_mb = torch.cuda.memory_allocated() / 2**20
            self.hwm_reset, self.libraries_resident = True, None
        else:
            gc.collect()  # garbage of the imports (and of a zygote's loop) freed before the baseline
            self.libraries_resident = libraries.make_resident()
            self.hwm_reset = reset_peak_rss()
            self.baseline_mb = status_mb("VmRSS") or 0.0
        self.marks: dict[str, float] = {}

    def peak_mb(self) -> float:
        """Peak so far (MiB) over the baseline."""
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20 - self.baseline_mb
        return (status_mb("VmHWM") or 0.0) - self.baseline_mb

    def current_mb(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.memory_allocated() / 2**20 - self.baseline_mb
        return (status_mb("VmRSS") or 0.0) - self.baseline_mb

    def mark(self, name: str) -> None:
        """Record the peak up to now under `name`."""
        self.marks[name] = round(self.peak_mb(), 1)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": "cuda_max_memory_allocated" if self.cuda else "cpu_peak_rss_growth",
            "baseline_mb": round(self.baseline_mb, 1),
            "peak_mb": round(self.peak_mb(), 1),
            "peak_reset_after_imports": self.hwm_reset,
            "libraries_resident": self.libraries_resident,
            **{f"peak_{k}_mb": v for k, v in self.marks.items()},
        }


def run_isolated(
    task: dict[str, Any], timeout: float | None = None, workdir: str | Path | None = None
) -> dict[str, Any]:
    """Run `diffusia.eval.worker` on `task` in a fresh process (`zygote`) and return its JSON result."""
    for v in task.get("variants") or [task]:
        if not Path(v["folder"]).is_dir():
            raise DiffusiaError(f"variant folder {v['folder']} does not exist: materialise the variant first")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="diffusia-worker-"))
    workdir.mkdir(parents=True, exist_ok=True)
    name = task.get("name", "variant")
    task_path, result_path = workdir / f"{name}.task.json", workdir / f"{name}.result.json"
    result_path.unlink(missing_ok=True)
    write_json(task_path, {**task, "result": str(result_path)})
    log_path = workdir / f"{name}.log"
    log.info("worker for %s: %s", name, task_path)
    try:
        code = zygote.run_worker(task_path, log_path, timeout)
    except zygote.WorkerTimeout:
        raise DiffusiaError(
            f"the measurement of {name!r} took longer than {timeout:.0f} s: lower --num or --runs"
        ) from None
    if code != 0 or not result_path.is_file():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {code}"
        raise DiffusiaError(f"the measurement of {name!r} failed: {last.removeprefix('diffusia: error: ')}")
    return json.loads(result_path.read_text())
