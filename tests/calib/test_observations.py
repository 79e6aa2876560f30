"""Observations recorded once calibrate several recipes: the same ranges as sampling again, and refused when they
were made for other settings, prompts or another U-Net."""

import logging

import pytest
import torch

from diffusia import load_pipeline
from diffusia.calib.observations import Observations
from diffusia.config import Recipe, Rule, get_preset
from diffusia.errors import DiffusiaError
from diffusia.prompts import load_prompts, take
from diffusia.quant import api
from diffusia.quant.pipeline import quantize_pipeline

STEPS, SIZE = 2, 3


@pytest.fixture(scope="module")
def prompts():
    return load_prompts("calibration", "tiny")


def _ranges(pipe) -> dict[str, torch.Tensor]:
    return {n: m.act_range.clone() for n, m in api.observers(pipe.unet).items()}  # layers and int8 attention


def _quantize(folder, recipe, prompts, observations=None, **kw):
    pipe = load_pipeline(folder, progress=False)
    args = dict(calib_size=SIZE, steps=STEPS, progress=False, validate=False, batch=2)
    return quantize_pipeline(pipe, recipe, prompts, **{**args, **kw}, observations=observations)


def _record(folder, recipe, prompts, **kw):
    pipe = load_pipeline(folder, progress=False)
    args = dict(steps=STEPS, guidance=7.5, batch=2, progress=False)
    return Observations.record(pipe, recipe, take(prompts, SIZE), **{**args, **kw})


@pytest.mark.parametrize(
    "recipe",
    [
        Recipe(name="pct"),
        Recipe(name="mse-groups", calibrator="mse", timestep_groups=2),
        Recipe(name="minmax-subset", calibrator="minmax", rules=[Rule("*attn*", "fp32")]),
        Recipe(name="attn8-groups", timestep_groups=2, attention="int8"),
    ],
    ids=lambda r: r.name,
)
def test_shared_ranges_equal_sampling_again(micro_pipeline_dir, prompts, recipe):
    shared = _record(micro_pipeline_dir, recipe, prompts)
    live, adopted = (_quantize(micro_pipeline_dir, recipe, prompts, obs) for obs in (None, shared))
    expected, got = _ranges(live), _ranges(adopted)
    assert expected and got.keys() == expected.keys()
    assert any(".processor." in n for n in expected) == (recipe.attention == "int8")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    info, live_info = adopted.diffusia_calibration, live.diffusia_calibration
    assert info.shared and not live_info.shared
    assert (info.size, info.unet_calls, info.prompts) == (live_info.size, live_info.unet_calls, live_info.prompts)


def test_one_sampling_serves_every_recipe(micro_pipeline_dir, prompts, monkeypatch):
    """The presets of a study (kept layers stored in fp16) from one pass, without sampling again: ranges within
    the fp16 rounding of the kept weights of sampling each one."""
    shared = _record(micro_pipeline_dir, get_preset("w8a8"), prompts)
    with monkeypatch.context() as m:
        m.setattr("diffusia.quant.pipeline.sampling_forward_loop", lambda *a, **k: pytest.fail("sampled again"))
        adopted = {p: _ranges(_quantize(micro_pipeline_dir, p, prompts, shared)) for p in ("w8a8", "mixed")}
    for preset, got in adopted.items():
        expected = _ranges(_quantize(micro_pipeline_dir, preset, prompts))
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            dict(recipe=Recipe(name="pct", percentile=99.0)),
            "calibrator settings percentile=99.9, this calibration percentile=99.0",
        ),
        (dict(calib_size=SIZE - 1), f"sampling prompts={SIZE} prompts, this calibration prompts={SIZE - 1} prompts"),
        (dict(steps=STEPS + 1), f"sampling steps={STEPS}, this calibration steps={STEPS + 1}"),
        (dict(batch=1), "sampling batch=2, this calibration batch=1"),
        (dict(other_unet=True), "another U-Net"),
    ],
    ids=lambda x: x if isinstance(x, str) else next(iter(x)),
)
def test_mismatched_observations_sample_again(micro_pipeline_dir, prompts, tmp_path, caplog, change, reason):
    shared = _record(micro_pipeline_dir, Recipe(name="pct"), prompts)
    folder = micro_pipeline_dir
    if change.pop("other_unet", False):
        pipe = load_pipeline(micro_pipeline_dir, progress=False)
        with torch.no_grad():
            next(pipe.unet.parameters()).mul_(1.5)
        pipe.save_pretrained(tmp_path / "other", safe_serialization=True)
        folder = tmp_path / "other"
    recipe = change.pop("recipe", Recipe(name="pct"))
    with caplog.at_level(logging.INFO, logger="diffusia.quant.pipeline"):
        pipe = _quantize(folder, recipe, prompts, shared, **change)
    assert not pipe.diffusia_calibration.shared and pipe.diffusia_calibration.unet_calls > 0
    assert "calibrating pct by sampling: the shared observations" in caplog.text and reason in caplog.text


def test_unobserved_layers_are_an_error(micro_pipeline_dir, prompts):
    shared = _record(micro_pipeline_dir, Recipe(name="pct"), prompts)
    pipe = load_pipeline(micro_pipeline_dir, progress=False)
    api.quantize(pipe.unet, Recipe(name="pct"))
    layers = dict(shared.layers)
    name = next(n for n, m in api.qmodules(pipe.unet).items() if m.spec.act_digits)
    del layers[name]
    with pytest.raises(DiffusiaError, match=rf"1 W8A8 quantizer\(s\) were not observed \(e.g. '{name}'\)"):
        api.calibrate_from(pipe.unet, layers)
