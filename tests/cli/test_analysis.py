"""The analysis commands end to end on small inputs (no model run): search, pareto, recommend."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from diffusia.cli import app
from diffusia.config import Recipe
from diffusia.errors import DiffusiaError
from diffusia.quant.policy import plan
from tests.analysis._support import fake_sensitivity, micro_unet

runner = CliRunner()


def test_search_writes_a_recipe_quantize_accepts(tmp_path):
    unet = micro_unet()
    sens_dir = tmp_path / "sens"
    sens_dir.mkdir()
    (sens_dir / "sensitivity.json").write_text(json.dumps(fake_sensitivity(unet)))
    out = tmp_path / "recipe.json"
    res = runner.invoke(app, ["search", "--sensitivity", str(sens_dir), "--budget-mb", "2.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "SIMULATED" in res.output
    recipe = Recipe.from_json(out.read_text())
    assert any(p != "keep" for p in plan(unet, recipe).values())
    summary = json.loads((tmp_path / "recipe.search.json").read_text())
    assert summary["size_mb"] <= 2.5 and summary["simulated"] is True
    from diffusia.config import load_recipe

    assert load_recipe(str(out)).rules == recipe.rules  # what `diffusia quantize --recipe` does


def test_search_with_a_latency_limit_plans_second_digits(tmp_path):
    unet = micro_unet()
    sens = tmp_path / "sensitivity.json"
    sens.write_text(json.dumps(fake_sensitivity(unet)))
    args = ["search", "--sensitivity", str(sens), "--budget-mb", "1.0", "--out", str(tmp_path / "r.json")]
    res = runner.invoke(app, [*args, "--latency-s", "100"])
    assert res.exit_code == 0, res.output
    assert "w8a8x2" in {r.precision for r in Recipe.from_json((tmp_path / "r.json").read_text()).rules}
    res = runner.invoke(app, [*args, "--precisions", "w8a8,w8a8x2,keep", "--overwrite"])
    assert isinstance(res.exception, DiffusiaError) and "add --latency-s" in str(res.exception)  # main(): one line


def test_pareto_and_recommend(tmp_path):
    run = {
        "device": "cpu",
        "variants": [
            {
                "name": "fp32",
                "precision": "fp32",
                "size_mb": 10,
                "peak_mb": 300,
                "latency_s": 1.0,
                "lpips": 0.0,
                "ssim": 1.0,
            },
            {
                "name": "w8a8",
                "precision": "w8a8",
                "size_mb": 3,
                "peak_mb": 200,
                "latency_s": 0.7,
                "lpips": 0.05,
                "ssim": 0.95,
            },
            {
                "name": "w4a4",
                "simulated": True,
                "size_mb": 2,
                "peak_mb": 50,
                "latency_s": 0.1,
                "lpips": 0.2,
                "ssim": 0.8,
            },
        ],
    }
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(run))
    res = runner.invoke(app, ["pareto", "--results", str(tmp_path / "run"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "latency_s x lpips: fp32, w8a8" in res.output
    assert (tmp_path / "p" / "pareto.md").is_file()
    res = runner.invoke(app, ["recommend", "--memory-mb", "250", "--results", str(tmp_path / "run"), "--report"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "w8a8"
    assert "Device report" in res.output
    res = runner.invoke(app, ["recommend", "--memory-mb", "100", "--results", str(tmp_path / "run")])
    assert res.output.splitlines()[0] == "none" and "No measured variant fits" in res.output
