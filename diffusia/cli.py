"""The `diffusia` command line: thin commands over the Python API. Errors print one line and exit 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from diffusia.errors import DiffusiaError
from diffusia.fileio import OVERWRITE_HELP

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantize Stable-Diffusion-class U-Nets for edge hardware, and measure what it buys.")



@app.callback()
def root() -> None:
    """diffusia: quantize, evaluate and analyse Stable-Diffusion-class pipelines."""


MODEL_HELP = "`tiny` (embedded), `sd15-arch` (random weights), a pipeline folder, a diffusia folder or a hub id."
RUNTIME_HELP = ("Where the U-Net runs: torch (diffusia's kernels in PyTorch), openvino, onnxruntime, or auto (the "
                "runtime measured fastest on this CPU class). A folder saved for it loads its graph; otherwise the "
                "U-Net is exported and checked first.")


@app.command()
def generate(
    prompt: str = typer.Option(..., help="Text prompt."),
    out: Path = typer.Option(Path("out.png"), help="Output PNG; with --num-images N, files <stem>-<i>.png."),
    model: str = typer.Option("tiny", help=MODEL_HELP),
    num_images: int = typer.Option(1, help="Images for the prompt; image i uses seed + i."),
    steps: int = typer.Option(25, help="DPM-Solver multistep steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(42),
    device: str = typer.Option("cpu"),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: the model's)."),
    attention_slicing: bool = typer.Option(False, help="Compute attention in slices (less peak memory)."),
    xformers: bool = typer.Option(False, help="xformers memory-efficient attention (needs xformers)."),
    vae_slicing: bool = typer.Option(False, help="Decode a batch one image at a time."),
    vae_tiling: bool = typer.Option(False, help="Decode large images in tiles."),
    cpu_offload: bool = typer.Option(False, help="CUDA only: keep idle models on the CPU."),
    low_cpu_mem: bool = typer.Option(True, help="Low-CPU-memory loading (no random init before weights)."),
    runtime: str = typer.Option("torch", help=RUNTIME_HELP),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
):
    """Generate images with the reference study's defaults (DPM-Solver, 25 steps, guidance 7.5, seed 42)."""
    from PIL.PngImagePlugin import PngInfo

    from diffusia import load_pipeline
    from diffusia.fileio import PNG_SOFTWARE, atomic_path, check_output_file
    from diffusia.generate import GenerationConfig, MemoryOptions, generate as run

    if out.suffix.lower() != ".png":
        raise DiffusiaError(f"--out {out} must end in .png")
    if not prompt.strip():
        raise DiffusiaError("empty prompt: pass a non-empty --prompt")
    paths = [out] if num_images == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(num_images)]
    for path in paths:
        check_output_file(path, "png", overwrite, [model])
    pipe = load_pipeline(model, device=device, dtype=dtype, low_cpu_mem_usage=low_cpu_mem, runtime=runtime)
    memory = MemoryOptions(attention_slicing, xformers, vae_slicing, vae_tiling, cpu_offload)
    images = run(pipe, prompt, num_images, GenerationConfig(steps=steps, guidance=guidance, seed=seed, memory=memory))
    info = PngInfo()
    info.add_text("Software", PNG_SOFTWARE)  # how --overwrite recognises an image diffusia generated
    for image, path in zip(images, paths):
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", pnginfo=info)
        typer.echo(str(path))


def resolve_recipe(recipe: str, timestep_groups: int | None = None, rules: list[str] | None = None):
    """A preset name or a recipe JSON file, with optional overrides."""
    from diffusia.config import PRESETS, Recipe, Rule, get_preset

    path = Path(recipe)
    if recipe in PRESETS:
        r = get_preset(recipe)
    elif path.suffix == ".json" and path.is_file():
        r = Recipe.from_json(path.read_text())
    else:
        raise DiffusiaError(f"unknown recipe {recipe!r}: use a preset ({', '.join(PRESETS)}) or a recipe .json file")
    changes = {}
    if timestep_groups is not None:
        changes["timestep_groups"] = timestep_groups
    if rules:
        parsed = []
        for text in rules:
            pattern, sep, precision = text.rpartition("=")
            if not sep:
                raise DiffusiaError(f"--rule {text!r} must look like PATTERN=PRECISION, e.g. '*attn2*=fp16'")
            parsed.append(Rule(pattern, precision))
        changes["rules"] = list(r.rules) + parsed
    return r.replace(**changes) if changes else r


