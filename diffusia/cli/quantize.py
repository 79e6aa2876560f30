"""`diffusia quantize` and `diffusia export`: a quantized folder, and its U-Net for other runtimes."""

from __future__ import annotations

from pathlib import Path

import typer

from diffusia.cli import options as o
from diffusia.config import PRESETS
from diffusia.errors import DiffusiaError


def _targets() -> tuple[str, ...]:
    from diffusia.quant.cpu import TARGETS

    return TARGETS


def _calibrators() -> tuple[str, ...]:
    from diffusia.config import CALIBRATORS

    return CALIBRATORS


def _formats() -> tuple[str, ...]:
    from diffusia.runtime.artifact import EXPORTED

    return ("onnx", *EXPORTED)


def quantize(
    out: Path = typer.Option(..., help="Output folder (written atomically)."),
    model: str = o.model(),
    config: str | None = o.config(),
    recipe: str = typer.Option("w8a8", help=f"Preset ({', '.join(PRESETS)}) or a recipe .json."),
    calib_prompts: str = typer.Option("calibration", help="Prompt set name or file for calibration."),
    calib_size: int = o.calib_size(100),
    calib_steps: int = o.calib_steps(),
    calib_batch: int = o.integer(
        4, 1, 64, "Calibration prompts per pipeline call (fewer, larger U-Net calls; lower it if memory is short)."
    ),
    calib_resolution: int | None = o.resolution(
        "Square image size calibrated at, in pixels (default: the model's); calibrate at the size you deploy."
    ),
    timestep_groups: int | None = o.timestep_groups(),
    calibrator: str | None = o.choice(
        None,
        _calibrators,
        "Activation-range calibrator: percentile (the recipe's, 99.9th by default), minmax or mse "
        "(least squared quantization error; lower error wherever measured). Default: the recipe's.",
    ),
    activations: str | None = o.activations(),
    attention: str | None = o.attention(),
    rule: list[str] | None = typer.Option(None, help="Per-layer override PATTERN=PRECISION (glob or re:regex)."),
    overwrite: bool = o.overwrite(),
    target: str | None = o.choice(
        None,
        _targets,
        "CPU class the INT8 layout is for: auto (this host), portable "
        "(correct on every x86 CPU), avx2 (no VNNI) or vnni. Default: the recipe's.",
    ),
    device: str = o.device(),
    runtime: str | None = o.runtime(
        None,
        "Also save the U-Net exported and checked for these runtimes "
        "(comma-separated: openvino, onnxruntime, or auto = the fastest measured on "
        "this CPU class), in OUT/<runtime>/ for `--runtime` at load time.",
        sep=",",
    ),
):
    """Quantize the U-Net (calibrated on sampling trajectories), validate it and save a loadable folder."""
    from diffusia import load_pipeline
    from diffusia.config import load_recipe
    from diffusia.fileio import QUANTIZED, check_output_dir
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline
    from diffusia.runtime import saved_runtimes

    r = load_recipe(recipe, timestep_groups, rule)
    if target is not None:
        r = r.replace(target=target)
    if calibrator is not None:
        r = r.replace(calibrator=calibrator)
    if activations is not None:
        r = r.replace(activations=activations)
    if attention is not None:
        r = r.replace(attention=attention)
    runtimes = saved_runtimes(runtime, device)
    prompts = load_prompts(calib_prompts, model=model)
    check_output_dir(out, QUANTIZED, overwrite, (model, config, recipe, calib_prompts))
    pipe = load_pipeline(model, device=device, progress=False, config=config)
    quantize_pipeline(
        pipe, r, prompts, calib_size=calib_size, steps=calib_steps, batch=calib_batch, resolution=calib_resolution
    )
    save_quantized_pipeline(pipe, out, base_model=model, runtimes=runtimes)
    v = pipe.diffusia_validation or {}
    saved = "".join(f", {x} graph in {out / x}" for x in runtimes)
    typer.echo(
        f"{out}: recipe {r.name}, {v.get('quantized_layers', 0)} quantized layers, "
        f"validation forward peak {v.get('peak_memory_mb', '?')} MB{saved}"
    )


def export(
    model: str = typer.Option(..., help="A quantized diffusia folder (from `diffusia quantize` or `diffusia qat`)."),
    out: Path | None = typer.Option(
        None,
        help="Output: a .onnx file for --format onnx (default unet.onnx), a "
        "folder for openvino / onnxruntime (default unet-<format>).",
    ),
    format: str = o.choice(
        "onnx",
        _formats,
        "onnx: one QDQ .onnx (static shapes); openvino: OpenVINO IR (with a float32 VAE's decoder); "
        "onnxruntime: dynamic-shape QDQ graphs; the folders load with `--runtime`.",
    ),
    tolerance: float = o.number(
        0.05,
        above=0,
        hi=1,
        help="Max relative L2 between the runtime's and diffusia's "
        "outputs (integer codes are compared exactly; outputs differ by the rounding ties "
        "they amplify, and may go up to 1.5x as far as diffusia's own output moves when its input moves by 1e-6).",
    ),
    overwrite: bool = o.overwrite(),
):
    """Export the quantized U-Net to ONNX (QDQ) or OpenVINO and check the runtime reproduces diffusia's output."""
    from diffusia import load_pipeline
    from diffusia.export.onnx import check_against_onnxruntime, export_unet
    from diffusia.fileio import EXPORT, atomic_path, check_output_dir, check_output_file
    from diffusia.runtime.artifact import export_runtime, output_checkable, raise_on_failed_check

    if format != "onnx":
        out = out or Path(f"unet-{format}")
        check_output_dir(out, EXPORT, overwrite, [model])
        from diffusia.quant import api

        pipe = load_pipeline(model, progress=False)
        api.qmodules(pipe.unet) or _not_quantized(model)
        manifest = export_runtime(pipe.unet, format, out, tolerance=tolerance, vae=pipe.vae)
        check = manifest["check"]
        decoder = " + the VAE decoder" if manifest.get("vae_decoder") else ""
        typer.echo(
            f"{out}: {format} {manifest['runtime_version'].split('-')[0]}, {len(manifest['files'])} graph(s){decoder}, "
            f"matches diffusia {_within(check)}; "
            f"{check['quantizers']['quantizers']} activation quantizers identical but for "
            f"{check['quantizers']['tie_differences']} rounding ties"
        )
        return
    out = out or Path("unet.onnx")
    check_output_file(out, "onnx", overwrite, [model])
    pipe = load_pipeline(model, progress=False)
    with atomic_path(out) as tmp:  # the .onnx appears only if it passes the check
        path = export_unet(pipe.unet, tmp)
        check = check_against_onnxruntime(pipe.unet, path)
        check["output_checked"] = output_checkable(pipe.unet)
        raise_on_failed_check(check, "onnxruntime", tolerance, pipe.unet)
    codes = check["codes"]
    typer.echo(
        f"{out}: ONNX Runtime {check['onnxruntime']} matches diffusia {_within(check)}; integer codes identical in "
        f"{codes['identical_before_first_difference']} of {codes['layers']} W8A8 layers before the first "
        "rounding tie"
    )


def _within(check: dict) -> str:
    within = f"within {check['relative_l2_vs_diffusia']:.2%} relative L2"
    if "tie_noise" in check:
        within += f" (its own output moves {check['tie_noise']:.2%} when its input moves by 1e-6)"
    return within


def _not_quantized(model: str):
    raise DiffusiaError(f"{model} has no quantized U-Net: export takes a folder from `diffusia quantize`")


COMMANDS = {"quantize": quantize, "export": export}
