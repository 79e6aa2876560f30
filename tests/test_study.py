"""A --quick study end to end on the micro pipeline: every stage runs and the report holds every section."""

import json

from diffusia.study import StudyConfig, run_study


def test_quick_study_writes_full_report(micro_pipeline_dir, tmp_path):
    cfg = StudyConfig.quick_config(str(micro_pipeline_dir), str(tmp_path / "study"))
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
    # the W8A8 variants took their ranges from one sampling pass of the calibration prompts
    for folder in ("eval/variants/w8a8", "eval/variants/mixed", "sources/searched"):
        calibration = json.loads((tmp_path / "study" / folder / "diffusia.json").read_text())["calibration"]
        assert calibration["shared"] and calibration["size"] == cfg.calib_size, folder
    assert study["timings"]["observe_s"] > 0
