"""Latency at batch 1: warm-up, then timed end-to-end images (text encoding, all denoising steps, VAE decode),
with device synchronisation; per-component times (U-Net step, text encoder, VAE decoder) from forward hooks."""
from __future__ import annotations

import logging
import math
import statistics
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

log = logging.getLogger(__name__)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work so wall-clock times are real (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def stats(values: list[float]) -> dict[str, float | int]:
    """mean, sample std (0 for one value), min, max and n of a list of seconds."""
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else 0.0,
            "min": min(values), "max": max(values), "n": n}


class HookTimer:
    """Wall time of every forward call of some modules (synchronising the device around each call)."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device | str):
        self.device = device
        self.calls: dict[str, list[float]] = {name: [] for name in modules}
        self._start: dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        self.enabled = False

    def _pre(self, name: str):
        def hook(*_):
            if self.enabled:
                synchronize(self.device)
                self._start[name] = time.perf_counter()
        return hook

    def _post(self, name: str):
        def hook(*_):
            if self.enabled and name in self._start:
                synchronize(self.device)
                self.calls[name].append(time.perf_counter() - self._start.pop(name))
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@contextmanager
def hook_timer(modules: dict[str, torch.nn.Module], device) -> Iterator[HookTimer]:
    timer = HookTimer(modules, device)
    try:
        yield timer
    finally:
        timer.remove()


def components(pipe) -> dict[str, torch.nn.Module]:
    """The modules timed separately: U-Net, text encoder, VAE decoder (those the pipeline has)."""
    out = {"unet": pipe.unet, "text_encoder": getattr(pipe, "text_encoder", None)}
    vae = getattr(pipe, "vae", None)
    out["vae_decode"] = getattr(vae, "decoder", None)
    return {k: v for k, v in out.items() if isinstance(v, torch.nn.Module)}


def measure_latency(pipe, prompt: str, config, runs: int = 10, warmup: int = 1) -> dict[str, Any]:
    """Seconds per image at batch 1 over `runs` timed images after `warmup` untimed ones (same prompt and seed).

    Returns `end_to_end` stats, per-image totals of each component, `unet_step` stats over every U-Net call,
    images/hour, device and torch thread count.
    """
    from diffusia.generate import generate

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    device = pipe._execution_device
    for _ in range(warmup):
        generate(pipe, prompt, 1, config, progress=False, output_type="np")
    totals: list[float] = []
    per_image: dict[str, list[float]] = {}
    with hook_timer(components(pipe), device) as timer:
        timer.enabled = True
        for _ in range(runs):
            before = {k: len(v) for k, v in timer.calls.items()}
            synchronize(device)
            t0 = time.perf_counter()
            generate(pipe, prompt, 1, config, progress=False, output_type="np")
            synchronize(device)
            totals.append(time.perf_counter() - t0)
            for k, v in timer.calls.items():
                per_image.setdefault(k, []).append(sum(v[before[k]:]))
        unet_calls = list(timer.calls.get("unet", []))
    end_to_end = stats(totals)
    return {
        "end_to_end": end_to_end,
        "components_per_image": {k: stats(v) for k, v in per_image.items()},
        "unet_step": stats(unet_calls),
        "unet_calls_per_image": len(unet_calls) / runs,
        "images_per_hour": 3600.0 / end_to_end["mean"] if end_to_end["mean"] > 0 else math.nan,
        "runs": runs, "warmup": warmup, "batch_size": 1, "prompt": prompt, "seed": config.seed,
        "device": str(device), "torch_threads": torch.get_num_threads(),
    }
