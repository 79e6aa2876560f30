#!/usr/bin/env bash
# Reproduce every shipped benchmark result (benchmarks/results/), one after the other so they never share cores.
# Each writes JSON + Markdown into benchmarks/results/<CPU class>/ (avx2 or vnni); logs go to benchmarks/results/logs/. Roughly 4.5 h on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p benchmarks/results/logs
run() { local name=$1; shift; echo "== $name: $*"; "$PY" "$@" > "benchmarks/results/logs/$name.log" 2>&1; }

run tiny_quality        benchmarks/tiny_quality.py
run w8a8_ssim_tiny      benchmarks/w8a8_ssim_tiny.py             # W8A8 SSIM vs FP32 on the study's images, two calibrators
run w8a8_ssim_attention benchmarks/w8a8_ssim_tiny.py --presets w8a8,w8a8x2 --calibrators mse --activations auto,balanced --attention float,int8 --stem w8a8_ssim_tiny_attention
run eval_speed          benchmarks/eval_speed.py --source tiny
run backends            benchmarks/backends.py --budget 120      # tiny and sd15-arch (32x32), 52 rows each: at the
#   66-101 s per sd15-arch row of earlier runs (results/{amx,vnni}/**/backends_sd15-arch_32.json) about 1-1.5 h
run backends_interleaved benchmarks/backends_interleaved.py --model sd15-arch --rounds 30 --only nncf_int8_transformer,nncf_int8_bf16,nncf_int8_transformer_bf16,diffusia_w8a8_balanced_ov,diffusia_w8a8_balanced_attn8_ov,diffusia_w8a8_balanced_attn8_ov_bf16,diffusia_w8a8x2_ov,diffusia_w8a8x2_attn8_ov  # OpenVINO rows timed interleaved in one process, ~35 min
run generation_memory   benchmarks/generation_memory.py --model sd15-arch
run generation_memory_t benchmarks/generation_memory.py --model tiny
run qat_vs_ptq          benchmarks/qat_vs_ptq.py
run ptq_variants        benchmarks/ptq_variants.py
run kernels             benchmarks/kernels.py
run w8a8_schemes        benchmarks/w8a8_schemes.py
run train_step          benchmarks/train_step.py
run openvino_profile    benchmarks/openvino_profile.py           # OpenVINO per-node profile, diffusia vs NNCF
run openvino_graphs     benchmarks/openvino_graphs.py            # what each IR quantizes, compiled precisions
run torch_path          benchmarks/torch_path.py                 # diffusia's PyTorch path: channels-last, SDPA, profile
run calibration_time    benchmarks/calibration_time.py
run calibration_time_sd benchmarks/calibration_time.py --model sd15-arch --calib-size 4 --calib-steps 8 --calib-resolution 256
run shared_calibration  benchmarks/shared_calibration.py
run shared_calibration_sd benchmarks/shared_calibration.py --model sd15-arch --calib-size 4 --calib-steps 8 --calib-resolution 256
run generation_rt_tiny  benchmarks/generation_runtimes.py --model tiny --runs 5
run generation_rt       benchmarks/generation_runtimes.py        # sd15-arch at 512x512 per runtime, ~50 min
# the full study, timed (the README's `make run`)
/usr/bin/time -v .venv/bin/diffusia study --model tiny --out out/study > benchmarks/results/logs/study.log 2>&1
