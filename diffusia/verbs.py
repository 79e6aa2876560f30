"""The public verbs, diffusers-style. One call quantizes a pipeline (plan, calibrate over the sampler's trajectories,
freeze to real kernels); U-Net users get the lifecycle one verb at a time: quantize -> calibrate -> freeze
(QAT trains between quantize and freeze), plus dequantize and summary. Every verb takes a pipeline or its U-Net and
returns what it was given."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from torch import nn

from diffusia.config import Recipe, load_recipe
from diffusia.errors import DiffusiaError
from diffusia.prompts import Prompt
from diffusia.quant import api


def _is_pipeline(obj: Any) -> bool:
    return hasattr(obj, "unet") and hasattr(obj, "components")


def _unet(obj: Any) -> nn.Module:
    unet = obj.unet if _is_pipeline(obj) else obj
    if not isinstance(unet, nn.Module):
        raise DiffusiaError(f"expected a diffusers pipeline or its U-Net, got {type(obj).__name__}")
    return unet


def _prompts(calib_prompts: Iterable[str | Prompt] | None, pipe: Any) -> list[Prompt]:
    """Prompt objects from strings or Prompts; by default the model's own calibration set."""
    from diffusia.prompts import load_prompts

    if calib_prompts is None:
        return load_prompts("calibration", model=str(getattr(pipe, "diffusia_spec", "")))
    if isinstance(calib_prompts, (str, Prompt)):
        calib_prompts = [calib_prompts]
    prompts = [p if isinstance(p, Prompt) else Prompt(p) if isinstance(p, str) else None for p in calib_prompts]
    if not prompts or any(p is None or not p.text.strip() for p in prompts):
        raise DiffusiaError("calib_prompts must be a non-empty list of non-empty strings (or diffusia Prompts)")
    return prompts


def quantize(
    model: Any,
    recipe: str | Recipe = "w8a8",
    *,
    calib_prompts: Iterable[str | Prompt] | None = None,
    calib_size: int = 100,
    forward_loop: Callable[[Any], None] | None = None,
    **options: Any,
) -> Any:
    """Quantize a pipeline's U-Net or a bare U-Net with `recipe` (a preset name, a recipe .json or a Recipe).

    A pipeline is quantized, calibrated and frozen in one call: W8A8 layers see every U-Net call of the sampler on
    `calib_size` prompts cycled from `calib_prompts` (default: the model's calibration set), or whatever
    `forward_loop(pipe)` runs. `options` go to `diffusia.quant.pipeline.quantize_pipeline` (steps, guidance,
    batch, progress, validate).

    A bare U-Net gets its layers swapped; with `forward_loop(unet)` it is also calibrated and frozen, otherwise
    `calibrate` (or QAT) and `freeze` follow."""
    from diffusia.quant.pipeline import quantize_pipeline

    recipe = load_recipe(recipe)
    if _is_pipeline(model):
        prompts = None if forward_loop is not None else _prompts(calib_prompts, model)
        return quantize_pipeline(model, recipe, prompts, calib_size=calib_size, forward_loop=forward_loop, **options)
    if options or calib_prompts is not None:
        raise DiffusiaError(
            "calib_prompts and pipeline options need a pipeline; for a bare U-Net pass "
            "forward_loop=fn(unet) or use `with diffusia.calibrate(unet): ...`"
        )
    unet = _unet(model)
    api.quantize(unet, recipe)
    if forward_loop is not None:
        with api.calibrate(unet):
            forward_loop(unet)
        api.freeze(unet)
    return model


@contextlib.contextmanager
def calibrate(model: Any) -> Iterator[Any]:
    """Within the block, W8A8 layers observe their inputs (computing in float); on exit their ranges are set."""
    with api.calibrate(_unet(model)):
        yield model


def freeze(model: Any) -> Any:
    """Real kernels: weights become int8 / packed int4 / fp16 / bf16 buffers and the float weights are dropped."""
    api.freeze(_unet(model))
    return model


def dequantize(model: Any) -> Any:
    """Back to plain float layers (the dequantized weights if frozen)."""
    api.dequantize(_unet(model))
    return model


def summary(model: Any) -> str:
    """A table of every quantized layer: precision, weight/activation bits, mode, activation range."""
    return api.summary(_unet(model))


def save(pipe: Any, out_dir: str | os.PathLike, *, runtimes: tuple[str, ...] = (), overwrite: bool = False) -> Path:
    """Save a quantized pipeline as a diffusers folder (atomically); `DiffusionPipeline.from_pretrained` and
    `diffusia.load_pipeline` load it. `runtimes` (openvino, onnxruntime) adds the U-Net exported and checked for
    each. An existing folder is replaced only if it is an earlier diffusia output and `overwrite` is set."""
    from diffusia.fileio import QUANTIZED, check_output_dir
    from diffusia.quant.serialization import save_quantized_pipeline

    if not _is_pipeline(pipe):
        raise DiffusiaError(
            f"save takes a pipeline, got {type(pipe).__name__}: put the U-Net in its pipeline "
            "(pipe.unet = unet) and save that"
        )
    check_output_dir(out_dir, QUANTIZED, overwrite, [getattr(pipe, "name_or_path", None)])
    return save_quantized_pipeline(pipe, out_dir, runtimes=tuple(runtimes))
