"""Latency at batch 1: warm-up, then timed end-to-end images (text encoding, all denoising steps, VAE decode),
with device synchronisation; per-component times (U-Net step, text encoder, VAE decoder) from forward hooks.

On a shared machine a mean of sequential runs is not a latency: one slow run moves it, and a load spike during one
variant's runs favours the others. So the headline is the median with the interquartile range, variants are timed
in interleaved rounds in one process (`measure_interleaved`: every round times one image of each variant, in a
rotating order), the load average is recorded, and `measurably_faster` calls a difference real only when the
interquartile ranges do not overlap."""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

log = logging.getLogger(__name__)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work so wall-clock times are real (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def stats(values: list[float]) -> dict[str, float | int]:
    """median, quartiles q1/q3 and their range iqr (NaN under 3 values), mean, sample std (0 for one value), min,
    max and n."""
    n = len(values)
    if n == 0:
        return {k: math.nan for k in ("median", "q1", "q3", "iqr", "mean", "std", "min", "max")} | {"n": 0}
    median = statistics.median(values)
    # fewer than 3 runs have no spread to speak of: no quartiles, so no speedup can be claimed from them
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if n >= 3 else [math.nan] * 3
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if n > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": n,
    }


def measurably_faster(a: dict[str, float], b: dict[str, float]) -> bool:
    """True if timing stats `a` are faster than `b` beyond their spread: a's third quartile below b's first."""
    return a.get("n", 0) >= 3 and b.get("n", 0) >= 3 and a["q3"] < b["q1"]


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


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
    """The modules timed separately: U-Net, text encoder(s) (SDXL has two), VAE decoder (those the pipeline has)."""
    out = {
        "unet": pipe.unet,
        "text_encoder": getattr(pipe, "text_encoder", None),
        "text_encoder_2": getattr(pipe, "text_encoder_2", None),
    }
    vae = getattr(pipe, "vae", None)
    out["vae_decode"] = getattr(vae, "decoder", None)
    return {k: v for k, v in out.items() if isinstance(v, torch.nn.Module)}


def measure_latency(pipe, prompt: str, config, runs: int = 10, warmup: int = 1) -> dict[str, Any]:
    """Seconds per image at batch 1 over `runs` timed images after `warmup` untimed ones (same prompt and seed).

    Returns `end_to_end` stats, per-image totals of each component, `unet_step` stats over every U-Net call,
    images/hour (from the median), device, torch thread count and the load average before and after.
    """
    return measure_interleaved({"variant": pipe}, prompt, config, runs, warmup)["variant"]


def measure_interleaved(
    pipes: dict[str, Any], prompt: str, config, runs: int = 10, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """`measure_latency` of several pipelines in one process, interleaved: `runs` rounds, each timing one image
    of every pipeline, the order rotated by one each round, so a load spike hits all of them alike."""
    from diffusia.generate import generate

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    names = list(pipes)
    for name in names:
        for _ in range(warmup):
            generate(pipes[name], prompt, 1, config, progress=False, output_type="np")
    totals: dict[str, list[float]] = {n: [] for n in names}
    per_image: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    timers = {n: HookTimer(components(p), p._execution_device) for n, p in pipes.items()}
    load_before = load_average()
    try:
        for t in timers.values():
            t.enabled = True
        for r in range(runs):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                pipe, timer = pipes[name], timers[name]
                before = {k: len(v) for k, v in timer.calls.items()}
                synchronize(pipe._execution_device)
                t0 = time.perf_counter()
                generate(pipe, prompt, 1, config, progress=False, output_type="np")
                synchronize(pipe._execution_device)
                totals[name].append(time.perf_counter() - t0)
                for k, v in timer.calls.items():
                    per_image[name].setdefault(k, []).append(sum(v[before[k] :]))
    finally:
        for t in timers.values():
            t.remove()
    load_after = load_average()
    out = {}
    for name in names:
        end_to_end = stats(totals[name])
        unet_calls = list(timers[name].calls.get("unet", []))
        out[name] = {
            "end_to_end": end_to_end,
            "components_per_image": {k: stats(v) for k, v in per_image[name].items()},
            "unet_step": stats(unet_calls),
            "unet_calls_per_image": len(unet_calls) / runs,
            "images_per_hour": 3600.0 / end_to_end["median"] if end_to_end["median"] > 0 else math.nan,
            "runs": runs,
            "warmup": warmup,
            "batch_size": 1,
            "prompt": prompt,
            "seed": config.seed,
            "device": str(pipes[name]._execution_device),
            "torch_threads": torch.get_num_threads(),
            "interleaved_with": [n for n in names if n != name],
            "load_average": [load_before, load_after],
        }
    return out
