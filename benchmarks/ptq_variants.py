"""W8A8 PTQ variants and image quality on `tiny`.

The policy's kept layers: W8A8 with the default policy (time embedding, time_emb_proj, conv_in/conv_out stored in
FP16, computed in FP32), with them left in FP32 (keep_as=fp32), and with the 22 time_emb_proj linears quantized
weight-only to INT8 (rule `*time_emb_proj=w8`, the override that brings the SD v1.5 U-Net under 25.5 % of FP32
bytes: benchmarks/results/<class>/generation_memory_sd15-arch.md). The calibrator and the activation digits: W8A8 with the
MSE calibrator, and the `w8a8x2` preset (MSE, full-resolution convolutions with two-digit activations).

SSIM and LPIPS of each variant's images against the FP32 images of the same prompts and seeds (class x colour
prompts, 1 image each, seed 42, DPM-Solver 25 steps, guidance 7.5); every variant is calibrated on the same prompts.

    python benchmarks/ptq_variants.py [--num 32] [--calib-size 16]     # ~15 min on 2 cores
Writes benchmarks/results/<class>/ptq_variants.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402

OUT = results_dir()
from qat_vs_ptq import compare, images_of  # noqa: E402

from diffusia import load_pipeline  # noqa: E402
from diffusia.config import get_preset  # noqa: E402
from diffusia.fileio import write_json, write_text  # noqa: E402
from diffusia.prompts import load_prompts  # noqa: E402
from diffusia.quant.pipeline import quantize_pipeline  # noqa: E402

VARIANTS = {  # name: (preset, recipe changes)
    "w8a8 (default: kept layers stored FP16)": ("w8a8", {}),
    "w8a8, kept layers FP32": ("w8a8", {"keep_as": "fp32"}),
    "w8a8, time_emb_proj weight-only INT8": ("w8a8", {"rules": [("*time_emb_proj", "w8")]}),
    "w8a8, MSE calibrator": ("w8a8", {"calibrator": "mse"}),
    "w8a8x2 (MSE, full-resolution blocks in two digits)": ("w8a8x2", {}),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=32, help="prompts (1 image each)")
    p.add_argument("--calib-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(OUT / "ptq_variants"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    prompts = [q.text for q in load_prompts("tiny", model="tiny")][: args.num]
    calib = load_prompts("calibration", model="tiny")
    t0 = time.time()
    reference = images_of(load_pipeline("tiny", progress=False), prompts)
    rows = {}
    for name, (preset, changes) in VARIANTS.items():
        recipe = get_preset(preset).replace(**changes)
        pipe = quantize_pipeline(
            load_pipeline("tiny", progress=False), recipe, calib, calib_size=args.calib_size, progress=False
        )
        rows[name] = compare(images_of(pipe, prompts), reference)
        print(name, rows[name], flush=True)
    res = {
        "model": "tiny",
        "num": len(prompts),
        "calib_size": args.calib_size,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds": round(time.time() - t0),
        "rows": rows,
    }
    write_json(args.out + ".json", res)
    lines = [
        "# W8A8 PTQ variants and image quality on `tiny` (real INT8 kernels)",
        "",
        f"{res['num']} class x colour prompts, 1 image each, seed 42, DPM-Solver 25 steps, guidance 7.5; "
        f"calibration on {args.calib_size} prompts; against the FP32 images. {args.threads} threads, "
        f"torch {res['torch']}, {res['seconds']} s.",
        "",
        "| variant | SSIM mean (min) | LPIPS mean (max) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {n} | {r['ssim']:.4f} ({r['ssim_min']:.3f}) | {r['lpips']:.4f} ({r['lpips_max']:.3f}) |"
        for n, r in rows.items()
    ]
    write_text(args.out + ".md", "\n".join(lines) + "\n")
    return res


if __name__ == "__main__":
    main()