@app.command()
def quantize(
    out: Path = typer.Option(..., help="Output folder (written atomically)."),
    model: str = typer.Option("tiny", help=MODEL_HELP),
    recipe: str = typer.Option("w8a8", help="Preset (fp32, fp16, bf16, w8a8, w8a8x2, w8, w4, mixed) or a recipe "
                               ".json."),
    calib_prompts: str = typer.Option("calibration", help="Prompt set name or file for calibration."),
    calib_size: int = typer.Option(100, help="Calibration prompts (the set is cycled if smaller)."),
    calib_steps: int = typer.Option(25, help="Sampler steps per calibration prompt."),
    calib_batch: int = typer.Option(4, help="Calibration prompts per pipeline call (fewer, larger U-Net calls; "
                                    "lower it if memory is short)."),
    timestep_groups: Optional[int] = typer.Option(None, help="Separate activation ranges per K timestep groups."),
    rule: Optional[list[str]] = typer.Option(None, help="Per-layer override PATTERN=PRECISION (glob or re:regex)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    target: Optional[str] = typer.Option(None, help="CPU class the INT8 layout is for: auto (this host), portable "
                                         "(correct on every x86 CPU), avx2 (no VNNI) or vnni. Default: the recipe's."),
    device: str = typer.Option("cpu"),
    runtime: Optional[str] = typer.Option(None, help="Also save the U-Net exported and checked for these runtimes "
                                          "(comma-separated: openvino, onnxruntime, or auto = the fastest measured "
                                          "on this CPU class), in OUT/<runtime>/ for `--runtime` at load time."),
):
    """Quantize the U-Net (calibrated on sampling trajectories), validate it and save a loadable folder."""
    from diffusia import load_pipeline
    from diffusia.fileio import QUANTIZED, check_output_dir
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline

    from diffusia.runtime import resolve

    if not 1 <= calib_batch <= 64:
        raise DiffusiaError(f"--calib-batch {calib_batch} must be between 1 and 64, e.g. 4")
    r = resolve_recipe(recipe, timestep_groups, rule)
    if target is not None:
        r = r.replace(target=target)
    runtimes = tuple(dict.fromkeys(resolve(x.strip()) for x in (runtime or "").split(",") if x.strip()))
    runtimes = tuple(x for x in runtimes if x != "torch")
    prompts = load_prompts(calib_prompts, model=model)
    check_output_dir(out, QUANTIZED, overwrite, (model, recipe, calib_prompts))
    pipe = load_pipeline(model, device=device, progress=False)
    quantize_pipeline(pipe, r, prompts, calib_size=calib_size, steps=calib_steps, batch=calib_batch)
    save_quantized_pipeline(pipe, out, base_model=model, runtimes=runtimes)
    v = pipe.diffusia_validation or {}
    saved = "".join(f", {x} graph in {out / x}" for x in runtimes)
    typer.echo(f"{out}: recipe {r.name}, {v.get('quantized_layers', 0)} quantized layers, "
               f"validation forward peak {v.get('peak_memory_mb', '?')} MB{saved}")


