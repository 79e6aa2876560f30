"""Sensitivity on the micro pipeline: runs, covers every quantizable layer, finite SQNRs, sane ordering, outputs;
and a search over the real result gives a recipe that plans on the pipeline's U-Net."""

from __future__ import annotations

import json
import math

import pytest
import torch

from diffusia import load_pipeline
from diffusia.analysis.search import search
from diffusia.analysis.sensitivity import run_sensitivity
from diffusia.analysis.sensitivity_report import load_sensitivity, write_sensitivity
from diffusia.config import Recipe, get_preset
from diffusia.prompts import Prompt
from diffusia.quant import api
from diffusia.quant.policy import default_plan, plan

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def result(micro_pipeline_dir):
    pipe = load_pipeline(micro_pipeline_dir, progress=False)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    sens = run_sensitivity(
        pipe,
        get_preset("w8a8"),
        [Prompt("a red sneaker")],
        steps=3,
        top=2,
        lpips_prompts=["a blue bag"],
        lpips_steps=2,
        eval_timesteps=2,
        precisions=("w8a8", "w8a8x2", "w8", "w4"),
        timing=True,
        timing_reps=1,
        progress=False,
    )
    return pipe, before, sens


def test_every_quantizable_layer_finite_and_ordered(result):
    pipe, before, sens = result
    expected = {n for n, p in default_plan(pipe.unet, "w8a8").items() if p == "w8a8"}
    rows = sens["layers"]
    assert {r["name"] for r in rows} == expected
    assert sens["simulated"] is True and "SIMULATED" in sens["note"]
    for r in rows:
        assert math.isfinite(r["sqnr_only_db"]) and math.isfinite(r["sqnr_all_but_db"])
        assert set(r["sqnr_only_db_by_precision"]) == {"w8a8", "w8a8x2", "w8", "w4"}
        assert set(r["time_s"]) == {"keep", "w8a8", "w8a8x2", "w8", "w4"}
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["sqnr_only_db"] <= b["sqnr_only_db"] for a, b in zip(rows, rows[1:]))
    # quantizing everything is worse than quantizing one layer, for (nearly) every layer
    assert math.isfinite(sens["sqnr_all_db"])
    assert sum(sens["sqnr_all_db"] <= r["sqnr_only_db"] for r in rows) >= 0.9 * len(rows)
    # the second activation digit (on a min-max range) takes the activations' noise away: the weights' is left
    for r in rows:
        by_p = r["sqnr_only_db_by_precision"]
        assert by_p["w8a8x2"] > by_p["w8a8"] and by_p["w8a8x2"] == pytest.approx(by_p["w8"], abs=0.5)
    # w4 alone is noisier than w8a8 alone for most layers
    assert sum(r["sqnr_only_db_by_precision"]["w4"] < r["sqnr_only_db"] for r in rows) >= 0.8 * len(rows)
    # top-k LPIPS only, images labelled simulated
    assert [r["lpips_only"] is not None for r in rows[:3]] == [True, True, False]
    assert sens["images"]["simulated"] and sens["images"]["lpips_all"] >= 0
    assert {"resnet conv", "attention q/k/v", "feed-forward"} <= set(sens["by_type"])
    assert sens["timing"]["unet_calls_per_image"] == 2


def test_pipeline_is_float_again(result):
    pipe, before, _ = result
    assert not api.qmodules(pipe.unet)
    after = pipe.unet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_outputs_and_search_recipe_plans(result, tmp_path):
    pipe, _, sens = result
    write_sensitivity(sens, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"sensitivity.json", "sensitivity.md", "sensitivity_by_type.png"}
    assert "SIMULATED" in (tmp_path / "sensitivity.md").read_text()
    loaded = load_sensitivity(tmp_path)
    assert loaded["layers"] == json.loads(json.dumps(sens["layers"]))
    full = search(loaded, budget_mb=1e9).size_mb
    res = search(loaded, budget_mb=0.6 * full)
    assert res.size_mb <= 0.6 * full
    recipe = Recipe.from_json(res.recipe.to_json())
    layer_plan = plan(pipe.unet, recipe)
    assert all(layer_plan[n] == p for n, p in res.choices.items())


def test_evaluation_inputs_are_spread_over_each_timestep_and_batched_by_range_group():
    """`samples_per_timestep` keeps evenly spaced rows of each timestep's calls (over prompts and both guidance
    branches), with their text embeddings and added conditioning; `max_timesteps` evenly spaced timesteps; a batch
    mixes timesteps of one activation-range group only."""
    from diffusia.analysis.sensitivity import evaluation_batches
    from diffusia.calib.forward_loop import UnetCall

    def call(t: int, first: int) -> UnetCall:
        rows = torch.arange(first, first + 4, dtype=torch.float32) + t
        added = {"text_embeds": rows.view(4, 1).repeat(1, 3), "time_ids": rows.view(4, 1).repeat(1, 6)}
        return UnetCall(rows.view(4, 1, 1, 1), torch.tensor(t), rows.view(4, 1, 1).repeat(1, 2, 5), added)

    calls = [call(t, first) for t in (900, 600, 100) for first in (0, 4)]  # two calls of 4 rows per timestep
    kept = [900, 904, 907, 100, 104, 107]  # first, middle and last of each end timestep's 8 rows: both calls
    one_group = evaluation_batches(calls, max_timesteps=2, max_batch=4, samples_per_timestep=3)
    assert [b.sample.flatten().tolist() for b in one_group] == [kept[:4], kept[4:]]
    assert [b.timestep.tolist() for b in one_group] == [[900] * 3 + [100], [100] * 2]
    two_groups = evaluation_batches(calls, 2, 4, 3, group_of=lambda t: int(t < 500))
    assert [b.sample.flatten().tolist() for b in two_groups] == [kept[:3], kept[3:]]
    for b in one_group + two_groups:
        rows = b.sample.flatten()
        assert torch.equal(b.encoder_hidden_states[:, 0, 0], rows)
        assert torch.equal(b.added["text_embeds"][:, 0], rows) and torch.equal(b.added["time_ids"][:, 5], rows)
    every = evaluation_batches(calls, max_batch=16)
    assert [len(b.sample) for b in every] == [16, 8] and every[0].timestep.tolist() == [900] * 8 + [600] * 8
