"""`evaluate()`: materialise the variants, measure each alone in a fresh process (memory, latency, images),
compare their images with FP32, and write results.json, report.md and grid.png."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from diffusia.errors import DiffusiaError
from diffusia.eval.images import Job, load_images, make_jobs
from diffusia.eval.variants import (
    QUANTIZING,
    Variant,
    check_compatible,
    materialise,
    parse_variants,
    shared_observations,
    variant_size,
)

log = logging.getLogger(__name__)

GRID_COLUMNS = 8
REAL_SET = "Fashion-MNIST test"


def real_images(model: str, count: int) -> tuple[np.ndarray | None, str | None]:
    """(N,32,32,3) real test images in [0, 1] for the Frechet distance of model `tiny`, or (None, a note saying
    why the column is absent and how to add it)."""
    from diffusia.data.fashion_mnist import coloured_split

    if str(model) != "tiny":
        return None, None
    try:
        images = coloured_split("test", seed=0, limit=count)[0]  # (N,3,32,32) in [0,1]
    except DiffusiaError as e:
        return None, f"No Frechet distance to the real {REAL_SET} set (column absent): {e}."
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)), None


def _runtime_of(v: Variant, runtime: str) -> str:
    """Where variant `v`'s U-Net runs: whole-pipeline dtype variants stay in PyTorch."""
    return "torch" if v.dtype else runtime


def _placement(v: Variant, runtime: str, precision: str) -> dict[str, str]:
    """The runtime of variant `v`'s U-Net and the precision of its float layers there."""
    placed = _runtime_of(v, runtime)
    return {"runtime": placed, "runtime_precision": precision if placed == "openvino" else "f32"}


def runtime_label(v: dict[str, Any]) -> str:
    """A result's runtime, with OpenVINO's float-layer precision when it is not f32 and its dynamic quantization."""
    from diffusia.runtime import float_precision, is_dynamic

    precision = v.get("runtime_precision", "f32")
    how = [f"{float_precision(precision)} float layers"] if float_precision(precision) != "f32" else []
    how += ["weight-only inputs quantized dynamically"] if is_dynamic(precision) else []
    return v.get("runtime", "torch") + (f" ({', '.join(how)})" if how else "")


def _notes(res: dict[str, Any], specs: list[Variant], device: str) -> list[str]:
    notes = []
    by_runtime: dict[str, list[str]] = {}
    for name, v in res["variants"].items():
        by_runtime.setdefault(runtime_label(v), []).append(name)
    if set(by_runtime) != {"torch"}:
        notes.append(
            "U-Net runtime (latency, memory and images come from it): "
            + "; ".join(f"{rt}: {', '.join(names)}" for rt, names in by_runtime.items())
            + ". Text encoder, scheduler and VAE "
            "run in PyTorch."
        )
    at_load = [
        n
        for n, v in res["variants"].items()
        if v.get("runtime", "torch") != "torch" and "runtime_graph_mb" not in v["size"]
    ]
    if at_load:
        notes.append(
            f"{', '.join(at_load)}: no runtime graph saved in the folder, so the U-Net was exported (and checked) "
            "when loaded; its peak memory after load includes that export."
        )
    lat = {n: (v.get("latency") or {}).get("end_to_end", {}).get("median") for n, v in res["variants"].items()}
    for v in specs:
        if v.kind not in ("dtype", "storage") or not device.startswith("cpu"):
            continue
        ratio = (lat.get(v.name) or math.nan) / (lat.get("fp32") or math.nan)
        slower = f" ({ratio:.2f}x the FP32 latency here)" if math.isfinite(ratio) else ""
        if v.kind == "dtype":
            notes.append(
                f"{v.name}: this CPU has native {v.value} instructions; latency{slower} is that of PyTorch's "
                "CPU kernels for this dtype."
            )
        else:
            notes.append(
                f"{v.name} is a storage format on this CPU: it has no native {v.value.upper()} arithmetic, so "
                f"the U-Net's weights are stored in {v.value.upper()} and computed in FP32; its latency"
                f"{slower} includes the upcast and does not represent a device with {v.value.upper()} units, "
                "its size and quality numbers stand."
            )
    q = res.get("quality") or {}
    if q.get("fd_name") and q["fd_name"] != "FID":
        notes.append(
            f"{q['fd_name']} is the Frechet distance on ImageNet EfficientNet-Lite0 features (the FID "
            "Inception weights are not installed); it is not comparable with published FID values."
        )
    if q.get("fd_name") and q.get("images", 0) < 2000:
        notes.append(
            f"Frechet distances from {q['images']} images are biased upwards; compare them only between "
            "variants of this run."
        )
    notes.extend(q.get("notes", []))
    mems = [v.get("memory", {}) for v in res["variants"].values()]
    if any(m.get("peak_reset_after_imports") is False for m in mems):
        notes.append("The kernel refused to reset VmHWM after imports: peaks may include the import transient.")
    if any(m.get("libraries_resident") is False for m in mems):
        notes.append(
            "The libraries could not be made resident before the baseline (Linux < 5.14): peaks include the "
            "library code each run faulted in, which depends on what the page cache held."
        )
    load = res["machine"].get("loadavg")
    if load and res["machine"].get("cpu_cores") and load[0] > res["machine"]["cpu_cores"]:
        notes.append(
            f"The machine was shared (load average {load[0]} on {res['machine']['cpu_cores']} cores when "
            "the report was written): latencies are upper bounds."
        )
    return notes


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide diffusers' and transformers' per-component loading bars (the harness has its own)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    d_on, t_on = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            dlog.enable_progress_bar()
        if t_on:
            tlog.enable_progress_bar()


