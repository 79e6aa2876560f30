"""Calibrating several recipes of one model (a study's w8a8, mixed and searched plans): sampling the calibration
prompts once per recipe against observing them once and handing the observations to every recipe
(`diffusia.calib.observations`), in one run.

    python benchmarks/shared_calibration.py                       # tiny, 16 prompts x 25 steps (a study's)
    python benchmarks/shared_calibration.py --model sd15-arch --calib-size 4 --calib-steps 8 --calib-resolution 256
Per recipe: the calibration seconds diffusia.json records, and the whole `quantize_pipeline` call (plan,
calibration, weight quantization; no validation; the pipeline is loaded before the clock starts). The ranges of
each recipe from the shared pass are compared with its own sampling pass. Writes
benchmarks/results/<class>/shared_calibration_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_class, results_dir, write_results  # noqa: E402


def _ranges(pipe) -> dict:
    from diffusia.quant import api

    return {n: m.act_range.clone() for n, m in api.qmodules(pipe.unet).items() if m.spec.act_digits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--recipes", default="w8a8,mixed")
    ap.add_argument("--calib-size", type=int, default=16)
    ap.add_argument("--calib-steps", type=int, default=25)
    ap.add_argument("--calib-resolution", type=int, default=None, help="pixels, square (default: the model's)")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    from diffusia import load_pipeline
    from diffusia.calib.observations import Observations
    from diffusia.config import get_preset
    from diffusia.prompts import load_prompts, take
    from diffusia.quant import cpu
    from diffusia.quant.pipeline import CALIBRATION_BATCH, quantize_pipeline

    load_start = os.getloadavg()[0]
    prompts = load_prompts("calibration", args.model)
    recipes = args.recipes.split(",")
    common = dict(
        calib_size=args.calib_size,
        steps=args.calib_steps,
        resolution=args.calib_resolution,
        progress=False,
        validate=False,
    )

    def quantize(recipe: str, observations=None):
        pipe = load_pipeline(args.model, progress=False)
        t0 = time.perf_counter()
        quantize_pipeline(pipe, recipe, prompts, observations=observations, **common)
        return pipe, time.perf_counter() - t0, pipe.diffusia_calibration.seconds

    pipe = load_pipeline(args.model, progress=False)
    shared = Observations.record(
        pipe,
        get_preset(recipes[0]),
        take(prompts, args.calib_size),
        args.calib_steps,
        7.5,
        batch=CALIBRATION_BATCH,
        resolution=args.calib_resolution,
        progress=False,
    )
    del pipe
    rows = []
    for name in recipes:
        live, live_s, live_cal = quantize(name)
        adopted, adopted_s, adopted_cal = quantize(name, shared)
        expected, got = _ranges(live), _ranges(adopted)
        worst = max(float((got[n] - expected[n]).abs().max() / expected[n].abs().max()) for n in expected)
        rows.append(
            {
                "recipe": name,
                "layers": len(expected),
                "sampling_calibration_s": round(live_cal, 2),
                "sampling_quantize_s": round(live_s, 2),
                "shared_calibration_s": round(adopted_cal, 2),
                "shared_quantize_s": round(adopted_s, 2),
                "shared_used": adopted.diffusia_calibration.shared,
                "max_range_difference": worst,
            }
        )
    res = {
        "model": args.model,
        "calib_size": args.calib_size,
        "calib_steps": args.calib_steps,
        "calib_resolution": args.calib_resolution,
        "observe_s": round(shared.seconds, 2),
        "unet_calls": shared.unet_calls,
        "rows": rows,
        "cpu": cpu.cpu_model(),
        "class": machine_class(),
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg()[0],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    each = sum(r["sampling_calibration_s"] for r in rows)
    once = shared.seconds + sum(r["shared_calibration_s"] for r in rows)
    size = f"{args.calib_resolution}x{args.calib_resolution}" if args.calib_resolution else "the model's resolution"
    lines = [
        f"# Shared calibration: {len(rows)} recipes of `{args.model}`",
        "",
        f"{args.calib_size} prompts x {args.calib_steps} steps at {size}, {CALIBRATION_BATCH} prompts per call; "
        f"{res['cpu']} (class `{res['class']}`), load average {load_start:.2f} at start, {res['load_avg_end']:.2f} at "
        f"end; {res['date']}. One run, in one process.",
        "",
        f"Observing once: {shared.seconds:.1f} s ({shared.unet_calls} U-Net calls, every Conv2d/Linear observed).",
        "",
        "| recipe | W8A8 layers | calibration s: sampling again | from the shared observations | "
        "quantize s: sampling again | from the shared observations | largest range difference |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['recipe']} | {r['layers']} | {r['sampling_calibration_s']:.1f} | {r['shared_calibration_s']:.2f} | "
        f"{r['sampling_quantize_s']:.1f} | {r['shared_quantize_s']:.1f} | {r['max_range_difference']:.2e} |"
        for r in rows
    ]
    lines += [
        "",
        f"Calibrating all {len(rows)} recipes: {each:.1f} s sampling for each, {once:.1f} s observing once and "
        f"handing over ({each / once:.2f}x less).",
        "Range difference: the largest change of a layer's bounds, relative to its largest bound. A non-zero one "
        "comes from the kept layers: a recipe's own sampling pass runs them with fp16-rounded weights, the shared "
        "one in fp32.",
    ]
    suffix = f"_{args.calib_resolution}" if args.calib_resolution else ""
    write_results(args.out / f"shared_calibration_{args.model}{suffix}", res, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
