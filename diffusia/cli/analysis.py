"""The analysis commands: `diffusia sensitivity`, `search`, `pareto` and `recommend`."""

from __future__ import annotations

from pathlib import Path

import typer

from diffusia.cli import options as o
from diffusia.errors import DiffusiaError
from diffusia.fileio import check_output_file, output_dir


def _methods() -> tuple[str, ...]:
    from diffusia.analysis.search import METHODS

    return METHODS


def _search_precisions() -> tuple[str, ...]:
    from diffusia.analysis.search import SEARCH_PRECISIONS

    return SEARCH_PRECISIONS


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def sensitivity(
    out: Path = typer.Option(..., help="Output folder: sensitivity.json, sensitivity.md, sensitivity_by_type.png."),
    model: str = o.model(help="`tiny`, `sd15-arch`, a pipeline folder or a hub id (float model)."),
    recipe: str = typer.Option("w8a8", help="Preset or recipe .json: which layers, at which precision."),
    calib_prompts: str = typer.Option("calibration", help="Prompt set name or file for calibration."),
    calib_size: int = o.calib_size(8, "Calibration prompts (trajectories recorded once)."),
    steps: int = o.calib_steps(),
    top: int = o.integer(5, 0, 10_000, "Image LPIPS vs FP32 for the K most sensitive layers (0: none)."),
    lpips_prompts: int = o.integer(2, 0, 1000, "Prompts (from the eval set) generated per top layer."),
    eval_timesteps: int = o.integer(8, 1, o.MAX_STEPS, "Recorded timesteps (evenly spaced) the SQNR is measured at."),
    eval_samples: int = o.integer(
        4,
        0,
        100_000,
        "Recorded inputs per timestep the SQNR is measured on, spread over prompts and guidance branches (0: all).",
    ),
    precisions: str = typer.Option(
        "w8a8,w8a8x2,w8,w4,fp16", help="Also simulate each layer alone at these precisions."
    ),
    timing: bool = typer.Option(True, help="Microbenchmark each layer's real kernels (search latency model)."),
    device: str = o.device(),
    overwrite: bool = o.overwrite(),
):
    """Per-layer sensitivity (SIMULATED fake quant): SQNR of the noise prediction with only / all but each layer
    quantized, LPIPS for the top layers, aggregated by layer type."""
    from diffusia import load_pipeline
    from diffusia.analysis.sensitivity import run_sensitivity
    from diffusia.analysis.sensitivity_report import write_sensitivity
    from diffusia.config import load_recipe
    from diffusia.prompts import load_prompts, take

    r = load_recipe(recipe)
    prompts = take(load_prompts(calib_prompts, model=model), calib_size)
    eval_texts = [p.text for p in load_prompts("eval", model=model)][: max(lpips_prompts, 0)]
    with output_dir(out, "sensitivity", overwrite, (model, recipe, calib_prompts)):
        pipe = load_pipeline(model, device=device, progress=False)
        sens = run_sensitivity(
            pipe,
            r,
            prompts,
            steps=steps,
            top=top,
            lpips_prompts=eval_texts or None,
            eval_timesteps=eval_timesteps,
            eval_samples=eval_samples or None,
            precisions=_csv(precisions),
            timing=timing,
        )
        write_sensitivity(sens, out)
    typer.echo(f"{out}: {len(sens['layers'])} layers, all quantized {sens['sqnr_all_db']:.2f} dB (SIMULATED)")
    typer.echo("most sensitive (SIMULATED SQNR, only this layer quantized):")
    for row in sens["layers"][: max(top, 5)]:
        lp = "" if row["lpips_only"] is None else f", LPIPS {row['lpips_only']:.4f}"
        typer.echo(f"  {row['rank']:>3}. {row['name']} [{row['type']}] {row['sqnr_only_db']:.2f} dB{lp}")


