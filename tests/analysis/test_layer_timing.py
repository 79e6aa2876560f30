"""The per-layer latency microbenchmark: every precision's frozen kernel runs from one calibrated W8A8 layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusia.analysis.layer_timing import time_layer
from diffusia.config import get_preset
from diffusia.quant import api
from diffusia.quant.modules import qclass_for


@pytest.mark.parametrize("cpu_class", ["vnni", "avx2"])  # avx2: w8a8x2's 7-bit digits, w8a8's 8-bit range
def test_every_precision_is_timed_from_one_calibrated_layer(cpu_class):
    torch.manual_seed(0)
    layer = nn.Linear(32, 16)
    recipe = get_preset("w8a8")
    calibrated = qclass_for(layer).from_module(layer, api.layer_settings("w8a8", recipe, cpu_class), None)
    calibrated.set_mode("calibrate")
    calibrated(torch.randn(4, 32) - 0.5)
    calibrated.compute_ranges()
    settings = {p: api.layer_settings(p, recipe, cpu_class) for p in ("w8a8", "w8a8x2", "w8", "w4")}
    times = time_layer(layer, calibrated, (2, 8, 32), settings, reps=2)
    assert set(times) == {"keep", *settings} and all(t > 0 for t in times.values())
