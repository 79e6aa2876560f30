"""`diffusia eval` and `diffusia study`: measurements of U-Net variants, and the whole study."""

from __future__ import annotations

from pathlib import Path

import typer

from diffusia.cli import options as o


def eval_(
    model: str = o.model(),
    variants: str = typer.Option(
        "fp32,fp16,w8a8",
        help="Comma-separated: fp32, fp16, bf16, a preset (w8a8, w8, w4, "
        "mixed, ...), a recipe .json file or the path of a quantized diffusia folder.",
    ),
    prompts: str = typer.Option(
        "eval", help="Prompt set: eval (the model's own), a shipped name or a .json/.txt file."
    ),
    num: int = o.integer(100, 1, 100_000, "Images per variant (prompts cycled; repeats use the next seed)."),
    out: Path = typer.Option(
        Path("out/eval"), help="Output folder: results.json, report.md, grid.png, variants/, images/."
    ),
    device: str = o.device(),
    runs: int = o.integer(10, 1, 10_000, "Timed images per variant for latency (after --warmup)."),
    warmup: int = o.integer(1, 0, 1000, "Untimed warm-up images before the latency runs."),
    budget_mb: float = o.positive(4096, "Device memory budget for the % column of table II."),
    steps: int = o.steps(),
    guidance: float = o.guidance(),
    seed: int = o.seed(42),
    threads: int | None = o.integer(
        None, 1, 1024, "torch threads in each measurement process (default: torch's).", example=4
    ),
    calib_size: int = o.calib_size(100, "Calibration prompts for W8A8 presets."),
    processes: int = o.integer(1, 1, 64, "Processes for the evaluation images (accelerate; same images)."),
    quality: bool = typer.Option(True, help="Compare with the FP32 images (needs fp32 in --variants)."),
    progress: bool = typer.Option(True),
    runtime: str = o.runtime(help=o.RUNTIME_HELP + " Whole-pipeline fp16/bf16 variants run on torch."),
    runtime_precision: str = o.runtime_precision(),
    activations: str | None = o.activations("the activations of every W8A8 preset in --variants"),
    attention: str | None = o.attention(
        " Applies to the W8A8 presets in --variants whose plan has W8A8 attention projections (mixed keeps them in "
        "fp16). A preset changed by these options becomes a recipe file, labelled e.g. w8a8-int8-attn8."
    ),
    overwrite: bool = o.overwrite(),
):
    """Measure size, peak memory, latency and quality of U-Net variants; writes results.json and report.md."""
    from diffusia.eval.harness import evaluate
    from diffusia.eval.variants import with_option_recipes
    from diffusia.fileio import output_dir
    from diffusia.runtime import check_precision, resolve

    runtime = resolve(runtime, device)
    check_precision(runtime, runtime_precision)

    items = [v.strip() for v in variants.split(",") if v.strip()]
    with output_dir(out, "eval", overwrite, (model, prompts, *items)):
        items = with_option_recipes(items, activations or "auto", attention or "float", model, out / "recipes")
        res = evaluate(
            model,
            items,
            prompts=prompts,
            num=num,
            out=out,
            device=device,
            runs=runs,
            warmup=warmup,
            budget_mb=budget_mb,
            steps=steps,
            guidance=guidance,
            seed=seed,
            threads=threads,
            calib_size=calib_size,
            processes=processes,
            quality=quality,
            progress=progress,
            runtime=runtime,
            runtime_precision=runtime_precision,
        )
    typer.echo(str(out / "report.md"))
    for name, v in res["variants"].items():
        lat = (v.get("latency") or {}).get("end_to_end", {})
        typer.echo(
            f"{name}: U-Net {v['size']['unet_mb']:.2f} MB, peak {v['memory']['peak_mb']:.0f} MB, "
            f"{lat.get('mean') or float('nan'):.3f} s/image"
        )


def study(
    model: str = o.model(),
    out: Path = typer.Option(Path("out/study"), help="Output folder: report.md, report.html and every sub-report."),
    num: int = o.integer(32, 1, 100_000, "Evaluation images per variant (the reference study used 100)."),
    runs: int = o.integer(10, 1, 10_000, "Timed end-to-end runs per variant after a warm-up."),
    qat_steps: int = o.integer(150, 1, 1_000_000, "QAT steps (data-free distillation)."),
    quick: bool = typer.Option(False, help="A smoke test: tiny numbers everywhere, meaningless results."),
    runtime: str = o.runtime(),
    runtime_precision: str = o.runtime_precision(),
    activations: str | None = o.activations("the activations of every W8A8 variant (w8a8, mixed, searched, QAT)"),
    attention: str | None = o.attention(
        " Applies to the W8A8 variants with W8A8 attention projections: w8a8, w8a8x2, QAT, the searched plan where it "
        "has them (mixed keeps them in fp16)."
    ),
    overwrite: bool = o.overwrite(),
):
    """The whole study: sensitivity, searched mixed precision, QAT, evaluation of every variant, Pareto, advice."""
    import dataclasses

    from diffusia.fileio import output_dir
    from diffusia.runtime import check_precision, resolve
    from diffusia.study import StudyConfig, run_study

    runtime = resolve(runtime)
    check_precision(runtime, runtime_precision)

    cfg = (
        StudyConfig.quick_config(model, str(out))
        if quick
        else StudyConfig(model=model, out=str(out), num=num, runs=runs, qat_steps=qat_steps)
    )
    cfg = dataclasses.replace(
        cfg,
        runtime=runtime,
        runtime_precision=runtime_precision,
        activations=activations or "auto",
        attention=attention or "float",
    )
    with output_dir(out, "study", overwrite, (model,)):
        typer.echo(str(run_study(cfg)))


COMMANDS = {"eval": eval_, "study": study}