def search(
    sensitivity: Path = typer.Option(..., help="Folder (or sensitivity.json) from `diffusia sensitivity`."),
    out: Path = typer.Option(..., help="Recipe JSON to write (estimates go to <stem>.search.json)."),
    budget_mb: float | None = o.positive(None, "U-Net size limit in MB (MiB).", example=500),
    quality_floor: float | None = o.number(None, help="Minimum estimated SQNR (dB, simulated).", example=20),
    latency_s: float | None = o.positive(None, "Latency limit, s/image (per-layer cost model).", example=2),
    precisions: str | None = o.choice(
        None,
        _search_precisions,
        "Allowed per-layer precisions. Default: w8a8,w8,w4,fp16,keep, and w8a8x2 with --latency-s (the same bytes "
        "as w8a8, less noise, a second INT8 call), each where the sensitivity run simulated it.",
        sep=",",
    ),
    method: str = o.choice("auto", _methods, "auto (best of both), milp or greedy."),
    overwrite: bool = o.overwrite(),
):
    """Choose per-layer precisions under a size / quality / latency target; writes a recipe for `quantize`."""
    from diffusia.analysis.search import check_recipe_names
    from diffusia.analysis.search import search as run_search
    from diffusia.analysis.sensitivity_report import load_sensitivity
    from diffusia.fileio import write_json, write_text

    if out.suffix != ".json":
        raise DiffusiaError(f"--out {out} must end in .json")
    summary = out.with_name(out.stem + ".search.json")
    check_output_file(out, "recipe", overwrite, [sensitivity])
    check_output_file(summary, "search", overwrite, [sensitivity])
    sens = load_sensitivity(sensitivity)
    res = run_search(
        sens, budget_mb, quality_floor, latency_s, precisions=_csv(precisions) if precisions else None, method=method
    )
    check_recipe_names(res.recipe, sens["unet"]["layers"])
    write_text(out, res.recipe.to_json() + "\n")
    write_json(summary, res.to_dict())
    lat = "" if res.est_latency_s is None else f", est. latency {res.est_latency_s:.3f} s/image"
    typer.echo(
        f"{out}: {res.size_mb:.2f} MB (FP32 {res.fp32_size_mb:.2f} MB), est. SQNR {res.est_sqnr_db:.2f} dB "
        f"(SIMULATED){lat}; {res.counts} [{res.method}]"
    )


def pareto(
    results: list[Path] = typer.Option(
        ..., help="Evaluation run folder or results.json (repeat the option; a folder is searched recursively)."
    ),
    out: Path = typer.Option(..., help="Output folder: pareto.md, pareto.json, pareto_*.png."),
    overwrite: bool = o.overwrite(),
):
    """Pareto fronts of quality vs size, latency and peak memory across evaluation runs."""
    from diffusia.analysis.pareto import write_pareto
    from diffusia.analysis.results import load_many

    variants = load_many(results)
    with output_dir(out, "pareto", overwrite, results):
        data = write_pareto(variants, out)
    typer.echo(f"{out}: {len(data['variants'])} variants")
    for k, names in data["fronts"].items():
        typer.echo(f"  {k.replace(':', ' x ')}: {', '.join(names) or '(none)'}")


def recommend(
    memory_mb: float = o.positive(..., "Memory budget of the device (MB), compared with measured peak.", 4096),
    results: list[Path] = typer.Option(..., help="Evaluation run folder(s) or results.json (repeatable)."),
    latency_s: float | None = o.positive(None, "Latency limit, s/image.", example=2),
    quality_tolerance: float = o.number(
        0.0, 0, help="Quality differences up to this count as ties (then smaller/faster wins).", example=0.01
    ),
    report: bool = typer.Option(False, help="Also print the device-class report."),
):
    """Recommend the best measured variant for a device profile, with the reason in numbers."""
    from diffusia.analysis.recommend import device_report
    from diffusia.analysis.recommend import recommend as run_recommend
    from diffusia.analysis.results import load_many

    variants = load_many(results)
    rec = run_recommend(variants, memory_mb, latency_s, quality_tolerance)
    typer.echo(rec.name or "none")
    typer.echo(rec.reason)
    if report:
        typer.echo("")
        typer.echo(device_report(variants, latency_s=latency_s))


COMMANDS = {f.__name__: f for f in (sensitivity, search, pareto, recommend)}
