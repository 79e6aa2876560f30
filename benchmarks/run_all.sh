#!/usr/bin/env bash
# Reproduce every shipped benchmark result (benchmarks/results/), one after the other so they never share cores.
# Each writes JSON + Markdown into benchmarks/results/<CPU class>/ (avx2 or vnni); logs go to benchmarks/results/logs/. Roughly 3 h on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p benchmarks/results/logs
run() { local name=$1; shift; echo "== $name: $*"; "$PY" "$@" > "benchmarks/results/logs/$name.log" 2>&1; }

run tiny_quality        benchmarks/tiny_quality.py
run eval_speed          benchmarks/eval_speed.py --source tiny
run backends            benchmarks/backends.py --budget 120      # tiny and sd15-arch (32x32), ~55 min
run generation_memory   benchmarks/generation_memory.py --model sd15-arch
run generation_memory_t benchmarks/generation_memory.py --model tiny
run qat_vs_ptq          benchmarks/qat_vs_ptq.py
run ptq_variants        benchmarks/ptq_variants.py
run kernels             benchmarks/kernels.py
run w8a8_schemes        benchmarks/w8a8_schemes.py
run train_step          benchmarks/train_step.py
# the full study, timed (the README's `make run`)
/usr/bin/time -v .venv/bin/diffusia study --model tiny --out out/study > benchmarks/results/logs/study.log 2>&1
