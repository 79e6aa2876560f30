"""One sd15-arch U-Net step on a CUDA GPU: FP32, FP16, W8A8 and W8, timed with CUDA events, peak memory from
`torch.cuda.max_memory_allocated`. Run by `benchmarks/cuda_check.sh` (prepared for a few borrowed GPU minutes;
not yet run on a GPU by this project). Writes benchmarks/results/cuda/cuda_step_<latent>.{json,md}.

SD v1.5 architecture with seed-0 RANDOM weights, batch 2 (the two guidance branches), the same seeded input for
every variant; W8A8 calibrated (MSE) on 4 Gaussian inputs, never the timed one. Note what the W8A8 row is on CUDA
(`diffusia/quant/kernels/cuda.py`): linears on `torch._int_mm` (real INT8), convolutions in FP16 on dequantized
values (simulated numerics, FP16 speed).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "cuda"


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def inputs(latent: int, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 4, latent, latent, generator=g).to(device),
        torch.tensor([500, 500], device=device),
        torch.randn(2, 77, 768, generator=g).to(device),
    )


def build(variant: str, latent: int):
    from diffusers import UNet2DConditionModel

    from diffusia.config import get_preset
    from diffusia.models.architectures import SD15_UNET
    from diffusia.quant import api

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval().cuda()
    if variant == "fp16":
        return unet.half()
    if variant in ("w8a8", "w8"):
        recipe = get_preset(variant).replace(calibrator="mse") if variant == "w8a8" else get_preset(variant)
        api.quantize(unet, recipe)
        if variant == "w8a8":
            with api.calibrate(unet), torch.no_grad():
                for seed in range(1, 5):
                    unet(*inputs(latent, seed, "cuda"))
        api.freeze(unet)
    return unet


def time_step(unet, x, repeats: int) -> tuple[list[float], torch.Tensor]:
    with torch.no_grad():
        out = unet(*x).sample  # warm-up
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = unet(*x).sample
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return times, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--variants", default="fp32,fp16,w8a8,w8")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("cuda_step: no CUDA device here; nothing to measure", file=sys.stderr)
        return 3
    from diffusia.fileio import write_json, write_text
    from diffusia.versions import package_versions

    rows, ref = [], None
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        unet = build(variant, args.latent)
        prepare_s = time.perf_counter() - t0
        x = inputs(args.latent, 0, "cuda")
        if variant == "fp16":
            x = (x[0].half(), x[1], x[2].half())
        times, out = time_step(unet, x, args.repeats)
        out = out.float().cpu()
        ref = out if variant == "fp32" else ref
        q1, med, q3 = statistics.quantiles(times, n=4, method="inclusive")
        rows.append(
            {
                "variant": variant,
                "median_ms": med,
                "q1_ms": q1,
                "q3_ms": q3,
                "n": len(times),
                "peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
                "prepare_s": prepare_s,
                "rel_l2_vs_fp32": None if ref is None else rel_l2(out, ref),
            }
        )
        del unet, out
        gc.collect()
    res = {
        "gpu": torch.cuda.get_device_name(0),
        "latent": args.latent,
        "batch": 2,
        "weights": "random (sd15-arch)",
        "packages": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    stem = args.out / f"cuda_step_{args.latent}"
    write_json(stem.with_suffix(".json"), res)
    lines = [
        f"# sd15-arch U-Net step on {res['gpu']} ({args.latent}x{args.latent} latent, batch 2, random weights)",
        "",
        "| variant | step ms (median) | IQR ms | peak allocated MB | rel-L2 vs FP32 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        err = "-" if r["rel_l2_vs_fp32"] is None else f"{r['rel_l2_vs_fp32']:.2%}"
        lines.append(
            f"| {r['variant']} | {r['median_ms']:.1f} | {r['q1_ms']:.1f}-{r['q3_ms']:.1f} | "
            f"{r['peak_allocated_mb']:.0f} | {err} |"
        )
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print(stem.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
