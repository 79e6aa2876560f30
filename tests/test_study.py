"""A --quick study end to end on the micro pipeline: every stage runs and the report holds every section."""

import json

import pytest

from diffusia.study import StudyConfig, _quantizing_variants, run_study


def test_quick_study_writes_full_report(micro_pipeline_dir, tmp_path):
    """With `study --activations int8`, the path with more moving parts (recipe files as variants)."""
    activations = "int8"
    cfg = StudyConfig.quick_config(str(micro_pipeline_dir), str(tmp_path / "study"))
    cfg.activations = activations
    report = run_study(cfg)
    text = report.read_text()
    for section in ("Layer sensitivity (SIMULATED", "Pareto fronts", "Recommendations by device class"):
        assert section in text
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert len(study["variants"]) == 9
    results = json.loads((tmp_path / "study" / "eval" / "results.json").read_text())
    assert len(results["variants"]) == 9
    html = (tmp_path / "study" / "report.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html
    assert (tmp_path / "study" / "searched_recipe.json").is_file()
    # the W8A8 variants took their ranges from one sampling pass of the calibration prompts, with the study's
    # activations (study --activations int8: recipe files, so the variants are labelled w8a8-int8 and mixed-int8)
    suffix = "-int8"
    for folder in (f"eval/variants/w8a8{suffix}", f"eval/variants/mixed{suffix}", "sources/searched"):
        meta = json.loads((tmp_path / "study" / folder / "diffusia.json").read_text())
        assert meta["calibration"]["shared"] and meta["calibration"]["size"] == cfg.calib_size, folder
        assert meta["recipe"]["activations"] == activations, folder
    qat = json.loads((tmp_path / "study" / f"sources/w8a8-qat{suffix}" / "diffusia.json").read_text())
    assert qat["recipe"]["activations"] == activations
    assert study["timings"]["observe_s"] > 0


@pytest.mark.parametrize("activations", ["auto", "uint7", "int8", "balanced"])
def test_quantizing_variants_carry_the_activations(tmp_path, activations):
    from diffusia.config import load_recipe

    cfg = StudyConfig(out=str(tmp_path), activations=activations)
    variants = _quantizing_variants(cfg, tmp_path)
    if activations == "auto":  # the presets by name, labelled w8a8 and mixed in the report
        assert variants == {"w8a8": "w8a8", "mixed": "mixed"}
        return
    for preset, path in variants.items():
        assert path.endswith(f"{preset}-{activations}.json")
        recipe = load_recipe(path)
        assert recipe.activations == activations
        assert recipe.replace(activations="auto") == load_recipe(preset)