@app.command()
def export(
    model: str = typer.Option(..., help="A quantized diffusia folder (from `diffusia quantize` or `diffusia qat`)."),
    out: Optional[Path] = typer.Option(None, help="Output: a .onnx file for --format onnx (default unet.onnx), a "
                                       "folder for openvino / onnxruntime (default unet-<format>)."),
    format: str = typer.Option("onnx", "--format", help="onnx: one QDQ .onnx (static shapes); openvino: OpenVINO IR; "
                               "onnxruntime: dynamic-shape QDQ graphs; the folders load with `--runtime`."),
    tolerance: float = typer.Option(0.05, help="Max relative L2 between the runtime's and diffusia's outputs (integer "
                                    "codes are compared exactly; outputs differ by the rounding ties they amplify)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
):
    """Export the quantized U-Net to ONNX (QDQ) or OpenVINO and check the runtime reproduces diffusia's output."""
    import math

    from diffusia import load_pipeline
    from diffusia.export.onnx import check_against_onnxruntime, export_unet
    from diffusia.fileio import EXPORT, atomic_path, check_output_dir, check_output_file
    from diffusia.runtime.artifact import EXPORTED, export_runtime, output_checkable, raise_on_failed_check

    if not (math.isfinite(tolerance) and tolerance > 0):
        raise DiffusiaError(f"--tolerance {tolerance} must be a positive number, e.g. 0.05")
    if format not in ("onnx", *EXPORTED):
        raise DiffusiaError(f"unknown --format {format!r}; valid: onnx, {', '.join(EXPORTED)}")
    if format != "onnx":
        out = out or Path(f"unet-{format}")
        check_output_dir(out, EXPORT, overwrite, [model])
        from diffusia.quant import api

        pipe = load_pipeline(model, progress=False)
        api.qmodules(pipe.unet) or _not_quantized(model)
        manifest = export_runtime(pipe.unet, format, out, tolerance=tolerance)
        check = manifest["check"]
        typer.echo(f"{out}: {format} {manifest['runtime_version'].split('-')[0]}, {len(manifest['files'])} graph(s), "
                   f"matches diffusia within {check['relative_l2_vs_diffusia']:.2%} relative L2; "
                   f"{check['quantizers']['quantizers']} activation quantizers identical but for "
                   f"{check['quantizers']['tie_differences']} rounding ties")
        return
    out = out or Path("unet.onnx")
    check_output_file(out, "onnx", overwrite, [model])
    pipe = load_pipeline(model, progress=False)
    with atomic_path(out) as tmp:  # the .onnx appears only if it passes the check
        path = export_unet(pipe.unet, tmp)
        check = check_against_onnxruntime(pipe.unet, path)
        raise_on_failed_check({**check, "output_checked": output_checkable(pipe.unet)}, "onnxruntime", tolerance)
    codes = check["codes"]
    typer.echo(f"{out}: ONNX Runtime {check['onnxruntime']} matches diffusia within "
               f"{check['relative_l2_vs_diffusia']:.2%} relative L2; integer codes identical in "
               f"{codes['identical_before_first_difference']} of {codes['layers']} W8A8 layers before the first "
               "rounding tie")


def _not_quantized(model: str):
    raise DiffusiaError(f"{model} has no quantized U-Net: export takes a folder from `diffusia quantize`")


# sensitivity, search, pareto, recommend (diffusia/analysis/commands.py)
from diffusia.analysis.commands import register as _register_analysis  # noqa: E402

_register_analysis(app)


@app.command("eval")
def eval_(
    model: str = typer.Option("tiny", help=MODEL_HELP),
    variants: str = typer.Option("fp32,fp16,w8a8", help="Comma-separated: fp32, fp16, bf16, a preset (w8a8, w8, w4, "
                                 "mixed, ...) or the path of a quantized diffusia folder."),
    prompts: str = typer.Option("eval", help="Prompt set: eval (the model's own), a shipped name or a .json/.txt file."),
    num: int = typer.Option(100, help="Images per variant (prompts cycled; repeats use the next seed)."),
    out: Path = typer.Option(Path("out/eval"), help="Output folder: results.json, report.md, grid.png, variants/, images/."),
    device: str = typer.Option("cpu"),
    runs: int = typer.Option(10, help="Timed images per variant for latency (after --warmup)."),
    warmup: int = typer.Option(1, help="Untimed warm-up images before the latency runs."),
    budget_mb: float = typer.Option(4096, help="Device memory budget for the % column of table II."),
    steps: int = typer.Option(25, help="DPM-Solver multistep steps."),
    guidance: float = typer.Option(7.5),
    seed: int = typer.Option(42),
    threads: Optional[int] = typer.Option(None, help="torch threads in each measurement process (default: torch's)."),
    calib_size: int = typer.Option(100, help="Calibration prompts for W8A8 presets."),
    processes: int = typer.Option(1, help="Processes for the evaluation images (accelerate; same images)."),
    quality: bool = typer.Option(True, help="Compare with the FP32 images (needs fp32 in --variants)."),
    progress: bool = typer.Option(True),
    runtime: str = typer.Option("torch", help=RUNTIME_HELP + " Whole-pipeline fp16/bf16 variants run on torch."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
):
    """Measure size, peak memory, latency and quality of U-Net variants; writes results.json and report.md."""
    from diffusia.eval.harness import evaluate
    from diffusia.fileio import output_dir
    from diffusia.runtime import resolve

    runtime = resolve(runtime, device)

    with output_dir(out, "eval", overwrite, (model, prompts, *variants.split(","))):
        res = evaluate(model, variants, prompts=prompts, num=num, out=out, device=device, runs=runs, warmup=warmup,
                       budget_mb=budget_mb, steps=steps, guidance=guidance, seed=seed, threads=threads,
                       calib_size=calib_size, processes=processes, quality=quality, progress=progress,
                       runtime=runtime)
    typer.echo(str(out / "report.md"))
    for name, v in res["variants"].items():
        lat = (v.get("latency") or {}).get("end_to_end", {})
        typer.echo(f"{name}: U-Net {v['size']['unet_mb']:.2f} MB, peak {v['memory']['peak_mb']:.0f} MB, "
                   f"{lat.get('mean') or float('nan'):.3f} s/image")


@app.command()
def qat(
    out: Path = typer.Option(..., help="Output folder: the INT8 pipeline, as `quantize` writes it (atomically)."),
    model: str = typer.Option("tiny", help=MODEL_HELP),
    recipe: str = typer.Option("w8a8", help="Preset or a recipe .json (as for `quantize`)."),
    data: Optional[str] = typer.Option(None, help="Noise-prediction loss on a data set: fashion-mnist."),
    distill: bool = typer.Option(False, help="Data-free distillation from the FP32 U-Net (the default)."),
    steps: int = typer.Option(100, help="Optimizer steps."),
    lr: float = typer.Option(1e-5, help="AdamW learning rate of the U-Net's float weights."),
    batch: int = typer.Option(16, help="Batch per process."),
    lsq: bool = typer.Option(True, help="Also learn the activation step sizes (LSQ; on by default: on tiny it halved LPIPS against PTQ where weights alone did not help)."),
    checkpoint_every: int = typer.Option(50, help="Checkpoint every K steps into OUT/checkpoints (0: never)."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in OUT/checkpoints."),
    calib_size: int = typer.Option(32, help="Calibration prompts (also the distillation trajectories)."),
    calib_prompts: str = typer.Option("calibration", help="Prompt set name or file."),
    calib_steps: int = typer.Option(25, help="Sampler steps per calibration prompt."),
    seed: int = typer.Option(0, help="Seed of the batch stream (batch k depends on seed and k only)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto; several processes/GPUs: `accelerate launch -m diffusia.qat.train`."),
    keep_checkpoints: bool = typer.Option(False, help="Keep the last checkpoint inside the finished folder."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
):
    """Quantization-aware training: PTQ start, fake-quant fine-tuning, then the same INT8 folder as `quantize`."""
    from diffusia.qat.train import QATConfig, run_qat

    if data is not None and distill:
        raise DiffusiaError("--data and --distill exclude each other: pick one loss")
    if data is not None and data != "fashion-mnist":
        raise DiffusiaError(f"unknown --data {data!r}: use fashion-mnist (or --distill)")
    cfg = QATConfig(out=str(out), model=model, recipe=recipe, source=data or "distill", steps=steps, lr=lr,
                    batch=batch, lsq=lsq, checkpoint_every=checkpoint_every, resume=resume, calib_size=calib_size,
                    calib_prompts=calib_prompts, calib_steps=calib_steps, seed=seed, device=device,
                    keep_checkpoints=keep_checkpoints, overwrite=overwrite)
    result = run_qat(cfg)
    if result is not None:
        typer.echo(f"{out}: QAT {cfg.source}, {len(result.losses)} steps, loss {result.losses[0]:.5f} -> "
                   f"{float(sum(result.losses[-20:]) / len(result.losses[-20:])):.5f} (mean of last 20), "
                   f"curve {out / 'loss_curve.png'}")


@app.command()
def study(
    model: str = typer.Option("tiny", help=MODEL_HELP),
    out: Path = typer.Option(Path("out/study"), help="Output folder: report.md, report.html and every sub-report."),
    num: int = typer.Option(32, help="Evaluation images per variant (the reference study used 100)."),
    runs: int = typer.Option(10, help="Timed end-to-end runs per variant after a warm-up."),
    qat_steps: int = typer.Option(150, help="QAT steps (data-free distillation)."),
    quick: bool = typer.Option(False, help="A smoke test: tiny numbers everywhere, meaningless results."),
    runtime: str = typer.Option("torch", help=RUNTIME_HELP),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
):
    """The whole study: sensitivity, searched mixed precision, QAT, evaluation of every variant, Pareto, advice."""
    import dataclasses

    from diffusia.fileio import output_dir
    from diffusia.runtime import resolve
    from diffusia.study import StudyConfig, run_study

    runtime = resolve(runtime)

    cfg = StudyConfig.quick_config(model, str(out)) if quick else StudyConfig(model=model, out=str(out), num=num,
                                                                               runs=runs, qat_steps=qat_steps)
    cfg = dataclasses.replace(cfg, runtime=runtime)
    with output_dir(out, "study", overwrite, (model,)):
        typer.echo(str(run_study(cfg)))


def main() -> None:
    try:
        app()
    except DiffusiaError as e:
        typer.echo(f"diffusia: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("diffusia: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
