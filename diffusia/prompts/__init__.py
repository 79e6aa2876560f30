"""Prompt sets: shipped (`tiny`, `sd15-calibration`, `sd15-eval`) or a user file (.json list or .txt lines)."""
from __future__ import annotations

import json
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
            raise DiffusiaError(f"unknown prompt set {name!r}: use one of {', '.join(SHIPPED)}, eval, calibration, "
                                "or a .json/.txt file path")
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DiffusiaError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        items = [Prompt(r, "all") if isinstance(r, str) else Prompt(r.get("prompt", ""), r.get("category", "all"))
                 for r in raw]
    else:
        items = [Prompt(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    if not items:
        raise DiffusiaError(f"prompt file {path} is empty: add one prompt per line (or a JSON list)")
    if any(not p.text.strip() for p in items):
        raise DiffusiaError(f"prompt file {path} has an empty prompt: remove it")
    return items


def take(prompts: list[Prompt], n: int) -> list[Prompt]:
    """The first n prompts, cycling through the set when n exceeds its size."""
    if n < 1:
        raise DiffusiaError(f"number of prompts must be >= 1, got {n}")
    return [prompts[i % len(prompts)] for i in range(n)]