def evaluate(
    model: str,
    variants: str | list[str] = "fp32,fp16,w8a8",
    prompts: str = "eval",
    num: int = 100,
    out: str | Path = "out/eval",
    device: str = "cpu",
    runs: int = 10,
    warmup: int = 1,
    budget_mb: float = 4096,
    steps: int = 25,
    guidance: float = 7.5,
    seed: int = 42,
    threads: int | None = None,
    height: int | None = None,
    width: int | None = None,
    calib_size: int = 100,
    processes: int = 1,
    quality: bool = True,
    feature_net: Any = "auto",
    real_num: int | None = None,
    progress: bool = True,
    timeout: float | None = None,
    runtime: str | None = "torch",
    observations=None,
    runtime_precision: str = "f32",
) -> dict[str, Any]:
    """Evaluate `variants` of `model` on `num` images and write results.json, report.md and grid.png to `out`.

    Every variant is first written as a folder under out/variants/ (so its size is real bytes), then measured
    in its own fresh process: peak memory and the `num` evaluation images (spread over `processes` processes with
    accelerate when > 1). Latency (`warmup` + `runs` images each) is measured afterwards in one fresh process
    holding every variant, in interleaved rounds, so that a load spike on a shared machine cannot favour one
    variant. Quality compares each variant's images with the FP32 images of the same prompt and seed. `runtime`
    (`diffusia.runtime`: torch, openvino, onnxruntime or auto) is where the U-Nets run, OpenVINO's float layers in
    `runtime_precision`; the whole-pipeline fp16/bf16 variants always run on torch. Presets that calibrate with the
    same settings share one sampling pass of the calibration prompts (`observations`: recorded here unless given).
    Returns the results dict.
    """
    import torch
    from tqdm.auto import tqdm

    from diffusia import load_pipeline
    from diffusia import runtime as runtimes
    from diffusia.eval import generate_shards, report
    from diffusia.eval.memory import run_isolated
    from diffusia.eval.quality import evaluate_quality
    from diffusia.fileio import atomic_dir
    from diffusia.prompts import load_prompts

    out = Path(out)
    specs = parse_variants(variants, device)
    if quality and not any(v.kind == "fp32" for v in specs):
        raise DiffusiaError(
            "quality is measured against the FP32 images: add fp32 to --variants (or pass --no-quality)"
        )
    for name, value, low in (
        ("--runs", runs, 1),
        ("--processes", processes, 1),
        ("--warmup", warmup, 0),
        ("--steps", steps, 1),
    ):
        if value < low:
            raise DiffusiaError(f"{name} must be >= {low}, got {value}")
    if budget_mb <= 0:
        raise DiffusiaError(f"--budget-mb must be > 0, got {budget_mb}")
    runtime = runtimes.resolve(runtime, device)
    runtimes.check_precision(runtime, runtime_precision)
    prompt_set = load_prompts(prompts, model)
    jobs: list[Job] = make_jobs(prompt_set, num, seed)
    threads = threads or torch.get_num_threads()
    with quiet_loading():
        base = load_pipeline(model, progress=False)
    base_unet, label = dict(base.unet.config), getattr(base, "diffusia_spec", str(model))
    for v in specs:
        if v.kind == "folder":
            check_compatible(v.value, base_unet, str(model))
    calib = load_prompts("calibration", model) if any(v.kind in QUANTIZING for v in specs) else None
    if observations is None and calib:
        observations = shared_observations(base, specs, calib, calib_size, steps, guidance)
    del base

    order = sorted(specs, key=lambda v: v.kind != "fp32")  # fp32 first: sizes are relative to it
    total = 2 * len(specs) + int(quality) + 2
    bar = tqdm(total=total, desc="evaluate", unit="step", disable=not progress)
    t_start = time.perf_counter()
    folders: dict[str, Path] = {}
    for v in order:
        bar.set_postfix_str(f"prepare {v.name}")
        with quiet_loading():
            folders[v.name] = materialise(
                v,
                model,
                out / "variants",
                calib,
                calib_size,
                progress=False,
                steps=steps,
                guidance=guidance,
                runtime=_runtime_of(v, runtime),
                observations=observations,
            )
        bar.update()

    work = out / "work"
    results_v: dict[str, dict[str, Any]] = {}
    fp32_size = None
    common = {
        "device": device,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "height": height,
        "width": width,
        "threads": threads,
        "jobs": [j.to_dict() for j in jobs],
    }
    for v in order:
        bar.set_postfix_str(f"measure {v.name}")
        images_dir = out / "images" / v.name
        task = {
            **common,
            "name": v.name,
            "folder": str(folders[v.name]),
            "dtype": v.dtype,
            "runs": 0,
            **_placement(v, runtime, runtime_precision),
            "images_dir": str(images_dir) if processes == 1 else None,
        }
        m = run_isolated(task, timeout=timeout, workdir=work)
        if processes > 1:
            with atomic_dir(images_dir) as tmp:
                generate_shards.launch({**task, "runs": 0, "images_dir": str(tmp)}, processes, work, timeout)
        size = variant_size(folders[v.name], fp32_size, _runtime_of(v, runtime))
        if v.kind == "fp32":
            fp32_size = size
        mem = m["memory"]
        mem["percent_of_budget"] = 100.0 * mem["peak_mb"] / budget_mb
        results_v[v.name] = {
            "kind": v.kind,
            "description": v.describe(),
            "folder": str(folders[v.name]),
            "dtype": v.dtype or m.get("unet_dtype"),
            "unet_dtype": m.get("unet_dtype"),
            "load_seconds": m.get("load_seconds"),
            "size": size,
            "memory": mem,
            "runtime": m.get("runtime", "torch"),
            "runtime_precision": m.get("runtime_precision", "f32"),
            "latency": None,
        }
        bar.update()
    if runs:
        bar.set_postfix_str("latency (interleaved)")
        timed = run_isolated(
            {
                **common,
                "name": "latency",
                "runs": runs,
                "warmup": warmup,
                "variants": [
                    {
                        "name": v.name,
                        "folder": str(folders[v.name]),
                        "dtype": v.dtype,
                        **_placement(v, runtime, runtime_precision),
                    }
                    for v in order
                ],
            },
            timeout=timeout,
            workdir=work,
        )
        for name, lat in timed["latency"].items():
            results_v[name]["latency"] = lat
        bar.update()
    results_v = {v.name: results_v[v.name] for v in specs}  # the user's order

    images = {v.name: load_images(out / "images" / v.name, len(jobs)) for v in specs}
    quality_res, real_missing = None, None
    if quality:
        bar.set_postfix_str("quality")
        real = None
        if feature_net is not None:
            real, real_missing = real_images(model, real_num or len(jobs))
            if real_missing:
                log.warning("%s", real_missing)
        quality_res = evaluate_quality(
            images, [j.category for j in jobs], reference="fp32", real=real, feature_net=feature_net
        )
        bar.update()

    columns = list({j.prompt: j.index for j in jobs if j.seed == seed}.values())[:GRID_COLUMNS]
    grid = report.save_grid(
        {n: imgs[columns] for n, imgs in images.items()}, [jobs[i].prompt for i in columns], out / "grid.png"
    )
    res: dict[str, Any] = {
        "diffusia_version": report.package_versions()["diffusia"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "model": str(model),
            "model_label": label,
            "variants": [v.name for v in specs],
            "prompts": str(prompts),
            "num": len(jobs),
            "seed": seed,
            "seed_range": [jobs[0].seed, jobs[-1].seed],
            "steps": steps,
            "guidance": guidance,
            "scheduler": "DPMSolverMultistepScheduler",
            "batch_size": 1,
            "device": device,
            "runs": runs,
            "warmup": warmup,
            "threads": threads,
            "budget_mb": budget_mb,
            "processes": processes,
            "runtime": runtime,
            "runtime_precision": runtime_precision,
            "calib_size": calib_size if calib else None,
            "height": height,
            "width": width,
        },
        "machine": report.machine_info(),
        "packages": report.package_versions(),
        "prompt_set": [{"prompt": p.text, "category": p.category} for p in prompt_set],
        "jobs": [j.to_dict() for j in jobs],
        "variants": results_v,
        "quality": quality_res,
        "real_set": REAL_SET,
        "grid": grid.name,
        "seconds": None,
    }
    res["machine"]["torch_threads"] = threads
    res["notes"] = _notes(res, specs, device) + ([real_missing] if real_missing else [])
    res["seconds"] = time.perf_counter() - t_start
    report.write_report(res, out)
    shutil.rmtree(work, ignore_errors=True)
    bar.update()
    bar.close()
    return report.json_safe(res)
