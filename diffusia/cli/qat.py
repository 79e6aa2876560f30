"""`diffusia qat`: quantization-aware training. The one QAT command line: `python -m diffusia.qat.train` (what
`accelerate launch -m diffusia.qat.train ...` runs in each process) is this command too."""

from __future__ import annotations

from pathlib import Path

import typer

from diffusia.cli import options as o
from diffusia.errors import DiffusiaError


def qat(
    out: Path = typer.Option(
        ...,
        help="Output folder: the INT8 pipeline, as `quantize` writes it (atomically); checkpoints in OUT/checkpoints.",
    ),
    model: str = o.model(),
    recipe: str = typer.Option("w8a8", help="Preset or a recipe .json (as for `quantize`)."),
    data: str | None = o.choice(None, ("fashion-mnist",), "Noise-prediction loss on a data set: fashion-mnist."),
    distill: bool = typer.Option(False, help="Data-free distillation from the FP32 U-Net (the default)."),
    steps: int = o.integer(100, 1, 1_000_000, "Optimizer steps."),
    lr: float = o.number(1e-5, above=0, hi=1, help="AdamW learning rate of the U-Net's float weights."),
    batch: int = o.integer(16, 1, 4096, "Batch per process."),
    lsq: bool = typer.Option(
        True,
        help="Also learn the activation step sizes (LSQ; on by default: on tiny it halved "
        "LPIPS against PTQ where weights alone did not help).",
    ),
    lsq_lr: float = o.number(1e-3, above=0, hi=1, help="Adam learning rate of the (log) activation step sizes."),
    checkpoint_every: int = o.integer(50, 0, None, "Checkpoint every K steps into OUT/checkpoints (0: never)."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in OUT/checkpoints."),
    calib_size: int = o.calib_size(32, "Calibration prompts (also the distillation trajectories)."),
    calib_prompts: str = typer.Option("calibration", help="Prompt set name or file."),
    calib_steps: int = o.calib_steps(),
    timestep_groups: int | None = o.timestep_groups(),
    seed: int = o.seed(0, "Seed of the batch stream (batch k depends on seed and k only)."),
    device: str = o.device(
        "auto",
        auto=True,
        help="cpu, cuda or auto (CUDA when available). Several processes or "
        "GPUs: `accelerate launch ... -m diffusia.qat.train` with these options.",
    ),
    keep_checkpoints: bool = typer.Option(False, help="Keep the last checkpoint inside the finished folder."),
    validate: bool = typer.Option(True, help="Validate the frozen U-Net (a forward pass) before saving."),
    progress: bool = typer.Option(True),
    overwrite: bool = o.overwrite(),
    stop_after: int | None = typer.Option(None, hidden=True, help="End as if killed after this many steps."),
    runtime: str | None = o.runtime(
        None,
        "Also save the U-Net exported and checked for these runtimes (comma-separated: openvino, onnxruntime, "
        "or auto), in OUT/<runtime>/ for `--runtime` at load time, as `diffusia quantize --runtime` does.",
        sep=",",
    ),
):
    """Quantization-aware training: PTQ start, fake-quant fine-tuning, then the same INT8 folder as `quantize`."""
    from diffusia.qat.train import QATConfig, run_qat
    from diffusia.runtime import saved_runtimes

    if data is not None and distill:
        raise DiffusiaError("--data and --distill exclude each other: pick one loss")
    cfg = QATConfig(
        out=str(out),
        model=model,
        recipe=recipe,
        source=data or "distill",
        steps=steps,
        lr=lr,
        batch=batch,
        lsq=lsq,
        lsq_lr=lsq_lr,
        checkpoint_every=checkpoint_every,
        resume=resume,
        overwrite=overwrite,
        calib_size=calib_size,
        calib_prompts=calib_prompts,
        calib_steps=calib_steps,
        timestep_groups=timestep_groups,
        seed=seed,
        device=device,
        keep_checkpoints=keep_checkpoints,
        validate=validate,
        progress=progress,
        stop_after=stop_after,
        runtimes=saved_runtimes(runtime, device if device != "auto" else "cpu"),
    )
    result = run_qat(cfg)
    if result is not None:
        typer.echo(
            f"{out}: QAT {cfg.source}, {len(result.losses)} steps, loss {result.losses[0]:.5f} -> "
            f"{float(sum(result.losses[-20:]) / len(result.losses[-20:])):.5f} (mean of last 20), "
            f"curve {out / 'loss_curve.png'}"
        )


COMMANDS = {"qat": qat}
