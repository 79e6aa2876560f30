"""`diffusia generate`: images from a prompt, with the reference study's defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from diffusia.cli import options as o
from diffusia.errors import DiffusiaError


def generate(
    prompt: str = o.text(..., help="Text prompt."),
    out: Path = typer.Option(Path("out.png"), help="Output PNG; with --num-images N, files <stem>-<i>.png."),
    model: str = o.model(),
    config: str | None = o.config(),
    num_images: int = o.integer(1, 1, 1000, "Images for the prompt; image i uses seed + i."),
    steps: int = o.steps(),
    guidance: float = o.guidance(),
    seed: int = o.seed(42),
    device: str = o.device(),
    dtype: str | None = o.choice(None, ("fp32", "fp16", "bf16"), "fp32, fp16 or bf16 (default: the model's)."),
    attention_slicing: bool = typer.Option(False, help="Compute attention in slices (less peak memory)."),
    xformers: bool = typer.Option(False, help="xformers memory-efficient attention (needs xformers)."),
    vae_slicing: bool = typer.Option(False, help="Decode a batch one image at a time."),
    vae_tiling: bool = typer.Option(False, help="Decode large images in tiles."),
    cpu_offload: bool = typer.Option(False, help="CUDA only: keep idle models on the CPU."),
    low_cpu_mem: bool = typer.Option(True, help="Low-CPU-memory loading (no random init before weights)."),
    runtime: str = o.runtime(),
    runtime_precision: str = o.runtime_precision(),
    overwrite: bool = o.overwrite(),
):
    """Generate images with the reference study's defaults (DPM-Solver, 25 steps, guidance 7.5, seed 42)."""
    from PIL.PngImagePlugin import PngInfo

    from diffusia import load_pipeline
    from diffusia.fileio import PNG_SOFTWARE, atomic_path, check_output_file
    from diffusia.generate import GenerationConfig, MemoryOptions
    from diffusia.generate import generate as run

    if out.suffix.lower() != ".png":
        raise DiffusiaError(f"--out {out} must end in .png")
    paths = [out] if num_images == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(num_images)]
    for path in paths:
        check_output_file(path, "png", overwrite, [model])
    pipe = load_pipeline(
        model,
        device=device,
        dtype=dtype,
        low_cpu_mem_usage=low_cpu_mem,
        runtime=runtime,
        config=config,
        runtime_precision=runtime_precision,
    )
    memory = MemoryOptions(attention_slicing, xformers, vae_slicing, vae_tiling, cpu_offload)
    images = run(pipe, prompt, num_images, GenerationConfig(steps=steps, guidance=guidance, seed=seed, memory=memory))
    info = PngInfo()
    info.add_text("Software", PNG_SOFTWARE)  # how --overwrite recognises an image diffusia generated
    for image, path in zip(images, paths):
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", pnginfo=info)
        typer.echo(str(path))


COMMANDS = {"generate": generate}
