"""Time the quality step of `diffusia eval` for one variant over 100 images of `tiny`: SSIM + LPIPS against the
FP32 images, and the Frechet distances to FP32 and to the real Fashion-MNIST test images (target < 60 s, 2 cores).

The images are the embedded `tiny` pipeline's (FP32, and FP32 + small noise standing in for a variant) when
diffusia/assets/tiny exists, else random 32x32 images: metric time depends on image count and size only.
Writes benchmarks/results/<class>/eval_speed.json and .md. Run from the repo root:
    python benchmarks/eval_speed.py
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusia.eval.metrics import frechet_distance, get_feature_extractor
from diffusia.eval.quality import aggregate, pairwise, to_tensor
from diffusia.eval.report import machine_info, package_versions
from diffusia.fileio import write_json, write_text

log = logging.getLogger("eval_speed")
from _results import results_dir  # noqa: E402  (benchmarks/ is on sys.path when run)

RESULTS = results_dir()
TARGET_SECONDS = 60.0


CPU_SECONDS: dict[str, float] = {}


def _timed(fn: Callable[[], Any], key: str | None = None) -> tuple[Any, float]:
    """(value, wall seconds); the process CPU seconds go to CPU_SECONDS[key] (all threads summed)."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    if key:
        CPU_SECONDS[key] = round(time.process_time() - cpu, 3)
    return value, time.perf_counter() - start


def tiny_images(n: int, steps: int) -> np.ndarray:
    """n evaluation images of the embedded tiny pipeline (FP32, the harness's jobs)."""
    from diffusia import load_pipeline
    from diffusia.eval.images import make_jobs, render
    from diffusia.generate import GenerationConfig
    from diffusia.prompts import load_prompts

    pipe = load_pipeline("tiny", progress=False)
    return render(pipe, make_jobs(load_prompts("eval", "tiny"), n, 42), GenerationConfig(steps=steps), progress=True)


def images(n: int, source: str, steps: int) -> tuple[np.ndarray, np.ndarray, str, float]:
    from diffusia.models.loading import TINY_DIR

    if source == "tiny" or (source == "auto" and (TINY_DIR / "model_index.json").is_file()):
        ref, t_gen = _timed(lambda: tiny_images(n, steps))
        label = f"tiny FP32 images ({steps} steps); variant = FP32 + N(0, 0.02) noise"
    else:
        ref, t_gen = np.random.default_rng(0).random((n, 32, 32, 3), dtype=np.float32), 0.0
        why = "--source random" if source == "random" else "the tiny pipeline is not in diffusia/assets/tiny"
        label = f"random 32x32 images, tiny's size ({why}); variant = + N(0, 0.02)"
    noise = 0.02 * np.random.default_rng(1).standard_normal(ref.shape)
    return ref.astype(np.float32), np.clip(ref + noise, 0, 1).astype(np.float32), label, t_gen


