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
        assert {c: cats.count(c) for c in set(cats)} == dict.fromkeys(
            ["landscape", "portrait", "abstract", "technical"], 25
        )


def test_eval_alias_follows_model():
    assert load_prompts("eval", model="tiny") == load_prompts("tiny")
    assert load_prompts("eval", model="some/folder") == load_prompts("sd15-eval")


def test_take_cycles_through_the_whole_set():
    tiny = load_prompts("tiny")
    taken = take(tiny, 82)
    assert sorted(p.text for p in taken[:80]) == sorted(p.text for p in tiny) and taken[80:] == taken[:2]


@pytest.mark.parametrize("n", [4, 16, 32])
def test_take_is_stratified_over_categories_classes_and_colours(n):
    import collections
    import re

    tiny = load_prompts("tiny")
    taken = take(tiny, n)
    assert len({p.text for p in taken}) == n
    sizes = collections.Counter(p.category for p in tiny)
    got = collections.Counter(p.category for p in taken)
    assert all(abs(got[c] - n * k / len(tiny)) <= 1 for c, k in sizes.items())  # proportional, within one
    colours = {re.match(r"an? (\w+)", p.text).group(1) for p in taken}
    classes = {p.text.split(" ", 2)[2] for p in taken}
    assert len(colours) >= min(7, n - 1) and len(classes) >= min(10, n // 2)  # first-N took 1-2 classes
    sd = take(load_prompts("sd15-calibration"), 16)
    assert set(collections.Counter(p.category for p in sd).values()) == {4}


def test_bad_prompt_files(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DiffusiaError, match="empty"):
        load_prompts(str(tmp_path / "empty.txt"))
    (tmp_path / "blank.json").write_text(json.dumps([{"prompt": "ok"}, {"prompt": " "}]))
    with pytest.raises(DiffusiaError, match="empty prompt"):
        load_prompts(str(tmp_path / "blank.json"))
    with pytest.raises(DiffusiaError, match="unknown prompt set"):
        load_prompts("nope")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("latin1.txt", "a caf\xe9 at dusk\n".encode("latin-1"), "not UTF-8 text"),
        ("number.json", b"42", "holds a JSON int, not a list"),
        ("object.json", b'{"a red bag": 1}', "holds a JSON dict, not a list"),
        ("numbers.json", b"[1, 2]", "entry 1 that is neither a string nor an object"),
        ("no_prompt.json", b'[{"text": "a bag"}]', "neither a string nor an object"),
    ],
)
def test_malformed_prompt_files_are_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DiffusiaError, match=message) as err:
        load_prompts(str(tmp_path / name))
    assert "\n" not in str(err.value)
