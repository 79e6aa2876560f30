"""A whole generation per runtime: end-to-end latency of one image (text encoder, 25 DPM-Solver steps with guidance,
VAE decode) and the peak RSS, for FP32 eager, OpenVINO FP32, NNCF INT8 on OpenVINO and diffusia's quantized U-Net
on each runtime (torch, openvino, onnxruntime), inside the same diffusers pipeline.

    python benchmarks/generation_runtimes.py                      # sd15-arch at 512x512 (64x64 latent)
    python benchmarks/generation_runtimes.py --model tiny --runs 3
    python benchmarks/generation_runtimes.py --only diffusia_openvino,diffusia_openvino_heap_kept
    python benchmarks/generation_runtimes.py --preset w8a8 --calibrator mse --activations balanced --attention int8 \
        --only nncf_int8_openvino,nncf_int8_openvino_bf16,diffusia_openvino,diffusia_openvino_bf16
Writes benchmarks/results/<class>/generation_runtimes_<model>.{json,md}.

Protocol. Build phase (untimed, one process): the FP32 pipeline folder; diffusia's preset (`--preset`, calibrated
on `--calib-size` prompts x `--calib-steps` sampler steps: sd15-arch has random weights, so only speed and memory
mean something there) saved with its OpenVINO and ONNX Runtime graphs, exported and checked by `diffusia.runtime`
as `diffusia quantize --runtime` does; the FP32 U-Net exported for OpenVINO; NNCF's INT8 U-Net
(`nncf.quantize(model_type=TRANSFORMER)`, the fastest NNCF recipe of `backends.py`) calibrated on U-Net inputs
recorded along the same calibration trajectories. Measure phase: each row in a fresh process, one after another:
load the pipeline, put the row's U-Net in it, one warm-up generation of 2 steps (compiles the runtime's shapes),
then `--runs` timed generations of `--steps` steps; peak RSS = VmHWM growth over the post-import baseline (load
included). Text encoder and scheduler are PyTorch FP32 in every row; the VAE decoder runs on OpenVINO in the
OpenVINO rows (exported beside each U-Net, as `--runtime openvino` does: `diffusia.runtime.decoder`; results
before 2026-12-05 decoded on PyTorch in every row) and on PyTorch in the others. OpenVINO computes the float layers
(U-Net and decoder) in f32, or in bf16 in the `_bf16` rows (its `INFERENCE_PRECISION_HINT`, `--runtime-precision
bf16`; CPUs with AVX-512 BF16 or AMX). ONNX Runtime allocates as diffusia's sessions do (`DEFAULT_ARENA` of
`diffusia.export.onnx`), or with its own default arena in `diffusia_onnxruntime_arena_kept` (what diffusia's sessions
did in results before 2026-12-07); `diffusia_onnxruntime_whole_attention` runs a graph with float attention traced
whole (since 2026-12-07 diffusia's traces the attentions with more than `SCORES_AT_ONCE` scores per head:
`diffusia.export.head_slices`). Every row gives the heap freed by the denoising loop back to the OS before the VAE
decodes, as `load_pipeline` has it (`diffusia.models.heap`; results before 2026-12-08 did so in no row); the
`_heap_kept` rows repeat five rows without it (`DIFFUSIA_MALLOC_TRIM=0`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_class, results_dir, write_results  # noqa: E402
from _whole_attention import attention_traced_whole  # noqa: E402

log = logging.getLogger("generation_runtimes")
PROMPT = "a photo of a red sneaker on a white background"
# row -> (pipeline folder under --work, runtime, runtime folder under --work or None, OpenVINO's float precision)
ROWS = {
    "fp32_torch": ("fp32", "torch", None, "f32"),
    "fp32_openvino": ("fp32", "openvino", "fp32-openvino", "f32"),
    "fp32_openvino_bf16": ("fp32", "openvino", "fp32-openvino", "bf16"),
    "nncf_int8_openvino": ("fp32", "openvino", "nncf-openvino", "f32"),
    "nncf_int8_openvino_bf16": ("fp32", "openvino", "nncf-openvino", "bf16"),
    "diffusia_torch": ("diffusia", "torch", None, "f32"),
    "diffusia_openvino": ("diffusia", "openvino", "diffusia/openvino", "f32"),
    "diffusia_openvino_bf16": ("diffusia", "openvino", "diffusia/openvino", "bf16"),
    "diffusia_onnxruntime": ("diffusia", "onnxruntime", "diffusia/onnxruntime", "f32"),
    "diffusia_onnxruntime_arena_kept": ("diffusia", "onnxruntime", "diffusia/onnxruntime", "f32"),
    "diffusia_onnxruntime_whole_attention": ("diffusia", "onnxruntime", "diffusia-onnxruntime-whole", "f32"),
}
# rows whose ONNX Runtime sessions allocate otherwise than diffusia's (diffusia.export.onnx.ARENA)
ARENAS = {"diffusia_onnxruntime_arena_kept": "kept"}
# the same rows with the heap freed by the denoising loop kept (DIFFUSIA_MALLOC_TRIM=0, `diffusia.models.heap`)
HEAP_KEPT = "_heap_kept"
ROWS |= {
    f"{name}{HEAP_KEPT}": ROWS[name]
    for name in ("fp32_torch", "fp32_openvino", "diffusia_torch", "diffusia_openvino", "diffusia_onnxruntime")
}


# ---------------------------------------------------------------- build phase


def build(args: argparse.Namespace, work: Path, names: list[str]) -> dict[str, Any]:
    """The folders the rows `names` load (the FP32 OpenVINO graph and NNCF's model only when a row needs them)."""
    import torch

    from diffusia import load_pipeline
    from diffusia.calib.forward_loop import record_unet_inputs
    from diffusia.config import load_recipe
    from diffusia.prompts import load_prompts, take
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline
    from diffusia.runtime.artifact import export_runtime

    info: dict[str, Any] = {}
    prompts = take(load_prompts("calibration", args.model), args.calib_size)
    pipe = load_pipeline(args.model, progress=False)
    pipe.save_pretrained(work / "fp32", safe_serialization=True)
    needed = {ROWS[n][2] for n in names}
    if "fp32-openvino" in needed:
        t0 = time.perf_counter()
        export_runtime(pipe.unet, "openvino", work / "fp32-openvino", check=False, vae=pipe.vae)  # float: no check
        info["fp32_openvino_export_s"] = round(time.perf_counter() - t0, 1)
    if "nncf-openvino" in needed:
        t0 = time.perf_counter()
        calls = record_unet_inputs(pipe, prompts, steps=args.calib_steps, progress=False)
        _nncf_folder(pipe.unet, calls, work / "nncf-openvino", pipe.vae)
        info["nncf_build_s"] = round(time.perf_counter() - t0, 1)
        info["nncf_calibration_calls"] = len(calls)
        del calls
    t0 = time.perf_counter()
    recipe = load_recipe(args.preset)  # a preset name or a recipe .json (e.g. x2_layer_gain.py's plan)
    for option in ("calibrator", "activations", "attention"):
        if getattr(args, option) not in (None, "preset"):
            recipe = recipe.replace(**{option: getattr(args, option)})
    quantize_pipeline(
        pipe,
        recipe,
        prompts,
        calib_size=args.calib_size,
        steps=args.calib_steps,
        progress=False,
        validate=False,
    )
    info["diffusia_quantize_s"] = round(time.perf_counter() - t0, 1)
    info["diffusia_calibration_s_per_prompt"] = round(info["diffusia_quantize_s"] / len(prompts), 1)
    t0 = time.perf_counter()
    save_quantized_pipeline(pipe, work / "diffusia", base_model=args.model, runtimes=("openvino", "onnxruntime"))
    info["diffusia_save_and_export_s"] = round(time.perf_counter() - t0, 1)
    if "diffusia-onnxruntime-whole" in needed:
        with attention_traced_whole():
            export_runtime(pipe.unet, "onnxruntime", work / "diffusia-onnxruntime-whole")
    meta = json.loads((work / "diffusia" / "diffusia.json").read_text())
    info["diffusia_checks"] = {
        rt: {
            "relative_l2_vs_diffusia": v["check"]["relative_l2_vs_diffusia"],
            "tie_differences": (v["check"]["quantizers"] or {}).get("tie_differences"),
        }
        for rt, v in meta["runtimes"].items()
    }
    del pipe
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return info


def _nncf_folder(unet, calls: list, folder: Path, vae=None) -> None:
    """NNCF INT8 (model_type=TRANSFORMER) of the FP32 U-Net, written as a `diffusia.runtime` OpenVINO folder (with
    `vae`'s decoder beside it, as diffusia's folders have it)."""
    import nncf
    import openvino as ov

    from diffusia.export.onnx import export_unet, onnx_files
    from diffusia.runtime.artifact import FORMAT, MANIFEST, VERSION

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export_unet(unet, folder / "fp32.onnx", dynamic=True, float_ok=True)
    model = ov.convert_model(str(onnx_path))
    for f in onnx_files(onnx_path):
        f.unlink()
    feeds = [
        {"sample": s.numpy(), "timestep": torch_int64(t, s.shape[0]), "encoder_hidden_states": e.numpy()}
        for s, t, e, _ in calls  # recorded `UnetCall`s of an SD 1.x U-Net (no added conditioning)
    ]
    model = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), model_type=nncf.ModelType.TRANSFORMER)
    ov.save_model(model, str(folder / "unet-g0.xml"), compress_to_fp16=False)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "runtime": "openvino",
        "runtime_version": ov.__version__,
        "files": ["unet-g0.xml"],
        "timestep_groups": 1,
        "num_train_timesteps": 1000,
        "quantized": True,
        "made_by": "nncf.quantize(model_type=TRANSFORMER)",
    }
    if vae is not None:
        from diffusia.runtime.decoder import export_decoder

        manifest["vae_decoder"] = export_decoder(vae, folder)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def torch_int64(t, batch: int):
    import numpy as np

    return np.full((batch,), int(float(t.reshape(-1)[0])), dtype=np.int64)


