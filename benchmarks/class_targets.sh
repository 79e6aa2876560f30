#!/usr/bin/env bash
# The runs behind issue 14's runtime targets, on THIS machine's CPU class, one after another (never sharing the
# cores): the tiny U-Net's rows, sd15-arch's per-layer two-digit plans chosen on this machine, the rows the targets
# compare timed interleaved in one process, where OpenVINO spends the step, and the calibration time. What a
# session on a class not measured yet (a real AVX2-only machine, the AMX class) runs first. ~2.5 h on 2 idle cores.
#
#   bash benchmarks/class_targets.sh             # results and logs in benchmarks/results/<class>/targets/
#   bash benchmarks/class_targets.sh --dry-run   # print the commands only
#   ONLY=tiny_interleaved,calibration_time bash benchmarks/class_targets.sh   # some of the steps (names below)
#
# CPU_CLASS=avx2|vnni|amx overrides the detected class (e.g. for a dry run), OUT the results folder, PLAN and GROWN the
# plan JSONs `sd15_interleaved` times (default: the ones `x2_layer_gain` and `x2_grow` just wrote). Under the AVX2
# caps of the README (OV_CPU_MAX_ISA=AVX2 ...) the detected class stays the real one: set CPU_CLASS=avx2 and
# OUT=benchmarks/results/<real class>/avx2_capped/targets, so emulated figures never sit with a real AVX2 machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DRY=${1:-}
CLASS=${CPU_CLASS:-$("$PY" -c 'import sys; sys.path.insert(0, "benchmarks"); from _results import machine_class; print(machine_class())')}
OUT=${OUT:-benchmarks/results/$CLASS/targets}
PLAN=${PLAN:-$OUT/x2_layer_gain/x2_layer_gain.json}  # the two-digit plan the sd15 rows time
GROWN=${GROWN:-$OUT/x2_grow/x2_layer_gain.json}  # VNNI/AMX: W8A8 with a few second digits
run() {
  local name=$1; shift
  [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]] && return
  echo "== $name: $*"
  [ "$DRY" = --dry-run ] && return
  mkdir -p "$OUT"
  "$@" > "$OUT/$name.log" 2>&1 || echo "   $name failed (rc $?): see $OUT/$name.log"
}

case $CLASS in
  avx2)  # no bf16 units: float layers in f32 only; diffusia's PyTorch kernels are a candidate for the fastest path
    TINY=ov_fp32,nncf_int8,nncf_int8_transformer,nncf_hybrid,diffusia_w8a8_mse,diffusia_w8a8_mse_ov,diffusia_w8a8_balanced_attn8_ov,diffusia_hybrid_mse_ov,diffusia_w8a8x2_ov
    GAIN=(--target 0.028)  # grow W8A8-MSE to <= 2.8 % (the target: the fastest INT8 path at <= 3 %)
    GROW=()
    SD=nncf_int8,nncf_int8_transformer,nncf_hybrid,diffusia_w8a8_mse,diffusia_w8a8_mse_ov,diffusia_hybrid_mse_ov,diffusia_w8a8_mse_x2_plan,diffusia_w8a8_mse_x2_plan_ov,diffusia_w8a8x2
    PROFILE=(--preset w8a8)
    ;;
  vnni|amx)  # W8A8 <= 1.0x NNCF at <= half its error; w8a8x2 <= 1.3x at <= 2 %
    TINY=ov_fp32,nncf_int8,nncf_int8_bf16,nncf_int8_transformer,nncf_int8_transformer_bf16,diffusia_w8a8_mse_ov,diffusia_w8a8_mse_ov_bf16,diffusia_w8a8_balanced_attn8_ov_bf16,diffusia_hybrid_mse_ov_bf16,diffusia_w8a8x2_ov
    GAIN=(--start w8a8x2 --attention int8 --target 0.019)  # shrink the preset to what 2 % needs
    # grow W8A8 until its f32 error leaves room for bf16's ~2 points (in quadrature) under half NNCF's bf16 error
    GROW=(--activations balanced --attention int8 --target 0.0265)
    SD=nncf_int8,nncf_int8_bf16,nncf_int8_transformer,nncf_int8_transformer_bf16,diffusia_w8a8_balanced_attn8_ov,diffusia_w8a8_balanced_attn8_ov_bf16,diffusia_w8a8_x2_grown_ov_bf16,diffusia_w8a8x2_attn8_ov,diffusia_w8a8_mse_x2_plan_ov
    PROFILE=(--activations balanced --attention int8 --nncf-precision f32,bf16)
    ;;
  *) echo "unknown CPU class '$CLASS': set CPU_CLASS to avx2, vnni or amx" >&2; exit 2 ;;
esac

run tiny_interleaved  "$PY" benchmarks/backends_interleaved.py --model tiny --rounds 400 --only "$TINY" --against ov_fp32 --out "$OUT/tiny"
run x2_layer_gain     "$PY" benchmarks/x2_layer_gain.py "${GAIN[@]}" --out "$OUT/x2_layer_gain"
[ ${#GROW[@]} -gt 0 ] && run x2_grow "$PY" benchmarks/x2_layer_gain.py "${GROW[@]}" --out "$OUT/x2_grow"
run sd15_interleaved  env X2_PLAN="$PLAN" X2_GROWN="$GROWN" "$PY" benchmarks/backends_interleaved.py --model sd15-arch --rounds 30 --only "$SD" --out "$OUT/sd15"
run openvino_profile  "$PY" benchmarks/openvino_profile.py "${PROFILE[@]}" --rounds 15 --out "$OUT"
run calibration_time  "$PY" benchmarks/calibration_time.py --model tiny --out "$OUT"
