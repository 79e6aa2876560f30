"""Prompt sets: shipped (`tiny`, `sd15-calibration`, `sd15-eval`) or a user file (.json list or .txt lines)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from diffusia.errors import DiffusiaError

HERE = Path(__file__).resolve().parent
SHIPPED = {"tiny": "tiny.json", "sd15-calibration": "sd15_calibration.json", "sd15-eval": "sd15_eval.json"}


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str = "all"


def resolve_name(name: str, model: str = "tiny", purpose: str = "eval") -> str:
    """`eval` / `calibration` pick the model's own set: the class x colour set for tiny, SD prompts otherwise."""
    if name in ("eval", "calibration"):
        return "tiny" if model == "tiny" or "tiny" in str(model) else f"sd15-{name}"
    return name


def load_prompts(name: str, model: str = "tiny") -> list[Prompt]:
    """Load a prompt set by name or path; every entry must be a non-empty string."""
    name = resolve_name(name, model)
    if name in SHIPPED:
        path = HERE / SHIPPED[name]
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise DiffusiaError(
                f"unknown prompt set {name!r}: use one of {', '.join(SHIPPED)}, eval, calibration, "
                "or a .json/.txt file path"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DiffusiaError(f"prompt file {path} is not UTF-8 text: save it as UTF-8") from None
    except OSError as e:
        raise DiffusiaError(f"cannot read prompt file {path}: {e.strerror or e}") from None
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DiffusiaError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        items = [_prompt_of(r, path) for r in _json_list(raw, path)]
    else:
        items = [Prompt(line.strip()) for line in text.splitlines() if line.strip()]
    if not items:
        raise DiffusiaError(f"prompt file {path} is empty: add one prompt per line (or a JSON list)")
    if any(not p.text.strip() for p in items):
        raise DiffusiaError(f"prompt file {path} has an empty prompt: remove it")
    return items


def _json_list(raw: object, path: Path) -> list:
    if not isinstance(raw, list):
        raise DiffusiaError(
            f"prompt file {path} holds a JSON {type(raw).__name__}, not a list: write a list of strings or of "
            '{"prompt": ..., "category": ...} objects'
        )
    return raw


def _prompt_of(entry: object, path: Path) -> Prompt:
    if isinstance(entry, str):
        return Prompt(entry, "all")
    if isinstance(entry, dict) and isinstance(entry.get("prompt"), str):
        return Prompt(entry["prompt"], str(entry.get("category", "all")))
    raise DiffusiaError(
        f"prompt file {path} has an entry {json.dumps(entry)[:40]} that is neither a string nor an object with a "
        '"prompt" string: fix that entry'
    )


_GOLDEN = (5**0.5 - 1) / 2


def _spread(m: int, start: int = 0) -> list[int]:
    """A permutation of range(m) whose every prefix is spread over the range: steps of the integer nearest to
    m / golden ratio that is coprime with m, so a set ordered class by class and colour by colour is walked
    across both (on `tiny`'s 32 tops: 8 colours and 4 classes in the first 8)."""
    target = m * _GOLDEN
    step = min((k for k in range(1, m + 1) if math.gcd(k, m) == 1), key=lambda k: (abs(k - target), k))
    return [(start + j * step) % m for j in range(m)]


def stratified_order(prompts: list[Prompt]) -> list[Prompt]:
    """All prompts, ordered so that every prefix is a stratified sample: categories in proportion to their size
    (item j of a category of m sits at (j + 0.5) / m) and each category spread over its own list, category c
    starting at its item c (so the first prompts of different categories are not all the set's first colour)."""
    groups: dict[str, list[Prompt]] = {}
    for p in prompts:
        groups.setdefault(p.category, []).append(p)
    keyed = [
        ((j + 0.5) / len(members), c, members[i])
        for c, members in enumerate(groups.values())
        for j, i in enumerate(_spread(len(members), c))
    ]
    return [p for _, _, p in sorted(keyed, key=lambda k: (k[0], k[1]))]


def take(prompts: list[Prompt], n: int) -> list[Prompt]:
    """n prompts as a stratified sample of the set (`stratified_order`), cycling through it when n exceeds its
    size, as the reference study's semantically stratified calibration."""
    if n < 1:
        raise DiffusiaError(f"number of prompts must be >= 1, got {n}")
    order = stratified_order(prompts)
    return [order[i % len(order)] for i in range(n)]
