"""SSIM against FP32 of the study's 32 `tiny` evaluation images (the harness's jobs, seeds from 42), for W8A8 with
the percentile (default) and MSE calibrators, 16 calibration prompts x 25 steps; scikit-image SSIM on 8-bit images.

    python benchmarks/w8a8_ssim_tiny.py
Run at 59c3e9a (before the calibration-subsample fix) it gives the README's "before" figure.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from diffusia import load_pipeline
from diffusia.config import get_preset
from diffusia.eval.images import make_jobs, render, to_uint8
from diffusia.generate import GenerationConfig
from diffusia.prompts import load_prompts
from diffusia.quant.pipeline import quantize_pipeline


def main() -> None:
    jobs = make_jobs(load_prompts("eval", "tiny"), 32, 42)
    fp32 = to_uint8(render(load_pipeline("tiny", progress=False), jobs, GenerationConfig()))
    for calibrator in ("percentile", "mse"):
        pipe = load_pipeline("tiny", progress=False)
        recipe = get_preset("w8a8").replace(calibrator=calibrator)
        calib = load_prompts("calibration", "tiny")
        quantize_pipeline(pipe, recipe, calib, calib_size=16, steps=25, progress=False, validate=False)
        images = to_uint8(render(pipe, jobs, GenerationConfig()))
        ssim = np.mean([structural_similarity(a, b, channel_axis=2, data_range=255) for a, b in zip(images, fp32)])
        print(f"w8a8 {calibrator}: SSIM {ssim:.4f} over {len(jobs)} images")


if __name__ == "__main__":
    main()
