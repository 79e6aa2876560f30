"""The `diffusia` command line: thin commands over the Python API. Errors print one line and exit 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from diffusia.errors import DiffusiaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantize Stable-Diffusion-class U-Nets for edge hardware, and measure what it buys.")



@app.callback()
def root() -> None:
    """diffusia: quantize, evaluate and analyse Stable-Diffusion-class pipelines."""


MODEL_HELP = "`tiny` (embedded), `sd15-arch` (random weights), a pipeline folder, a diffusia folder or a hub id."


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
):
    """Generate images with the reference study's defaults (DPM-Solver, 25 steps, guidance 7.5, seed 42)."""
    from diffusia import load_pipeline
    from diffusia.fileio import atomic_path
    from diffusia.generate import GenerationConfig, MemoryOptions, generate as run

    if out.suffix.lower() != ".png":
        raise DiffusiaError(f"--out {out} must end in .png")
    pipe = load_pipeline(model, device=device, dtype=dtype, low_cpu_mem_usage=low_cpu_mem)
    memory = MemoryOptions(attention_slicing, xformers, vae_slicing, vae_tiling, cpu_offload)
    images = run(pipe, prompt, num_images, GenerationConfig(steps=steps, guidance=guidance, seed=seed, memory=memory))
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(len(images))]
    for image, path in zip(images, paths):
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        typer.echo(str(path))


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
