"""`diffusia quantize` options that override the recipe end up in the saved recipe."""

from __future__ import annotations

import json

import pytest

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


def test_openvino_export_carries_the_vae_decoder(micro_pipeline_dir, tmp_path, monkeypatch, capsys):
    """`diffusia export --format openvino` writes what a runtime folder holds: the U-Net graphs and the decoder."""
    pytest.importorskip("openvino")
    quantized, out = tmp_path / "q", tmp_path / "ov"
    args = ["--model", micro_pipeline_dir, "--calib-prompts", "tiny", "--calib-size", "1", "--calib-steps", "1"]
    code, err = diffusia(monkeypatch, capsys, "quantize", *args, "--out", quantized)
    assert code == 0, err
    code, err = diffusia(monkeypatch, capsys, "export", "--model", quantized, "--format", "openvino", "--out", out)
    assert code == 0, err
    manifest = json.loads((out / "runtime.json").read_text())
    assert manifest["vae_decoder"]["file"] == "vae_decoder.xml" and (out / "vae_decoder.xml").is_file()
    assert manifest["vae_decoder"]["relative_l2"] <= 1e-3
