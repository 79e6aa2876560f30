"""Calibration data for diffusion: run the pipeline over prompts with its real scheduler, so the U-Net sees
every timestep of the sampling trajectory and both classifier-free-guidance branches. Any text-to-image
UNet2DCondition pipeline works (SD 1.x, 2.x, SDXL): only the common call arguments are used."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffusia.errors import DiffusiaError
from diffusia.generate import DEFAULT_GUIDANCE, DEFAULT_STEPS, use_dpm_solver
from diffusia.models.unet_inputs import ADDED_INPUTS
from diffusia.prompts import Prompt

CALIBRATION_SEED = 1000  # calibration images use seeds 1000 + i, evaluation uses 42 + i


def sampling_forward_loop(
    pipe,
    prompts: list[Prompt | str],
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = CALIBRATION_SEED,
    progress: bool = True,
    batch: int = 1,
    resolution: int | None = None,
) -> Callable[[], None]:
    """A callable that runs the pipeline over the prompts, `batch` prompts per call (prompt i always starts from
    the latents of seed + i, whatever the batch), at `resolution` pixels square (None: the pipeline's default);
    call it inside `calibrate()`. Batching changes no trajectory,
    only how many U-Net calls carry them (and the float summation order inside the kernels)."""

    def run() -> None:
        use_dpm_solver(pipe)
        previous = getattr(pipe, "_progress_bar_config", {}).copy()
        pipe.set_progress_bar_config(disable=True)
        starts = range(0, len(prompts), batch)
        try:
            for start in tqdm(starts, desc="calibrate", disable=not progress, unit="batch"):
                chunk = prompts[start : start + batch]
                generators = [torch.Generator("cpu").manual_seed(seed + start + j) for j in range(len(chunk))]
                pipe(
                    [getattr(p, "text", p) for p in chunk],
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    height=resolution,
                    width=resolution,
                    output_type="latent",
                    generator=generators,
                )
        finally:
            pipe.set_progress_bar_config(**previous)

    return run


class UnetCall(NamedTuple):
    """One U-Net call's inputs, on the CPU: `added` is SDXL's added conditioning (`text_embeds`, `time_ids`), None
    for SD 1.x/2.x."""

    sample: Tensor
    timestep: Tensor
    encoder_hidden_states: Tensor
    added: dict[str, Tensor] | None = None

    def kwargs(self, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> dict:
        """The call's keyword arguments of a `UNet2DConditionModel` on `device` (floats in `dtype`)."""
        out = dict(
            sample=self.sample.to(device, dtype),
            timestep=self.timestep.to(device),
            encoder_hidden_states=self.encoder_hidden_states.to(device, dtype),
        )
        if self.added is not None:
            out["added_cond_kwargs"] = {k: v.to(device, dtype) for k, v in self.added.items()}
        return out


def concat_calls(calls: list[UnetCall], rows: list[int] | None = None) -> UnetCall:
    """Calls as one batch (`rows` of it, if given), with one timestep per sample."""
    pick = (lambda t: t[rows]) if rows is not None else (lambda t: t)
    added = calls[0].added
    return UnetCall(
        pick(torch.cat([c.sample for c in calls])),
        pick(torch.cat([c.timestep.reshape(-1).expand(len(c.sample)) for c in calls])),
        pick(torch.cat([c.encoder_hidden_states for c in calls])),
        None if added is None else {k: pick(torch.cat([c.added[k] for c in calls])) for k in added},
    )


@dataclass
class UnetCalls:
    """What the U-Net received along sampled trajectories (and, when kept, what it returned), on the CPU."""

    calls: list[UnetCall] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)  # float32 noise predictions of the same calls


@contextlib.contextmanager
def recording_unet_calls(unet, outputs: bool = False) -> Iterator[UnetCalls]:
    """Keep every call of `unet` made inside the block (with `outputs`, its noise prediction too); other hooks on
    the U-Net (calibrators, observers) run as well, so one sampling pass serves them all."""
    recorded = UnetCalls()

    def keep_input(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ehs = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
        added = kwargs.get("added_cond_kwargs")
        unknown = sorted(set(added or {}) - set(ADDED_INPUTS))
        if unknown:
            raise DiffusiaError(
                f"recording U-Net inputs keeps SDXL's added conditioning ({', '.join(ADDED_INPUTS)}), and this "
                f"U-Net also takes {', '.join(unknown)}: use an SD 1.x/2.x or SDXL text-to-image model here"
            )
        batch = sample.shape[0]
        kept = {k: added[k].detach().cpu().expand(batch, *added[k].shape[1:]) for k in ADDED_INPUTS} if added else None
        cpu = (sample.detach().cpu(), torch.as_tensor(t).detach().cpu(), ehs.detach().cpu())
        recorded.calls.append(UnetCall(*cpu, kept))

    def keep_output(module, args, output) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output.sample
        recorded.outputs.append(out.detach().float().cpu().clone())

    handles = [unet.register_forward_pre_hook(keep_input, with_kwargs=True)]
    if outputs:
        handles.append(unet.register_forward_hook(keep_output))
    try:
        yield recorded
    finally:
        for h in handles:
            h.remove()


def record_unet_inputs(
    pipe,
    prompts: list[Prompt],
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = CALIBRATION_SEED,
    progress: bool = True,
) -> list[UnetCall]:
    """Every call's inputs the U-Net receives along the trajectories, on the CPU; used by sensitivity analysis and
    data-free distillation."""
    with recording_unet_calls(pipe.unet) as recorded, torch.no_grad():
        sampling_forward_loop(pipe, prompts, steps, guidance, seed, progress)()
    return recorded.calls
