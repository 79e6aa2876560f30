"""benchmarks/x2_layer_gain.py: the rule of a plan puts exactly its layers in two digits (nothing is timed here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_x2_layer_gain", BENCH / "x2_layer_gain.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_plan_rule_puts_exactly_its_layers_in_two_digits(monkeypatch):
    from diffusers import UNet2DConditionModel

    from diffusia.config import load_recipe
    from diffusia.quant import api
    from tests.conftest import MICRO_UNET

    gain = _module(monkeypatch)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**MICRO_UNET).eval()
    chosen = ["down_blocks.0.attentions.0.proj_in", "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]
    plan = api.quantize(unet, load_recipe("w8a8", rules=[gain.rule_for(chosen)]))
    # the dots are literal and the names whole: proj_in's rule does not take proj_out or another block's proj_in
    assert sorted(n for n, p in plan.items() if p == "w8a8x2") == sorted(chosen)
    assert sum(p == "w8a8" for p in plan.values()) > 10