# ---------------------------------------------------------------- measure phase (fresh process per row)


def worker(task_path: Path) -> None:
    task = json.loads(task_path.read_text())
    import torch

    torch.set_num_threads(task["threads"])
    import diffusers  # noqa: F401 - part of every row's baseline
    import onnxruntime  # noqa: F401
    import openvino  # noqa: F401

    from diffusia import load_pipeline, runtime
    from diffusia.eval.memory import PeakMemory
    from diffusia.generate import GenerationConfig, generate
    from diffusia.models.heap import enabled as heap_enabled
    from diffusia.models.heap import release_before_decode

    mem = PeakMemory()
    work, (folder, rt, rt_folder, precision) = Path(task["work"]), ROWS[task["name"]]
    t0 = time.perf_counter()
    if rt_folder is None:
        pipe = load_pipeline(work / folder, progress=False, runtime=rt, threads=task["threads"])
    else:
        from diffusers import StableDiffusionPipeline, UNet2DConditionModel
        from diffusers.configuration_utils import FrozenDict

        pipe = StableDiffusionPipeline.from_pretrained(
            work / folder, unet=None, safety_checker=None, requires_safety_checker=False
        )
        config = FrozenDict(UNet2DConditionModel.load_config(work / folder / "unet"))
        arena = {"arena": ARENAS[task["name"]]} if task["name"] in ARENAS else {}
        unet = runtime.load_unet(rt, work / rt_folder, config, threads=task["threads"], precision=precision, **arena)
        runtime.install(pipe, unet)
    release_before_decode(pipe)  # as `load_pipeline` has every pipeline do (off in the _heap_kept rows)
    load_s = time.perf_counter() - t0
    assert runtime.runtime_of(pipe) == rt
    generate(pipe, PROMPT, 1, GenerationConfig(steps=2), progress=False, output_type="np")  # warm-up / compile
    times = []
    for _ in range(task["runs"]):
        t0 = time.perf_counter()
        image = generate(pipe, PROMPT, 1, GenerationConfig(steps=task["steps"]), progress=False, output_type="np")
        times.append(time.perf_counter() - t0)
    result = {
        "name": task["name"],
        "runtime": rt,
        "float_precision": precision if rt == "openvino" else "f32",
        "vae_decoder": getattr(pipe.vae, "diffusia_decoder", "torch"),
        "load_s": round(load_s, 1),
        "times_s": [round(t, 2) for t in times],
        "median_s": statistics.median(times),
        "peak_rss_mb": round(mem.peak_mb(), 1),
        "heap_released": heap_enabled(),
        "image_shape": list(image.shape[1:]),
        "load_avg_end": os.getloadavg()[0],
    }
    import numpy as np

    np.save(Path(task["result"]).with_suffix(".npy"), image[0])
    Path(task["result"]).write_text(json.dumps(result, indent=2))


