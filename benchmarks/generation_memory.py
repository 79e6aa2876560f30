"""Peak memory and bytes on disk of a whole generation: FP32 pipeline vs diffusia's INT8 folders (W8A8, W8).

Each variant is saved as a folder, then loaded and run in a fresh process (`diffusia.eval.memory.run_isolated`):
peak RSS growth over the process baseline after imports, covering loading and one image at the model's native
resolution; each variant twice, with diffusia returning the freed heap to the OS before the VAE decode (the
default, `diffusia.models.heap`) and without it. Peak memory does not depend on the number of denoising steps, so
`--steps 2` keeps the SD v1.5 run short; calibration of W8A8 likewise uses few sampler steps (`sd15-arch` has random
weights: only memory and size are measured here, not quality).

    python benchmarks/generation_memory.py --model sd15-arch      # ~8 min on 2 Zen 4 cores, ~12 GB of disk in --work
    python benchmarks/generation_memory.py --model tiny
Writes benchmarks/results/<class>/generation_memory_<model>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from unittest import mock

import torch

from diffusia import load_pipeline
from diffusia.config import get_preset
from diffusia.eval.memory import run_isolated, status_mb
from diffusia.models import heap
from diffusia.prompts import load_prompts, take
from diffusia.quant import cpu
from diffusia.quant.pipeline import quantize_pipeline
from diffusia.quant.serialization import save_quantized_pipeline

log = logging.getLogger("generation_memory")
from _results import results_dir, write_results  # noqa: E402  (benchmarks/ is on sys.path when run)

RESULTS = results_dir()
# name -> (preset, extra rules); the last shows what the default policy's FP16 time_emb_proj layers cost in bytes
VARIANTS = {
    "fp32": ("fp32", ()),
    "w8a8": ("w8a8", ()),
    "w8": ("w8", ()),
    "w8a8-temb-int8": ("w8a8", ("*time_emb_proj=w8",)),
}
TARGET_RSS_RATIO = 0.55


def folder_mb(path: Path, sub: str = "") -> float:
    root = path / sub if sub else path
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20


def materialise(model: str, variant: str, work: Path, calib_steps: int, calib_size: int) -> Path:
    out = work / variant
    if (out / "model_index.json").is_file():
        log.info("%s: reusing %s", variant, out)
        return out
    pipe = load_pipeline(model, progress=False)
    if variant == "fp32":
        pipe.save_pretrained(out, safe_serialization=True)
        return out
    preset, rules = VARIANTS[variant]
    recipe = get_preset(preset)
    recipe = recipe.replace(rules=[*recipe.rules, *(r.split("=") for r in rules)])
    prompts = take(load_prompts("calibration", model), calib_size)
    quantize_pipeline(pipe, recipe, prompts, calib_size=calib_size, steps=calib_steps, progress=False, validate=False)
    save_quantized_pipeline(pipe, out, base_model=model)
    return out


def time_release() -> dict:
    """One release of the freed heap in this process, which built the variants: its time and the RSS it returned."""
    before, t0 = status_mb("VmRSS"), time.perf_counter()
    ran = heap.release_free_memory()
    return {"ran": ran, "seconds": time.perf_counter() - t0, "rss_returned_mb": before - status_mb("VmRSS")}


def measure(model: str, work: Path, steps: int, threads: int, calib_steps: int, calib_size: int) -> dict:
    prompt = load_prompts("eval", model)[0]
    rows = {}
    for variant in VARIANTS:
        t0 = time.perf_counter()
        folder = materialise(model, variant, work, calib_steps, calib_size)
        build_s = time.perf_counter() - t0
        task = {
            "name": variant,
            "folder": str(folder),
            "steps": steps,
            "guidance": 7.5,
            "seed": 42,
            "threads": threads,
            "runs": 0,
            "images_dir": str(work / f"{variant}-images"),
            "jobs": [{"index": 0, "prompt": prompt.text, "category": prompt.category, "seed": 42}],
        }
        res = run_isolated(task, workdir=work / "tasks")
        with mock.patch.dict(os.environ, {heap.ENV: "0"}):  # the same generation, the freed heap kept
            kept = run_isolated({**task, "name": f"{variant}-kept"}, workdir=work / "tasks")
        rows[variant] = {
            "peak_rss_mb": res["memory"]["peak_mb"],
            "peak_rss_heap_kept_mb": kept["memory"]["peak_mb"],
            "peak_after_load_mb": res["memory"]["peak_load_mb"],
            "unet_mb": folder_mb(folder, "unet"),
            "pipeline_mb": folder_mb(folder),
            "image_shape": res["images"]["shape"],
            "build_seconds": build_s,
            "hwm_reset": res["memory"]["peak_reset_after_imports"],
        }
        log.info("%s: %s", variant, rows[variant])
    base = rows["fp32"]
    for r in rows.values():
        r["peak_rss_vs_fp32"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        r["peak_rss_heap_kept_vs_fp32"] = r["peak_rss_heap_kept_mb"] / base["peak_rss_heap_kept_mb"]
        r["unet_bytes_vs_fp32"] = r["unet_mb"] / base["unet_mb"]
    return rows


def to_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# Generation memory: {res['model']}{' (random weights)' if res['model'] == 'sd15-arch' else ''}",
        "",
        f"One image at {res['rows']['fp32']['image_shape'][0]}x{res['rows']['fp32']['image_shape'][1]} px, "
        f"{res['steps']} DPM-Solver steps, batch 1 with guidance, each variant loaded and run in a fresh process; "
        f"peak RSS growth over the baseline after imports (loading included), with diffusia returning the freed "
        f"heap to the OS before the VAE decode (`diffusia.models.heap`, the default) and without "
        f"({heap.ENV}=0: heap kept). W8A8 calibrated on "
        f"{res['calib_size']} prompt(s) x {res['calib_steps']} sampler steps (memory only, not quality).",
        "",
        f"Machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, {m['date']}.",
        "",
        "| variant | peak RSS MB | vs FP32 | heap kept: peak RSS MB | vs FP32 | peak after load MB | U-Net MB on disk "
        "| vs FP32 | pipeline MB on disk |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        lines.append(
            f"| {name} | {r['peak_rss_mb']:.0f} | {r['peak_rss_vs_fp32']:.1%} | {r['peak_rss_heap_kept_mb']:.0f} | "
            f"{r['peak_rss_heap_kept_vs_fp32']:.1%} | {r['peak_after_load_mb']:.0f} | "
            f"{r['unet_mb']:.1f} | {r['unet_bytes_vs_fp32']:.1%} | {r['pipeline_mb']:.1f} |"
        )
    lines += [
        "",
        "w8a8-temb-int8 = w8a8 with the rule `*time_emb_proj=w8`: the resnets' time-embedding projections, "
        "which the default policy keeps in high precision (FP16 storage), as weight-only INT8.",
        "",
        f"The release's own cost, once in this benchmark's process after building the variants: "
        f"{res['release']['seconds'] * 1e3:.1f} ms, {res['release']['rss_returned_mb']:.0f} MB returned.",
        "",
        f"Target: peak RSS of an INT8 generation <= {TARGET_RSS_RATIO:.0%} of FP32's; "
        "INT8 U-Net bytes <= 25.5 % of FP32.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15-arch")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--calib-steps", type=int, default=3)
    ap.add_argument("--calib-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for the variants (default: a temporary one, deleted)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    work = Path(args.work or f"/tmp/diffusia-genmem-{args.model}-{os.getpid()}")
    try:
        rows = measure(args.model, work, args.steps, args.threads, args.calib_steps, args.calib_size)
        release = time_release()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    res = {
        "model": args.model,
        "steps": args.steps,
        "calib_steps": args.calib_steps,
        "calib_size": args.calib_size,
        "rows": rows,
        "release": release,
        "machine": {
            "cpu": cpu.cpu_model(),
            "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    }
    stem = Path(args.out) / f"generation_memory_{args.model}"
    write_results(stem, res, to_markdown(res))


if __name__ == "__main__":
    main()
