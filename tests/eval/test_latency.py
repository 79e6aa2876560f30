"""Latency: statistics, run counts, U-Net step timing by hooks, hooks removed afterwards."""
from __future__ import annotations

import math

import pytest

from diffusia.eval.latency import measure_latency, stats
from diffusia.generate import GenerationConfig


def test_stats_on_hand_made_numbers():
    s = stats([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert s["min"] == 1.0 and s["max"] == 3.0
    assert stats([0.5])["std"] == 0.0
    assert stats([])["n"] == 0 and math.isnan(stats([])["mean"])


def test_measure_latency_counts_runs_and_steps(micro_pipe):
    cfg = GenerationConfig(steps=2, height=32, width=32)
    lat = measure_latency(micro_pipe, "a red bag", cfg, runs=3, warmup=1)
    e2e = lat["end_to_end"]
    assert e2e["n"] == 3 and e2e["mean"] > 0 and e2e["std"] >= 0
    assert lat["unet_step"]["n"] == 3 * 2  # one U-Net call per step (both guidance branches in one batch)
    assert lat["unet_calls_per_image"] == 2
    comp = lat["components_per_image"]
    assert set(comp) == {"unet", "text_encoder", "vae_decode"}
    parts = sum(c["mean"] for c in comp.values())
    assert 0 < parts <= e2e["mean"] * 1.01
    assert lat["images_per_hour"] == pytest.approx(3600 / e2e["mean"])
    assert lat["device"] == "cpu" and lat["torch_threads"] >= 1
    assert not micro_pipe.unet._forward_hooks and not micro_pipe.unet._forward_pre_hooks


def test_runs_must_be_positive(micro_pipe):
    with pytest.raises(ValueError):
        measure_latency(micro_pipe, "a bag", GenerationConfig(steps=1), runs=0)
