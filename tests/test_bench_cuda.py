"""benchmarks/cuda_check.sh on a machine without CUDA: one line, a distinct exit code, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run for real")
def test_cuda_check_stops_at_once_without_cuda():
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "cuda_check.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PY": sys.executable},
        timeout=60,
    )
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA device" in proc.stderr
    assert not (ROOT / "benchmarks" / "results" / "cuda").exists()
