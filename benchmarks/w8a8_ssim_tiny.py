"""SSIM against FP32 of the study's 32 `tiny` evaluation images (the harness's jobs, seeds from 42), for W8A8 with
the percentile (default) and MSE calibrators, 16 calibration prompts x 25 steps; scikit-image SSIM on 8-bit images.
Writes benchmarks/results/<class>/<stem>.{json,md} (default stem w8a8_ssim_tiny): mean, standard deviation and
minimum over the images.

    python benchmarks/w8a8_ssim_tiny.py [--out DIR]
    python benchmarks/w8a8_ssim_tiny.py --calibrators mse --activations auto,int8,balanced   # the activation ranges
    python benchmarks/w8a8_ssim_tiny.py --presets w8a8,w8a8x2 --calibrators mse --activations auto,balanced \
        --attention float,int8 --stem w8a8_ssim_tiny_attention   # int8 attention (one row per combination)

Copied into a checkout of 59c3e9a (before the calibration-subsample fix) it gives the README's "before" figure.
Quality only: nothing here is timed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_class, results_dir, write_results  # noqa: E402

from diffusia import load_pipeline  # noqa: E402
from diffusia.config import get_preset  # noqa: E402
from diffusia.eval.images import make_jobs, render, to_uint8  # noqa: E402
from diffusia.generate import GenerationConfig  # noqa: E402
from diffusia.prompts import load_prompts  # noqa: E402
from diffusia.quant.pipeline import quantize_pipeline  # noqa: E402


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=results_dir())
    ap.add_argument(
        "--calibrators", default="percentile,mse", help="comma list, one row each (with each --activations)"
    )
    ap.add_argument("--activations", default="auto", help="comma list of Recipe.activations values")
    ap.add_argument("--attention", default="float", help="comma list of Recipe.attention values (float, int8)")
    ap.add_argument("--presets", default="w8a8", help="comma list of W8A8-family presets (w8a8, w8a8x2)")
    ap.add_argument("--stem", default="w8a8_ssim_tiny", help="name of the result files in --out")
    args = ap.parse_args()
    jobs = make_jobs(load_prompts("eval", "tiny"), 32, 42)
    fp32 = to_uint8(render(load_pipeline("tiny", progress=False), jobs, GenerationConfig()))
    rows = []
    combos = [
        (p, c, a, t)
        for p in args.presets.split(",")
        for c in args.calibrators.split(",")
        for a in args.activations.split(",")
        for t in args.attention.split(",")
    ]
    for preset, calibrator, activations, attention in combos:
        pipe = load_pipeline("tiny", progress=False)
        recipe = get_preset(preset).replace(calibrator=calibrator, activations=activations, attention=attention)
        calib = load_prompts("calibration", "tiny")
        quantize_pipeline(pipe, recipe, calib, calib_size=16, steps=25, progress=False, validate=False)
        images = to_uint8(render(pipe, jobs, GenerationConfig()))
        ssim = [structural_similarity(a, b, channel_axis=2, data_range=255) for a, b in zip(images, fp32)]
        rows.append(
            {
                "preset": preset,
                "calibrator": calibrator,
                "activations": activations,
                "attention": attention,
                "ssim_mean": round(float(np.mean(ssim)), 4),
                "ssim_std": round(float(np.std(ssim)), 4),
                "ssim_min": round(float(np.min(ssim)), 4),
                "images": len(ssim),
            }
        )
    res = {"commit": commit(), "class": machine_class(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    res["rows"] = rows
    lines = [
        "# W8A8 presets on `tiny`: SSIM against FP32",
        "",
        f"Commit {res['commit']}, class `{res['class']}`, {res['date']}. The study's 32 evaluation images (seeds from "
        "42, DPM-Solver 25 steps, guidance 7.5); calibration on 16 prompts x 25 steps; scikit-image SSIM on 8-bit "
        "images.",
        "",
        "| preset | calibrator | activations | attention | SSIM mean | std | min | images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['preset']} | {r['calibrator']} | {r['activations']} | {r['attention']} | {r['ssim_mean']:.4f} | "
        f"{r['ssim_std']:.4f} | {r['ssim_min']:.4f} | {r['images']} |"
        for r in rows
    ]
    write_results(args.out / args.stem, res, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
