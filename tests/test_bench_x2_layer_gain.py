"""benchmarks/x2_layer_gain.py: the rule of a plan puts exactly its layers in two digits (nothing is timed here)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
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


def _micro_run(monkeypatch, gain, target, start="w8a8x2"):
    """`gain.run` on the micro U-Net (its inputs in place of sd15-arch's); layer costs from the precision and the
    input's channels instead of timings, so the ranking is deterministic."""
    from diffusers import UNet2DConditionModel

    from tests.conftest import MICRO_UNET

    def micro_input(seed, t, latent):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([t, t]), torch.randn(2, 7, 32, generator=g)

    def make_inputs(model, latent, n_calib, work):
        calib = [micro_input(100 + i, 999 - 250 * i, latent) for i in range(n_calib)]
        torch.save({"calib": calib, "timed": micro_input(7, 500, latent)}, work / "inputs.pt")

    def load_unet(model, work):
        torch.manual_seed(0)
        return UNet2DConditionModel(**MICRO_UNET).eval()

    monkeypatch.setattr(gain.backends, "make_inputs", make_inputs)
    monkeypatch.setattr(gain.backends, "load_unet", load_unet)
    monkeypatch.setattr(gain.backends, "gaussian_input", micro_input)
    monkeypatch.setattr(gain, "_ms", lambda module, shape: 0.1 * module.precision.count("x2") + 0.01 * shape[1])
    return gain.run(8, target, threads=1, start=start), load_unet("sd15-arch", None), micro_input


@pytest.mark.parametrize("start", ["w8a8x2", "w8a8"])
def test_a_plan_measures_what_its_recipe_file_gives(monkeypatch, tmp_path, start):
    from diffusia.config import load_recipe
    from diffusia.quant import api
    from diffusia.quant.policy import plan

    gain = _module(monkeypatch)
    r, unet, micro_input = _micro_run(monkeypatch, gain, target=1.0, start=start)
    candidates = [n for n, p in plan(unet, load_recipe(start)).items() if p == start]
    assert sorted(x["layer"] for x in r["layers"]) == sorted(candidates)
    ratios = [x["gain"] / max(x["cost_ms"], 0.05) for x in r["layers"]]
    assert ratios == sorted(ratios, reverse=True)
    if start == "w8a8x2":
        # from the whole preset down by STEP_DOWN; with a target every plan meets it runs to the end
        assert [p["k"] for p in r["plans"]] == list(range(len(candidates), 0, -gain.STEP_DOWN))
        assert r["plans"][0]["select_error"] == r["start_select_error"]
        assert r["plan"]["k"] == r["plans"][-1]["k"]
    else:  # growing from W8A8-MSE, the first plan already meets the target
        assert [p["k"] for p in r["plans"]] == [gain.LADDER[0]] == [r["plan"]["k"]]
    # a plan's errors come from swapping modules between two calibrated copies: the recipe file it writes,
    # quantized and calibrated from scratch, gives exactly its layers and the same error (calibration observes the
    # float model)
    gain.write(tmp_path, r)
    recipe = load_recipe(str(tmp_path / "x2_plan_recipe.json"))
    assert (recipe.calibrator, recipe.attention) == ("mse", "float")
    fresh = copy.deepcopy(unet)
    api.quantize(fresh, recipe)
    with api.calibrate(fresh):
        for i in range(4):
            fresh(*micro_input(100 + i, 999 - 250 * i, 8))
    api.freeze(fresh)
    assert sorted(n for n, m in api.qmodules(fresh).items() if m.precision == "w8a8x2") == sorted(r["plan"]["layers"])
    select = [micro_input(s, t, 8) for s, t in gain.SELECTION]
    with torch.no_grad():
        refs = [unet(*x).sample for x in select]
    assert gain._error(fresh, select, refs) == pytest.approx(r["plan"]["select_error"], rel=1e-6)


def test_shrinking_stops_at_the_first_plan_past_the_target(monkeypatch):
    gain = _module(monkeypatch)
    r, _, _ = _micro_run(monkeypatch, gain, target=0.0)
    assert len(r["plans"]) == 1 and r["plan"] is None
    assert "none reached" in gain.render(r)


def test_a_measured_top_k_list_stands_in_for_the_plan(monkeypatch):
    gain = _module(monkeypatch)
    plans = [{"k": k, "layers": [f"l{i}" for i in range(k)], "select_error": 0.1 / k} for k in (5, 10)]
    r = {"plans": plans, "plan": None}
    assert gain.measured_plan(r) is None  # no list reached the target
    top10 = gain.measured_plan(r, 10)
    assert top10["layers"] == plans[1]["layers"] and top10["rule"] == gain.rule_for(plans[1]["layers"])
    with pytest.raises(SystemExit, match=r"no top-7 list .*measured \[5, 10\]"):
        gain.measured_plan(r, 7)


def test_a_result_re_chooses_its_plan_among_the_lists_it_measured(monkeypatch):
    gain = _module(monkeypatch)
    plans = [{"k": k, "layers": [f"l{i}" for i in range(k)], "select_error": e} for k, e in ((5, 0.03), (10, 0.02))]
    r = gain.choose({"plans": plans}, 0.025)
    assert (r["target"], r["plan"]["k"], r["plan"]["rule"]) == (0.025, 10, gain.rule_for(plans[1]["layers"]))
    assert gain.choose(r, 0.03)["plan"]["k"] == 5  # the smallest list within
    assert gain.choose(r, 0.01)["plan"] is None and r["plan"]["k"] == 10  # r itself unchanged