def measure(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    task_path, result_path = work / f"{name}.task.json", work / f"{name}.result.json"
    task_path.write_text(
        json.dumps(
            {
                "name": name,
                "work": str(work),
                "threads": args.threads,
                "runs": args.runs,
                "steps": args.steps,
                "result": str(result_path),
            }
        )
    )
    from diffusia.models import heap

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    env[heap.ENV] = "0" if name.endswith(HEAP_KEPT) else "1"
    with open(work / f"{name}.log", "w") as f:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", str(task_path)], env=env, stdout=f, stderr=subprocess.STDOUT
        )
    if not result_path.is_file():
        lines = (work / f"{name}.log").read_text(errors="replace").strip().splitlines()
        return {"name": name, "status": "failed", "reason": f"exit {proc.returncode}: {lines[-1] if lines else ''}"}
    return {**json.loads(result_path.read_text()), "status": "ok"}


def _heap_note(rows) -> list[str]:
    """Which rows kept the freed heap through the VAE decode (results before 2026-12-08 do not say: no line)."""
    kept = [r["name"] for r in rows if r.get("heap_released") is False]
    if not any("heap_released" in r for r in rows):
        return []
    return [
        "The heap freed by the denoising loop goes back to the OS before the VAE decodes (`diffusia.models.heap`) "
        f"in every row but {', '.join(kept) or 'none'} (`DIFFUSIA_MALLOC_TRIM=0`).",
        "",
    ]


