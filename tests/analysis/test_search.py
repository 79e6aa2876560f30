"""Mixed-precision search: budgets respected, monotone in the budget, recipes that load and plan."""

from __future__ import annotations

import pytest
import torch

from diffusia.analysis.search import DEFAULT_PRECISIONS, MB, search, search_recipe
from diffusia.config import Recipe
from diffusia.errors import DiffusiaError
from diffusia.quant import api
from diffusia.quant.policy import plan
from tests.analysis._support import fake_sensitivity, micro_unet


@pytest.fixture(scope="module")
def unet():
    return micro_unet()


@pytest.fixture(scope="module")
def sens(unet):
    return fake_sensitivity(unet)


def _range(sens):
    lo = search(sens, quality_floor_db=-150).size_mb  # everything as small as possible
    return lo, search(sens, budget_mb=1e9).size_mb


@pytest.mark.parametrize("method", ["greedy", "milp", "auto"])
def test_budget_respected_and_monotone(sens, method):
    lo, hi = _range(sens)
    assert lo < hi
    budgets = [lo + (hi - lo) * f for f in (0.0, 0.05, 0.15, 0.3, 0.5, 0.75, 1.0)]
    quality = []
    for b in budgets:
        res = search(sens, budget_mb=b, method=method)
        assert res.size_mb <= b * (1 + 1e-9)
        quality.append(res.est_sqnr_db)
        assert res.simulated
    assert all(q2 >= q1 - 1e-9 for q1, q2 in zip(quality, quality[1:])), quality
    assert quality[-1] > quality[0]


def test_milp_not_worse_than_greedy(sens):
    lo, hi = _range(sens)
    for f in (0.1, 0.4, 0.7):
        b = lo + (hi - lo) * f
        exact, greedy = search(sens, budget_mb=b, method="milp"), search(sens, budget_mb=b, method="greedy")
        assert exact.est_sqnr_db >= greedy.est_sqnr_db - 1e-6


def test_quality_floor_and_latency(sens):
    res = search(sens, quality_floor_db=30)
    assert res.est_sqnr_db >= 30 - 1e-9
    tighter = search(sens, quality_floor_db=40)
    assert tighter.size_mb >= res.size_mb
    fp32_s = sens["timing"]["image_s_fp32"]
    fast = search(sens, budget_mb=1e9, latency_s=fp32_s * 0.999)
    assert fast.est_latency_s <= fp32_s * 0.999
    with pytest.raises(DiffusiaError, match="no per-layer plan"):
        search(sens, budget_mb=_range(sens)[0] * 0.5)
    with pytest.raises(DiffusiaError, match="target"):
        search(sens)


def test_w8a8x2_is_a_choice_under_a_latency_limit(sens):
    lo, hi = _range(sens)
    budget = lo + (hi - lo) * 0.3
    assert "w8a8x2" not in search(sens, budget_mb=budget).counts  # without a latency model it is not offered
    with pytest.raises(DiffusiaError, match="latency"):
        search(sens, budget_mb=budget, precisions=("w8a8", "w8a8x2"))
    fp32_s = sens["timing"]["image_s_fp32"]
    loose = search(sens, budget_mb=budget, latency_s=fp32_s * 10, method="milp")
    without = search(sens, budget_mb=budget, latency_s=fp32_s * 10, method="milp", precisions=DEFAULT_PRECISIONS)
    assert loose.counts.get("w8a8x2", 0) > 0 and "w8a8x2" not in without.counts
    assert loose.est_sqnr_db > without.est_sqnr_db and loose.size_mb <= budget * (1 + 1e-9)
    q = micro_unet()  # the plan quantizes onto real two-digit kernels
    api.quantize(q, loose.recipe)
    x, t, ehs = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.randn(2, 7, 32)
    with api.calibrate(q):
        q(x, t, ehs)
    api.freeze(q)
    x2 = [m for m in api.qmodules(q).values() if m.precision == "w8a8x2"]
    assert len(x2) == loose.counts["w8a8x2"] and all(m.settings.calibrator == "minmax" for m in x2)
    assert torch.isfinite(q(x, t, ehs).sample).all()
    # a tighter limit: another plan, within it, and no better
    tight = search(sens, budget_mb=budget, latency_s=loose.est_latency_s * 0.995, method="milp")
    assert tight.est_latency_s <= loose.est_latency_s * 0.995 and tight.choices != loose.choices
    assert tight.est_sqnr_db <= loose.est_sqnr_db + 1e-6


def test_precisions_the_sensitivity_run_did_not_simulate(sens):
    old = {
        **sens,
        "layers": [
            {
                **r,
                "sqnr_only_db_by_precision": {k: v for k, v in r["sqnr_only_db_by_precision"].items() if k != "w8a8x2"},
            }
            for r in sens["layers"]
        ],
    }
    fp32_s = sens["timing"]["image_s_fp32"]
    assert "w8a8x2" not in search(old, budget_mb=1e9, latency_s=fp32_s).counts  # default: skipped
    with pytest.raises(DiffusiaError, match="did not simulate w8a8x2"):
        search(old, budget_mb=1e9, latency_s=fp32_s, precisions=("w8a8", "w8a8x2", "keep"))
    with pytest.raises(DiffusiaError, match="not searchable"):
        search(sens, budget_mb=1e9, precisions=("w8a8", "int3"))


def test_recipe_loads_and_plans_on_the_unet(unet, sens, tmp_path):
    lo, hi = _range(sens)
    res = search(sens, budget_mb=(lo + hi) / 2)
    path = tmp_path / "recipe.json"
    path.write_text(res.recipe.to_json())
    recipe = Recipe.from_json(path.read_text())
    layer_plan = plan(unet, recipe)
    for name, precision in res.choices.items():
        assert layer_plan[name] == precision
    assert {p for n, p in layer_plan.items() if n not in res.choices} == {"keep"}
    assert len(set(res.choices.values())) > 1  # a real mix
    # and the quantizer takes it: quantize, calibrate, freeze onto real kernels, finite output
    q = micro_unet()
    api.quantize(q, recipe)
    x, t, ehs = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.randn(2, 7, 32)
    with api.calibrate(q):
        q(x, t, ehs)
    api.freeze(q)
    assert {m.precision for m in api.qmodules(q).values()} == set(res.choices.values()) - {"keep"}
    assert torch.isfinite(q(x, t, ehs).sample).all()
    assert isinstance(search_recipe(sens, budget_mb=hi), Recipe)
    # the size estimate is the bytes of the plan: FP32 size when everything is kept
    assert search(sens, budget_mb=1e9).size_mb == pytest.approx(sens["unet"]["total_bytes"] / MB)
