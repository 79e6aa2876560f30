import json

import pytest

from diffusia.config import PRESETS, Recipe, Rule, get_preset
from diffusia.errors import DiffusiaError


@pytest.mark.parametrize("name", PRESETS)
def test_preset_round_trips(name):
    r = get_preset(name)
    assert r.name == name
    assert Recipe.from_json(r.to_json()) == r
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_presets_are_fresh_copies():
    a = get_preset("mixed")
    a.rules.append(Rule("conv_in", "w8"))
    assert len(get_preset("mixed").rules) == len(a.rules) - 1


def test_mixed_preset_is_w8a8_convs_fp16_linears():
    r = get_preset("mixed")
    assert r.weights == "w8a8" and {x.precision for x in r.rules} == {"fp16"}


def test_defaults():
    r = Recipe()
    assert (r.calibrator, r.percentile, r.timestep_groups, r.version) == ("percentile", 99.9, 1, 1)


def test_rules_accept_pairs_and_dicts():
    r = Recipe(rules=[("*.to_q", "fp16"), {"pattern": "re:.*conv1", "precision": "keep"}])
    assert r.rules == [Rule("*.to_q", "fp16"), Rule("re:.*conv1", "keep")]
    assert Recipe.from_json(r.to_json()) == r


def test_rule_matching():
    assert Rule("*.attn?.to_q", "fp16").matches("a.b.attn1.to_q")
    assert Rule("re:.*attn[12]\\.to_q", "fp16").matches("x.attn2.to_q")
    assert not Rule("re:attn1", "fp16").matches("x.attn1.to_q")  # full match


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(weights="int3"), "w8a8"),
        (dict(calibrator="entropy"), "percentile, minmax, mse"),
        (dict(activations="int7"), "uint7"),
        (dict(percentile=30), "percentile"),
        (dict(percentile="99"), "number"),
        (dict(timestep_groups=0), "timestep_groups"),
        (dict(timestep_groups=True), "integer"),
        (dict(int4_group_size=33), "even"),
        (dict(histogram_bins=4), "histogram_bins"),
        (dict(version=2), "version"),
        (dict(name=""), "name"),
        (dict(rules=[("*.to_q", "int2")]), "int2"),
        (dict(full_res_weights="int2"), "full_res_weights"),
        (dict(rules=[("re:(", "fp16")]), "regex"),
        (dict(rules=[("", "fp16")]), "pattern"),
        (dict(rules=["x"]), "rule"),
        (dict(rules="x"), "rules"),
    ],
)
def test_validation_errors_are_one_line(kwargs, words):
    with pytest.raises(DiffusiaError) as e:
        Recipe(**kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(DiffusiaError, match="unknown recipe field.*wieghts"):
        Recipe.from_dict({"wieghts": "w8"})


def test_from_json_rejects_bad_json():
    with pytest.raises(DiffusiaError, match="not valid JSON"):
        Recipe.from_json("{")


def test_unknown_preset_lists_names():
    with pytest.raises(DiffusiaError, match="fp32, fp16, bf16, w8a8, w8a8x2, w8, w4, mixed"):
        get_preset("int8")


def test_replace_validates():
    with pytest.raises(DiffusiaError):
        get_preset("w8").replace(weights="w2")


def test_load_recipe_from_preset_file_and_overrides(tmp_path):
    from diffusia.config import load_recipe

    assert load_recipe("w8a8") == get_preset("w8a8")
    path = tmp_path / "r.json"
    path.write_text(get_preset("mixed").replace(name="mine").to_json())
    r = load_recipe(str(path), timestep_groups=4, rules=["*conv_in*=fp16", "re:.*attn2.*=w8"])
    assert r.name == "mine" and r.timestep_groups == 4
    assert r.rules[-2:] == [Rule("*conv_in*", "fp16"), Rule("re:.*attn2.*", "w8")]  # after the file's: they win
    assert r.rules[:-2] == get_preset("mixed").rules


@pytest.mark.parametrize(
    "recipe, rules, words",
    [
        ("int8", None, "unknown recipe 'int8': use a preset"),
        ("missing.json", None, "unknown recipe 'missing.json'"),
        ("w8a8", ["*attn2*"], "must look like PATTERN=PRECISION"),
        ("w8a8", ["*attn2*=int3"], "precision 'int3'"),
        ("latin1.json", None, "is not UTF-8 text"),
    ],
)
def test_load_recipe_errors_are_one_line(tmp_path, monkeypatch, recipe, rules, words):
    from diffusia.config import load_recipe

    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.json").write_bytes('{"name": "café"}'.encode("latin-1"))
    with pytest.raises(DiffusiaError, match=words) as e:
        load_recipe(recipe, rules=rules)
    assert "\n" not in str(e.value)