def to_markdown(res: dict[str, Any]) -> str:
    m, b = res["machine"], res["build"]
    ok = {r["name"]: r for r in res["rows"] if r["status"] == "ok"}
    base = ok.get("fp32_torch")
    lines = [
        f"# A whole generation per runtime: {res['model']}{' (random weights)' if res['random'] else ''}",
        "",
        f"One image, {res['image']} px, {res['steps']} DPM-Solver steps, guidance 7.5, batch 1 (U-Net batch 2); "
        f"{res['runs']} timed generation(s) per row after a 2-step warm-up, each row in a fresh process. "
        f"Machine: {m['cpu']} (class `{m['class']}`), {m['threads']} threads, load average "
        f"{m['load_start']:.2f} at start; {m['date']}; {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.",
        "",
        f"diffusia {'recipe' if res['preset'].endswith('.json') else 'preset'} `{res['preset']}`"
        + (f" with the {res['calibrator']} calibrator" if res.get("calibrator", "preset") != "preset" else "")
        + "".join(f", `--{k} {res[k]}`" for k in ("activations", "attention") if res.get(k))
        + f", calibrated on {res['calib_size']} prompt(s) x "
        f"{res['calib_steps']} sampler steps ({b['diffusia_calibration_s_per_prompt']} s per prompt)"
        + (
            f"; NNCF calibrated on the {b['nncf_calibration_calls']} U-Net inputs of the same trajectories."
            if "nncf_calibration_calls" in b
            else "."
        ),
        "",
        *_heap_note(ok.values()),
        "| row | U-Net runtime | VAE decoder | float layers | s/image (median) | runs (s) | vs FP32 eager | peak RSS MB "
        "| vs FP32 eager | load s | image vs FP32 eager (mean abs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | | | | failed: {r['reason']} | | | | | | |")
            continue
        vs = f"{r['median_s'] / base['median_s']:.2f}" if base else "-"
        mem = f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else "-"
        diff = "-" if r.get("image_diff") is None else f"{r['image_diff']:.4f}"
        lines.append(
            f"| {r['name']} | {r['runtime']} | {r.get('vae_decoder', 'torch')} | {r.get('float_precision', 'f32')} | "
            f"{r['median_s']:.2f} | "
            f"{', '.join(f'{t:.2f}' for t in r['times_s'])} | {vs} | {r['peak_rss_mb']:,.0f} | {mem} | "
            f"{r['load_s']:.0f} | {diff} |"
        )
    lines += [
        "",
        "Build: "
        + "".join(
            f"{what} {b[key]} s; "
            for what, key in (("FP32 OpenVINO export", "fp32_openvino_export_s"), ("NNCF", "nncf_build_s"))
            if key in b
        )
        + f"diffusia quantize {b['diffusia_quantize_s']} s, save + export + check {b['diffusia_save_and_export_s']} s "
        f"(checks: {json.dumps(b['diffusia_checks'])}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="sd15-arch", choices=("sd15-arch", "tiny"))
    ap.add_argument("--preset", default="w8a8x2", help="diffusia's preset, or a recipe .json")
    ap.add_argument("--calibrator", default="preset", choices=("preset", "minmax", "percentile", "mse"))
    ap.add_argument("--activations", default=None, help="the recipe's activation range (default: the preset's)")
    ap.add_argument("--attention", default=None, help="float or int8 attention (default: the preset's)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--calib-size", type=int, default=2)
    ap.add_argument("--calib-steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma list of rows (fp32_torch always runs)")
    ap.add_argument("--work", type=Path, default=None, help="build folder (kept if given; default /tmp, deleted)")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.worker:
        worker(args.worker)
        return
    import numpy as np
    import torch

    from diffusia.quant import cpu
    from diffusia.versions import package_versions

    torch.set_num_threads(args.threads)
    names = [n for n in ROWS if not args.only or n == "fp32_torch" or n in args.only.split(",")]
    work = args.work or Path(f"/tmp/diffusia-genrt-{args.model}-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    try:
        info = (
            build(args, work, names)
            if not (work / "diffusia" / "diffusia.json").is_file()
            else json.loads((work / "build.json").read_text())
        )
        (work / "build.json").write_text(json.dumps(info))
        rows = []
        for name in names:
            log.info("%s ...", name)
            rows.append(measure(name, args, work))
            log.info("%s: %s", name, rows[-1].get("median_s", rows[-1].get("reason")))
        ref = work / "fp32_torch.result.npy"
        for r in rows:
            npy = work / f"{r['name']}.result.npy"
            r["image_diff"] = (
                float(np.abs(np.load(npy) - np.load(ref)).mean())
                if r["status"] == "ok" and ref.is_file() and npy.is_file()
                else None
            )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    latent = 64 if args.model == "sd15-arch" else 16
    res = {
        "model": args.model,
        "random": args.model == "sd15-arch",
        "preset": args.preset,
        "calibrator": args.calibrator,
        "activations": args.activations,
        "attention": args.attention,
        "steps": args.steps,
        "runs": args.runs,
        "calib_size": args.calib_size,
        "calib_steps": args.calib_steps,
        "image": f"{latent * 8}x{latent * 8}",
        "build": info,
        "rows": rows,
        "machine": {
            "cpu": cpu.cpu_model(),
            "class": machine_class(),
            "threads": args.threads,
            "load_start": load_start,
            "versions": package_versions(("torch", "openvino", "nncf", "onnxruntime", "diffusers")),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    }
    variant = (
        (f"_{Path(args.preset).stem}" if args.preset != "w8a8x2" else "")
        + (f"_{args.calibrator}" if args.calibrator != "preset" else "")
        + "".join(f"_{v}" for v in (args.activations, args.attention and f"attn-{args.attention}") if v)
    )
    stem = args.out / f"generation_runtimes_{args.model}{variant}"
    write_results(stem, res, to_markdown(res))


if __name__ == "__main__":
    main()
