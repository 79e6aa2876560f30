"""Text-to-image generation with the reference study's defaults and the memory options of constrained devices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffusia.errors import DiffusiaError

# Reference study: DPM-Solver multistep, 25 steps, guidance 7.5, seed 42, batch 1.
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_SEED = 42


@dataclass(frozen=True)
class MemoryOptions:
    """diffusers' memory savers, as flags (each measured separately by the evaluation harness)."""

    attention_slicing: bool = False
    xformers: bool = False  # memory-efficient attention when xformers is installed (PyTorch SDPA is the default)
    vae_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False  # CUDA only: model-level CPU offload

    def apply(self, pipe) -> None:
        if self.attention_slicing:
            pipe.enable_attention_slicing()
        if self.xformers:
            try:
                pipe.enable_xformers_memory_efficient_attention()
            except (ImportError, ModuleNotFoundError, ValueError) as e:
                raise DiffusiaError(
                    f"--xformers needs the xformers package ({e}); drop the flag to use PyTorch SDPA"
                ) from None
        if self.vae_slicing:
            pipe.vae.enable_slicing()
        if self.vae_tiling:
            pipe.vae.enable_tiling()
        if self.cpu_offload:
            if not torch.cuda.is_available():
                raise DiffusiaError(
                    "--cpu-offload moves models between GPU and CPU and needs CUDA: drop the flag on CPU"
                )
            pipe.enable_model_cpu_offload()


@dataclass
class GenerationConfig:
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: int = DEFAULT_SEED
    height: int | None = None
    width: int | None = None
    memory: MemoryOptions = field(default_factory=MemoryOptions)


def use_dpm_solver(pipe) -> None:
    """Make sure the sampler is DPM-Solver multistep (the reference study's), keeping the model's betas."""
    from diffusers import DPMSolverMultistepScheduler

    if not isinstance(pipe.scheduler, DPMSolverMultistepScheduler):
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)


def generate(
    pipe,
    prompts: list[str] | str,
    num_images: int = 1,
    config: GenerationConfig | None = None,
    progress: bool = True,
    output_type: str = "pil",
):
    """One image per (prompt, i): image i of a prompt uses seed `config.seed + i`, batch 1, so every image is
    reproducible on its own. Returns a flat list in prompt-major order."""
    config = config or GenerationConfig()
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or any(not p or not p.strip() for p in prompts):
        raise DiffusiaError("empty prompt: pass a non-empty --prompt (or a prompt file without blank lines)")
    if num_images < 1:
        raise DiffusiaError(f"--num-images must be >= 1, got {num_images}")
    use_dpm_solver(pipe)
    config.memory.apply(pipe)
    jobs = [(p, config.seed + i) for p in prompts for i in range(num_images)]
    from tqdm.auto import tqdm

    images = []
    device = pipe._execution_device
    for prompt, seed in tqdm(jobs, desc="generate", disable=not progress or len(jobs) == 1):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = pipe(
            prompt,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            generator=gen,
            height=config.height,
            width=config.width,
            output_type="np",
        )
        image = out.images[0]
        if not np.isfinite(image).all():
            raise DiffusiaError(
                f"the pipeline produced NaN/Inf for {prompt!r} (seed {seed}) on {device}: "
                "find the layer with diffusia.quant.finite.check_finite(pipe.unet, ...)"
            )
        images.append(image)
    if output_type == "np":
        return np.stack(images)
    from diffusers.utils import numpy_to_pil

    return [numpy_to_pil(im[None])[0] for im in images]
