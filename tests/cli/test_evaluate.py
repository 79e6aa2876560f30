"""`diffusia study`'s recipe options reach the study's configuration (the study itself: tests/test_study.py)."""

from __future__ import annotations

from tests._cli_support import diffusia


def test_study_passes_activations_and_attention_to_its_config(monkeypatch, capsys, tmp_path):
    seen = []

    def run_study(cfg):
        seen.append(cfg)
        return tmp_path / "report.md"

    monkeypatch.setattr("diffusia.study.run_study", run_study)
    args = ["study", "--model", "tiny", "--activations", "balanced", "--attention", "int8", "--out", tmp_path / "s"]
    code, err = diffusia(monkeypatch, capsys, *args)
    assert code == 0, err
    assert [(c.activations, c.attention, c.model) for c in seen] == [("balanced", "int8", "tiny")]
    code, err = diffusia(monkeypatch, capsys, "study", "--model", "tiny", "--out", tmp_path / "d")
    assert code == 0, err
    assert (seen[-1].activations, seen[-1].attention) == ("auto", "float")
