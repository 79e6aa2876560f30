"""A --quick study end to end on the micro pipeline: every stage runs and the report holds every section."""

import json

import pytest

from diffusia.study import StudyConfig, _quantizing_variants, run_study


def test_quick_study_writes_full_report(micro_pipeline_dir, tmp_path):
    """With `study --activations int8 --attention int8`, the path with more moving parts (recipe files as
    variants)."""
    activations = "int8"
    cfg = StudyConfig.quick_config(str(micro_pipeline_dir), str(tmp_path / "study"))
    cfg.activations, cfg.attention = activations, "int8"
    report = run_study(cfg)
    text = report.read_text()
    for section in ("Layer sensitivity (SIMULATED", "Pareto fronts", "Recommendations by device class"):
        assert section in text
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert len(study["variants"]) == 10
    results = json.loads((tmp_path / "study" / "eval" / "results.json").read_text())
    assert len(results["variants"]) == 10
    html = (tmp_path / "study" / "report.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html
    assert (tmp_path / "study" / "searched_recipe.json").is_file()
    # the W8A8 variants took their ranges from one sampling pass of the calibration prompts, with the study's
    # options (recipe files, so the variants are labelled w8a8-int8-attn8 and mixed-int8: mixed keeps its attention
    # projections in fp16, so its attention stays float); w8a8x2's MSE calibrator observes on its own pass
    for folder, attention, shared in (
        ("eval/variants/w8a8-int8-attn8", "int8", True),
        ("eval/variants/w8a8x2-int8-attn8", "int8", False),
        ("eval/variants/mixed-int8", "float", True),
        ("sources/searched", None, True),
    ):
        meta = json.loads((tmp_path / "study" / folder / "diffusia.json").read_text())
        assert meta["calibration"]["shared"] == shared and meta["calibration"]["size"] == cfg.calib_size, folder
        assert meta["recipe"]["activations"] == activations, folder
        assert attention is None or meta["recipe"]["attention"] == attention, folder
    qat = json.loads((tmp_path / "study" / "sources/w8a8-qat-int8-attn8" / "diffusia.json").read_text())
    assert qat["recipe"]["activations"] == activations and qat["recipe"]["attention"] == "int8"
    assert qat["calibration"]["shared"]  # QAT started from the same pass, and sampled nothing of its own
    assert study["timings"]["observe_s"] > 0


@pytest.mark.parametrize("activations", ["auto", "uint7", "int8", "balanced"])
def test_quantizing_variants_carry_the_activations(tmp_path, activations):
    from diffusia.config import load_recipe

    cfg = StudyConfig(out=str(tmp_path), activations=activations)
    variants = _quantizing_variants(cfg, tmp_path)
    if activations == "auto":  # the presets by name, labelled w8a8 and mixed in the report
        assert variants == {"w8a8": "w8a8", "mixed": "mixed", "w8a8x2": "w8a8x2"}
        return
    for preset, path in variants.items():
        assert path.endswith(f"{preset}-{activations}.json")
        recipe = load_recipe(path)
        assert recipe.activations == activations
        assert recipe.replace(activations="auto") == load_recipe(preset)


def test_int8_attention_goes_where_the_plan_has_w8a8_attention_projections(tmp_path):
    from diffusia.config import get_preset, load_recipe

    variants = _quantizing_variants(StudyConfig(out=str(tmp_path), attention="int8"), tmp_path)
    assert variants["w8a8"].endswith("w8a8-attn8.json") and variants["mixed"] == "mixed"  # the preset, unchanged
    assert load_recipe(variants["w8a8"]) == get_preset("w8a8").replace(attention="int8")
    assert load_recipe(variants["w8a8x2"]) == get_preset("w8a8x2").replace(attention="int8")


def test_the_studys_own_folders_are_saved_with_the_graph_of_its_runtime():
    from diffusia.study import _saved

    assert _saved(StudyConfig(model="tiny", out="x", runtime="openvino")) == ("openvino",)
    assert _saved(StudyConfig(model="tiny", out="x")) == ()
