"""Time SSIM, LPIPS-alex and FD-EffNetLite0 on random image pairs (default: 100 pairs at 32x32 and 64x64, 2 threads).

Writes benchmarks/results/<class>/metrics_speed.json and .md. Run from the repo root:
    python benchmarks/metrics_speed.py
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffusia.eval.metrics import frechet_distance, get_feature_extractor, lpips_distance, ssim
from diffusia.fileio import write_json, write_text

log = logging.getLogger("metrics_speed")
from _results import results_dir  # noqa: E402  (benchmarks/ is on sys.path when run)

RESULTS = results_dir()
TARGET_SECONDS = 60.0


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _pairs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform-noise images and a noisy copy of each (so the metrics are neither 0 nor saturated)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    return x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def run_size(size: int, n: int, extract: Callable[[torch.Tensor], Any]) -> dict[str, Any]:
    """All three metrics on n pairs of one size; seconds per metric."""
    x, y = _pairs(n, size, seed=size)
    s, t_ssim = _timed(lambda: ssim(x, y).mean().item())
    lp, t_lpips = _timed(lambda: lpips_distance(x, y).mean().item())
    (fx, fy), t_feat = _timed(lambda: (extract(x), extract(y)))
    fd, t_fd = _timed(lambda: frechet_distance(fx, fy))
    seconds = {"ssim": t_ssim, "lpips": t_lpips, "fd_features": t_feat, "fd_distance": t_fd}
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    total = round(sum(seconds.values()), 3)
    return {
        "size": size,
        "pairs": n,
        "ssim_mean": round(s, 5),
        "lpips_mean": round(lp, 5),
        "fd": round(fd, 4),
        "seconds": seconds,
        "total_seconds": total,
        "within_target": total < TARGET_SECONDS,
    }


def _markdown(data: dict[str, Any]) -> str:
    env, load = data["environment"], data["load_seconds"]
    lines = [
        "# Metric speed",
        "",
        f"{data['pairs']} random image pairs per size, torch {env['torch']}, {env['threads']} threads, "
        f"{env['cpu_count']} CPUs (load average {env['loadavg_before'][0]:.1f} before, "
        f"{env['loadavg_after'][0]:.1f} after). "
        f"One-off weight loading: LPIPS {load['lpips']} s, {data['fd_name']} {load['fd_model']} s.",
        "",
        "| size | SSIM s | LPIPS s | FD features s | FD sqrtm s | total s | < 60 s | mean SSIM | mean LPIPS | FD |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        sec, ok = r["seconds"], "yes" if r["within_target"] else "NO"
        lines.append(
            f"| {r['size']}x{r['size']} | {sec['ssim']} | {sec['lpips']} | {sec['fd_features']} | {sec['fd_distance']} "
            f"| {r['total_seconds']} | {ok} | {r['ssim_mean']} | {r['lpips_mean']} | {r['fd']} |"
        )
    lines += ["", f"FD is {data['fd_name']}: EfficientNet-Lite0 features, not comparable with published FID.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    loadavg_before = os.getloadavg()

    (fd_name, extract), t_fd_load = _timed(lambda: get_feature_extractor(prefer="effnet"))
    _, t_lpips_load = _timed(lambda: lpips_distance(*_pairs(1, 32, seed=0)))
    results = []
    for size in args.sizes:
        results.append(run_size(size, args.pairs, extract))
        log.info("%dx%d: %s", size, size, results[-1]["seconds"])

    data = {
        "pairs": args.pairs,
        "fd_name": fd_name,
        "target_seconds": TARGET_SECONDS,
        "load_seconds": {"lpips": round(t_lpips_load, 3), "fd_model": round(t_fd_load, 3)},
        "results": results,
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "loadavg_before": [round(v, 2) for v in loadavg_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        },
    }
    write_json(args.out / "metrics_speed.json", data)
    write_text(args.out / "metrics_speed.md", _markdown(data))
    return data


if __name__ == "__main__":
    main()
