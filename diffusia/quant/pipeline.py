"""Quantize the U-Net of a whole pipeline: plan, calibrate over sampling trajectories, freeze, validate."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from diffusia.calib.forward_loop import CALIBRATION_SEED, sampling_forward_loop
from diffusia.calib.observations import Observations, Sampling, unet_id
from diffusia.config import Recipe, load_recipe
from diffusia.errors import DiffusiaError
from diffusia.prompts import Prompt, take
from diffusia.quant import api, finite
from diffusia.quant.precisions import act_digits

log = logging.getLogger(__name__)


@dataclass
class CalibrationInfo:
    prompts: list[str] = field(default_factory=list)
    size: int = 0
    steps: int = 25
    guidance: float = 7.5
    seed: int = CALIBRATION_SEED
    unet_calls: int = 0
    seconds: float = 0.0
    batch: int = 1  # prompts per pipeline call (U-Net batch = 2 x batch with guidance)
    resolution: int | None = None  # square image size calibrated at, pixels (None: the pipeline's default)
    shared: bool = False  # ranges from observations recorded once for several recipes (calib.observations)


CALIBRATION_BATCH = 4  # prompts per calibration call: fewer, larger U-Net calls (the per-call statistics cost is fixed)


def needs_calibration(plan: dict[str, str]) -> bool:
    return any(act_digits(p) for p in plan.values())


def recipe_calibrates(recipe: Recipe) -> bool:
    """Whether the recipe names a precision with integer activations (its plan then needs calibration)."""
    names = [recipe.weights, recipe.full_res_weights or "fp32", *(r.precision for r in recipe.rules)]
    return any(act_digits(n) for n in names)


def quantize_pipeline(
    pipe,
    recipe: Recipe | str,
    calib_prompts: list[Prompt] | None = None,
    calib_size: int = 100,
    steps: int = 25,
    guidance: float = 7.5,
    progress: bool = True,
    validate: bool = True,
    batch: int = CALIBRATION_BATCH,
    forward_loop: Callable[[object], None] | None = None,
    resolution: int | None = None,
    observations: Observations | None = None,
):
    """Quantize `pipe.unet` in place with `recipe` and return the pipeline (real kernels, frozen).

    W8A8 layers are calibrated on `calib_size` prompts (cycled from `calib_prompts`), over every U-Net call of
    the sampler: all timesteps, both guidance branches, `batch` prompts per pipeline call, images of `resolution`
    pixels square (default: the pipeline's); or on whatever `forward_loop(pipe)` runs instead. `observations`
    recorded once for several recipes (`diffusia.calib.observations`) replace the sampling when they match."""
    recipe = load_recipe(recipe)
    info = CalibrationInfo(steps=steps, guidance=guidance)
    if recipe.weights == "fp32" and not recipe.rules:
        pipe.diffusia_recipe, pipe.diffusia_calibration = recipe, info
        return pipe
    float_unet = unet_id(pipe.unet) if observations is not None else None
    plan = api.quantize(pipe.unet, recipe)
    if needs_calibration(plan):
        if forward_loop is not None:
            info = _calibrate(pipe, forward_loop, CalibrationInfo(steps=steps, guidance=guidance, batch=0))
        elif not calib_prompts:
            raise DiffusiaError(
                f"recipe {recipe.name!r} has W8A8 layers and needs calibration prompts: pass --calib-prompts"
            )
        else:
            prompts = take(calib_prompts, calib_size)
            sampling = Sampling(tuple(p.text for p in prompts), steps, guidance, CALIBRATION_SEED, batch, resolution)
            info = CalibrationInfo(
                list(sampling.prompts), len(prompts), steps, guidance, batch=batch, resolution=resolution
            )
            why = observations.mismatch(recipe, sampling, float_unet) if observations is not None else None
            if observations is not None and why is None:
                info = _adopt(pipe, observations, info)
            else:
                if why:
                    log.info("calibrating %s by sampling: the shared observations %s", recipe.name, why)
                loop = sampling_forward_loop(
                    pipe, prompts, steps, guidance, progress=progress, batch=batch, resolution=resolution
                )
                info = _calibrate(pipe, lambda _: loop(), info)
    api.freeze(pipe.unet)
    pipe.diffusia_recipe, pipe.diffusia_calibration = recipe, info
    if validate:
        pipe.diffusia_validation = validate_pipeline(pipe)
    return pipe


def _calibrate(pipe, forward_loop: Callable[[object], None], info: CalibrationInfo) -> CalibrationInfo:
    """Run `forward_loop(pipe)` with the W8A8 layers observing; `info` with the U-Net calls and seconds."""
    calls = [0]
    counter = pipe.unet.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    t0 = time.perf_counter()
    try:
        with api.calibrate(pipe.unet):
            forward_loop(pipe)
    finally:
        counter.remove()
    info.unet_calls, info.seconds = calls[0], time.perf_counter() - t0
    log.info("calibrated on %d prompts, %d U-Net calls, %.1f s", info.size, info.unet_calls, info.seconds)
    return info


def _adopt(pipe, observations: Observations, info: CalibrationInfo) -> CalibrationInfo:
    """Set the W8A8 ranges from observations shared by several recipes; `info` marked shared."""
    t0 = time.perf_counter()
    api.calibrate_from(pipe.unet, observations.layers)
    info.unet_calls, info.seconds, info.shared = observations.unet_calls, time.perf_counter() - t0, True
    log.info("calibrated from the shared observations of %d prompts (%.1f s)", info.size, info.seconds)
    return info


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def validate_pipeline(pipe, prompt: str = "a red sneaker", steps: int = 4) -> dict:
    """Cheap checks after conversion: quantized layers hold what they claim, a forward is finite (else the first
    bad layer is named), peak memory of that forward, and one sanity image."""
    unet = pipe.unet
    qmods = api.qmodules(unet)
    for name, m in qmods.items():
        for bname, buf in m.named_buffers(recurse=False):
            if bname == "weight_int8" and buf.dtype != torch.int8:
                raise DiffusiaError(f"layer {name!r} should hold int8 weights, holds {buf.dtype}")
    from diffusia.models.unet_inputs import example_unet_inputs

    device = unet.device
    inputs = example_unet_inputs(unet.config, dtype=next(unet.parameters()).dtype, device=device)
    rss_before = _peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = finite.check_finite(unet, **inputs)
    peak = (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else _peak_rss_mb()
    from diffusia.generate import GenerationConfig, generate

    image = generate(pipe, prompt, 1, GenerationConfig(steps=steps), progress=False, output_type="np")[0]
    report = dict(
        quantized_layers=len(qmods),
        forward_output_shape=list(out.sample.shape),
        peak_memory_mb=round(peak, 1),
        peak_rss_mb_before=round(rss_before, 1),
        sanity_image_mean=float(np.mean(image)),
        sanity_image_std=float(np.std(image)),
    )
    if report["sanity_image_std"] < 1e-4:
        raise DiffusiaError("the sanity image is flat (one colour): the quantized U-Net lost its signal")
    return report


def describe(pipe) -> dict:
    """Recipe and calibration settings recorded with a quantized pipeline."""
    recipe = getattr(pipe, "diffusia_recipe", None)
    info = getattr(pipe, "diffusia_calibration", None)
    return {
        "recipe": recipe.to_dict() if recipe else None,
        "calibration": asdict(info) if info else None,
        "validation": getattr(pipe, "diffusia_validation", None),
    }
