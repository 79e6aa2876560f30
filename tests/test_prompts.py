import json

import pytest

from diffusia.errors import DiffusiaError
from diffusia.prompts import load_prompts, take


def test_shipped_sets():
    tiny = load_prompts("tiny")
    assert len(tiny) == 80 and {p.category for p in tiny} == {"tops", "dresses and trousers", "footwear", "bags"}
    calib, evals = load_prompts("sd15-calibration"), load_prompts("sd15-eval")
    assert len(calib) == len(evals) == 100
    assert not {p.text for p in calib} & {p.text for p in evals}
    for s in (calib, evals):
        cats = [p.category for p in s]
        assert {c: cats.count(c) for c in set(cats)} == dict.fromkeys(["landscape", "portrait", "abstract", "technical"], 25)


def test_eval_alias_follows_model():
    assert load_prompts("eval", model="tiny") == load_prompts("tiny")
    assert load_prompts("eval", model="some/folder") == load_prompts("sd15-eval")


def test_take_cycles():
    assert [p.text for p in take(load_prompts("tiny"), 82)][80:] == [p.text for p in load_prompts("tiny")[:2]]


def test_bad_prompt_files(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DiffusiaError, match="empty"):
        load_prompts(str(tmp_path / "empty.txt"))
    (tmp_path / "blank.json").write_text(json.dumps([{"prompt": "ok"}, {"prompt": " "}]))
    with pytest.raises(DiffusiaError, match="empty prompt"):
        load_prompts(str(tmp_path / "blank.json"))
    with pytest.raises(DiffusiaError, match="unknown prompt set"):
        load_prompts("nope")
