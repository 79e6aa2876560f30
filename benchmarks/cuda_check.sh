#!/usr/bin/env bash
# For a few minutes on one NVIDIA GPU (< 6 min): the CUDA-only tests, then FP32/FP16/W8A8/W8 on sd15-arch at
# 64x64 (CUDA-event timing, max_memory_allocated) -> benchmarks/results/cuda/cuda_step_64.{json,md}.
# Without CUDA it stops at once with one line.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! command -v nvidia-smi >/dev/null || ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "cuda_check: no CUDA device (or no CUDA build of torch) on this machine; nothing to do" >&2
  exit 3
fi
timeout 150 "$PY" -m pytest tests -m cuda -q -p no:cacheprovider
timeout 200 "$PY" benchmarks/cuda_step.py --latent 64 --repeats 10
