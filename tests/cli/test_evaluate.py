"""`diffusia study` and `diffusia eval`: their recipe options reach the study's configuration and the evaluated
variants (the study itself: tests/test_study.py)."""

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


def test_eval_gives_the_options_to_its_w8a8_presets(monkeypatch, capsys, tmp_path):
    """`eval --activations/--attention` turn the W8A8 presets into labelled recipe files; other variants (a dtype,
    a weight-only preset, `mixed` whose attention projections stay fp16) keep their options."""
    from diffusia.config import get_preset, load_recipe

    seen = []

    def evaluate(model, variants, **kw):
        seen.append(variants)
        return {"variants": {}}

    monkeypatch.setattr("diffusia.eval.harness.evaluate", evaluate)
    out = tmp_path / "e"
    args = ["eval", "--model", "tiny", "--variants", "fp32,w8a8,w8,mixed", "--out", out]
    code, err = diffusia(monkeypatch, capsys, *args, "--activations", "int8", "--attention", "int8")
    assert code == 0, err
    fp32, w8a8, w8, mixed = seen[0]
    assert (fp32, w8) == ("fp32", "w8") and w8a8 == str(out / "recipes" / "w8a8-int8-attn8.json")
    assert load_recipe(w8a8) == get_preset("w8a8").replace(activations="int8", attention="int8")
    assert load_recipe(mixed) == get_preset("mixed").replace(activations="int8") and mixed.endswith("mixed-int8.json")
    code, err = diffusia(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0, err
    assert seen[1] == ["fp32", "w8a8", "w8", "mixed"]  # without the options, the presets by name
