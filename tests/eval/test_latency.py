"""Latency: statistics, run counts, U-Net step timing by hooks, hooks removed afterwards."""

from __future__ import annotations

import math
import types

import pytest
import torch

from diffusia.eval import latency
from diffusia.eval.latency import measurably_faster, measure_interleaved, measure_latency, stats
from diffusia.generate import GenerationConfig


def test_stats_on_hand_made_numbers():
    s = stats([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert s["min"] == 1.0 and s["max"] == 3.0 and s["median"] == 2.0
    one = stats([0.5])
    assert one["std"] == 0.0 and one["median"] == 0.5 and math.isnan(one["q1"]) and math.isnan(one["iqr"])
    assert math.isnan(stats([1.0, 2.0])["q3"]) and stats([1.0, 2.0])["median"] == 1.5  # no spread from 2 runs
    assert stats([])["n"] == 0 and math.isnan(stats([])["mean"]) and math.isnan(stats([])["median"])


def test_one_slow_run_moves_the_mean_not_the_median():
    # the failure seen in a study on a loaded machine: one ~12 s run among ~2 s runs
    fp32 = stats([2.0, 2.1, 1.9, 2.05, 1.95, 2.0, 12.0, 2.1, 1.9, 2.0])
    fp16 = stats([1.9, 2.0, 2.1, 1.95, 2.05, 2.0, 1.9, 2.1, 2.0, 2.0])
    assert fp32["mean"] / fp16["mean"] > 1.4  # what the mean would have claimed
    assert fp32["median"] == pytest.approx(2.0) and fp32["q3"] < 2.2
    assert not measurably_faster(fp16, fp32) and not measurably_faster(fp32, fp16)


def test_measurably_faster_needs_separated_quartiles():
    fast, slow = stats([1.0, 1.1, 1.05, 0.95, 1.0]), stats([1.5, 1.6, 1.55, 1.45, 1.5])
    assert measurably_faster(fast, slow) and not measurably_faster(slow, fast)
    assert not measurably_faster(stats([1.0]), stats([2.0]))  # one run has no spread: no claim
    assert not measurably_faster(stats([1.0, 1.0]), stats([2.0, 2.0]))


def test_interleaved_rounds_rotate_the_order(monkeypatch):
    calls = []
    monkeypatch.setattr("diffusia.generate.generate", lambda pipe, *a, **k: calls.append(pipe.tag))
    pipes = {t: types.SimpleNamespace(tag=t, _execution_device="cpu", unet=torch.nn.Linear(1, 1)) for t in "abc"}
    res = measure_interleaved(pipes, "a bag", GenerationConfig(steps=1), runs=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")  # warm-ups, then rotating rounds
    assert all(r["end_to_end"]["n"] == 3 for r in res.values())
    assert res["a"]["interleaved_with"] == ["b", "c"] and len(res["a"]["load_average"]) == 2
    assert latency.load_average() is None or len(latency.load_average()) == 3


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
    assert lat["images_per_hour"] == pytest.approx(3600 / e2e["median"])
    assert e2e["q1"] <= e2e["median"] <= e2e["q3"]
    assert lat["device"] == "cpu" and lat["torch_threads"] >= 1
    assert not micro_pipe.unet._forward_hooks and not micro_pipe.unet._forward_pre_hooks


def test_runs_must_be_positive(micro_pipe):
    with pytest.raises(ValueError):
        measure_latency(micro_pipe, "a bag", GenerationConfig(steps=1), runs=0)