def run(n: int, source: str, steps: int, compare_sqrtm: bool = False) -> dict[str, Any]:
    from diffusia.eval.harness import real_images

    ref, var, label, t_gen = images(n, source, steps)
    real, t_real_load = _timed(lambda: real_images("tiny", n)[0])
    (fd_name, extract), t_fd_load = _timed(lambda: get_feature_extractor("auto"))
    _, t_lpips_load = _timed(lambda: pairwise(ref[:1], var[:1]))
    seconds: dict[str, float] = {}
    per_image, seconds["ssim_lpips_psnr"] = _timed(lambda: pairwise(ref, var), "ssim_lpips_psnr")
    agg = aggregate(per_image, ["all"] * n)
    feats = {}
    for key, imgs in (("fp32", ref), ("variant", var), ("real", real)):
        feats[key], seconds[f"features_{key}"] = _timed(lambda imgs=imgs: extract(to_tensor(imgs)), f"features_{key}")
    fd_ref, seconds["fd_vs_fp32"] = _timed(lambda: frechet_distance(feats["fp32"], feats["variant"]), "fd_vs_fp32")
    fd_real, seconds["fd_vs_real"] = _timed(lambda: frechet_distance(feats["real"], feats["variant"]), "fd_vs_real")
    total = sum(seconds.values())
    sqrtm = None
    if compare_sqrtm:
        fd_sqrtm, t_sqrtm = _timed(lambda: frechet_distance(feats["fp32"], feats["variant"], method="sqrtm"))
        sqrtm = {
            "seconds": round(t_sqrtm, 3),
            "fd": fd_sqrtm,
            "relative_difference": abs(fd_sqrtm - fd_ref) / max(abs(fd_sqrtm), 1e-12),
        }
    return {
        "images": n,
        "source": label,
        "fd_name": fd_name,
        "target_seconds": TARGET_SECONDS,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "total_seconds": round(total, 3),
        "cpu_seconds": dict(CPU_SECONDS),
        "total_cpu_seconds": round(sum(CPU_SECONDS.values()), 3),
        "within_target": total < TARGET_SECONDS,
        "one_off_seconds": {
            "feature_net_load": round(t_fd_load, 3),
            "lpips_load": round(t_lpips_load, 3),
            "real_images_load": round(t_real_load, 3),
            "tiny_generation": round(t_gen, 3),
        },
        "frechet_sqrtm_path": sqrtm,
        "values": {
            "ssim": agg["overall"]["ssim"]["mean"],
            "lpips": agg["overall"].get("lpips", {}).get("mean"),
            "psnr": agg["overall"]["psnr"]["mean"],
            "fd_vs_fp32": fd_ref,
            "fd_vs_real": fd_real,
        },
    }


def markdown(data: dict[str, Any]) -> str:
    s, m, v, sq = data["seconds"], data["machine"], data["values"], data["frechet_sqrtm_path"]
    rows = "\n".join(f"| {k} | {t} | {data['cpu_seconds'].get(k, '-')} |" for k, t in s.items())
    return "\n".join(
        [
            "# Evaluation speed (quality step, one variant)",
            "",
            f"{data['images']} images: {data['source']}. {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']}, "
            f"{data['threads']} threads, load average {data['loadavg_before'][0]:.1f} before / "
            f"{data['loadavg_after'][0]:.1f} after.",
            "",
            "| step | wall s | CPU s (all threads) |",
            "|---|---|---|",
            rows,
            f"| **total** | **{data['total_seconds']}** ({'within' if data['within_target'] else 'OVER'} the "
            f"{data['target_seconds']:.0f} s target) | {data['total_cpu_seconds']} |",
            "",
            "Wall time is what the harness waits; CPU time is the work itself. When the load average exceeds the "
            "core count, other processes take the cores and wall time grows beyond the CPU time.",
            "",
            f"Values: SSIM {v['ssim']:.4f}, LPIPS {v['lpips']:.4f}, PSNR {v['psnr']:.2f} dB, {data['fd_name']} vs FP32 "
            f"{v['fd_vs_fp32']:.4f}, vs Fashion-MNIST test {v['fd_vs_real']:.3f}.",
            "",
            "Frechet distance: the exact low-rank path (SVD of the N x N cross product, used when N < D)"
            + (
                f"; scipy's sqrtm on the D x D product instead: {sq['seconds']} s, relative difference "
                f"{sq['relative_difference']:.1e}."
                if sq
                else " (run with --compare-sqrtm to time the sqrtm path)."
            ),
            "",
            f"One-off costs (not in the total): {', '.join(f'{k} {t} s' for k, t in data['one_off_seconds'].items())}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--source", choices=("auto", "tiny", "random"), default="auto")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps when generating tiny images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare-sqrtm", action="store_true", help="also time scipy's sqrtm path (slow)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    before = os.getloadavg()
    data = run(args.images, args.source, args.steps, args.compare_sqrtm)
    data.update(
        threads=torch.get_num_threads(),
        loadavg_before=[round(x, 2) for x in before],
        loadavg_after=[round(x, 2) for x in os.getloadavg()],
        machine=machine_info(),
        packages=package_versions(),
    )
    write_json(args.out / "eval_speed.json", data)
    write_text(args.out / "eval_speed.md", markdown(data))
    log.info("total %.1f s: %s", data["total_seconds"], data["seconds"])
    return data


if __name__ == "__main__":
    main()
