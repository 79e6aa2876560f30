"""`diffusia quantize` options that override the recipe end up in the saved recipe."""

from __future__ import annotations

import json

from tests._cli_support import diffusia


def test_recipe_overrides_are_saved(micro_pipeline_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "q"
    args = ["--model", micro_pipeline_dir, "--calib-prompts", "tiny", "--calib-size", "1", "--calib-steps", "1"]
    overrides = ["--calibrator", "mse", "--target", "portable", "--timestep-groups", "2", "--activations", "int8"]
    overrides += ["--attention", "int8"]
    code, err = diffusia(monkeypatch, capsys, "quantize", *args, "--recipe", "w8a8", *overrides, "--out", out)
    assert code == 0, err
    recipe = json.loads((out / "diffusia.json").read_text())["recipe"]
    assert (recipe["name"], recipe["calibrator"], recipe["target"], recipe["timestep_groups"]) == (
        "w8a8",
        "mse",
        "portable",
        2,
    )
    assert (recipe["activations"], recipe["attention"]) == ("int8", "int8")
    from diffusia import load_pipeline
    from diffusia.quant import attention

    processors = attention.processors(load_pipeline(out, progress=False).unet)  # the folder loads with its ranges
    assert processors and all(p.probs.mode == "real" and p.probs.calibrated for p in processors.values())
