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


@pytest.mark.parametrize("kwargs, words", [
    (dict(weights="int3"), "w8a8"),
    (dict(calibrator="entropy"), "percentile, minmax, mse"),
    (dict(activations="int8"), "uint7"),
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
])
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
