"""Calibration observations recorded once for several recipes.

A study or an evaluation quantizes one model several ways (w8a8, mixed, a searched plan); calibrating each one
samples the calibration prompts again, which at SD scale on a CPU is hours per recipe. Calibration computes in
float, so what a layer's calibrator sees does not depend on which other layers a recipe quantizes: one pass of the
float pipeline over the prompts, with a calibrator on the input of every Conv2d and Linear (one per timestep
group), serves every recipe with the same calibrator settings. `quantize_pipeline(..., observations=)` takes its
layers' ranges from them. They equal a live calibration's where the recipe keeps its float layers in fp32; where it
stores them in fp16, a live calibration sees activations behind fp16-rounded weights and the ranges differ by that
rounding (tests/calib/test_observations.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from diffusia.calib.base import Calibrator, get_calibrator
from diffusia.calib.forward_loop import CALIBRATION_SEED, sampling_forward_loop
from diffusia.config import Recipe
from diffusia.prompts import Prompt
from diffusia.quant import timestep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObserverSettings:
    """The recipe fields that decide what a calibrator collects."""

    calibrator: str
    percentile: float
    bins: int
    timestep_groups: int
    num_train_timesteps: int
    attention: bool = False  # also the int8 attention's Q/K/V and probabilities (diffusia.quant.attention)

    @classmethod
    def of(cls, recipe: Recipe) -> ObserverSettings:
        return cls(
            recipe.calibrator,
            recipe.percentile,
            recipe.histogram_bins,
            recipe.timestep_groups,
            recipe.num_train_timesteps,
            recipe.attention == "int8",
        )

    def new_calibrator(self) -> Calibrator:
        return get_calibrator(self.calibrator, percentile=self.percentile, bins=self.bins)


@dataclass(frozen=True)
class Sampling:
    """The sampler runs a calibration observes: prompts, steps, guidance, first seed, prompts per call, size."""

    prompts: tuple[str, ...]
    steps: int
    guidance: float
    seed: int = CALIBRATION_SEED
    batch: int = 1
    resolution: int | None = None


def unet_id(unet: nn.Module) -> str:
    """A fingerprint of a float U-Net: its config and, per parameter, name, shape and the bytes of up to 4096
    evenly strided values (exact, and milliseconds even for SDXL; any fine-tune changes them)."""
    h = hashlib.sha256(json.dumps(dict(getattr(unet, "config", {})), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in unet.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().contiguous()
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


class Observations:
    """Per U-Net layer, the calibrators (one per timestep group) that saw its input along the sampled trajectories."""

    def __init__(
        self,
        settings: ObserverSettings,
        sampling: Sampling,
        layers: dict[str, list[Calibrator]],
        unet: str,
        unet_calls: int,
        seconds: float,
    ) -> None:
        self.settings, self.sampling, self.layers = settings, sampling, layers
        self.unet, self.unet_calls, self.seconds = unet, unet_calls, seconds

    @classmethod
    def record(
        cls,
        pipe,
        recipe: Recipe,
        prompts: list[Prompt],
        steps: int,
        guidance: float,
        batch: int = 1,
        resolution: int | None = None,
        progress: bool = True,
    ) -> Observations:
        """Sample `prompts` with the float pipeline, a calibrator of `recipe`'s settings on every Conv2d/Linear (and
        for int8 attention, an observing attention processor on every attention)."""
        settings = ObserverSettings.of(recipe)
        sampling = Sampling(tuple(p.text for p in prompts), steps, guidance, CALIBRATION_SEED, batch, resolution)
        unet = pipe.unet
        state = timestep.TimestepState(settings.timestep_groups, settings.num_train_timesteps)
        layers: dict[str, list[Calibrator]] = {}
        calls = [0]

        def observer(group_calibrators: list[Calibrator]):
            return lambda module, args: group_calibrators[state.group].collect(args[0])

        hooks = [unet.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))]
        for name, module in unet.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                layers[name] = [settings.new_calibrator() for _ in range(settings.timestep_groups)]
                hooks.append(module.register_forward_pre_hook(observer(layers[name])))
        processors = _observe_attention(unet, state) if settings.attention else {}
        timestep.attach(unet, state)
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                sampling_forward_loop(
                    pipe, list(prompts), steps, guidance, progress=progress, batch=batch, resolution=resolution
                )()
        finally:
            for h in hooks:
                h.remove()
            for name, (previous, observer) in processors.items():
                unet.get_submodule(name).set_processor(previous)
                layers.update({f"{name}.processor.{k}": q._calibrators for k, q in observer.quantizers().items()})
            timestep.detach(unet)
        seconds = time.perf_counter() - t0
        log.info("observed %d layers over %d U-Net calls in %.1f s", len(layers), calls[0], seconds)
        return cls(settings, sampling, layers, unet_id(unet), calls[0], seconds)

    def mismatch(self, recipe: Recipe, sampling: Sampling, unet: str) -> str | None:
        """Why these observations cannot calibrate `recipe` for a U-Net of fingerprint `unet` sampled as
        `sampling`; None when they can."""
        if unet != self.unet:
            return "were recorded on another U-Net"
        wanted = ObserverSettings.of(recipe)
        if self.settings.attention and not wanted.attention:  # attention observed too: no harm
            wanted = replace(wanted, attention=True)
        for what, ours, theirs in (
            ("calibrator settings", self.settings, wanted),
            ("sampling", self.sampling, sampling),
        ):
            diff = [k for k in asdict(ours) if getattr(ours, k) != getattr(theirs, k)]
            if diff:
                return f"have {what} {_fields(ours, diff)}, this calibration {_fields(theirs, diff)}"
        if not all(c.collected for group in self.layers.values() for c in group):
            return f"come from a {self.settings.calibrator} calibrator that cannot hand over what it collected"
        return None


def _observe_attention(unet: nn.Module, state: timestep.TimestepState) -> dict[str, tuple]:
    """Every attention of the float `unet` on an int8 attention processor that observes (float math); returns
    attention name -> (its previous processor, the observing one)."""
    from diffusia.quant import attention

    names = list(attention.attentions(unet))
    previous = {n: unet.get_submodule(n).processor for n in names}
    attention.install(unet, names, state.groups, state)
    observers = attention.processors(unet)
    for q in (q for p in observers.values() for q in p.quantizers().values()):
        q.mode = "calibrate"
    return {n: (previous[n], observers[n]) for n in names}


def _fields(obj, names: list[str]) -> str:
    shown = {k: getattr(obj, k) for k in names}
    return ", ".join(f"{k}={f'{len(v)} prompts' if isinstance(v, tuple) else repr(v)}" for k, v in shown.items())
