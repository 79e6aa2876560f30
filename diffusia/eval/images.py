"""Evaluation jobs (prompt, category, seed) and their images: rendered one by one, stored as 8-bit PNGs.

With N >= P prompts, job j uses prompt j mod P and seed `seed + j // P` (image i of a prompt uses seed + i, as
`diffusia generate`); with N < P, N prompts evenly spaced through the set (so every category is represented) at
`seed`. Each image depends only on its prompt and seed, whichever process renders it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffusia.errors import DiffusiaError
from diffusia.prompts import Prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    index: int
    prompt: str
    category: str
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def make_jobs(prompts: list[Prompt], num: int, seed: int) -> list[Job]:
    """`num` jobs: evenly spaced prompts when num < len(prompts), else cycling with the next seed per repeat."""
    if num < 1:
        raise DiffusiaError(f"--num must be >= 1, got {num}")
    if not prompts:
        raise DiffusiaError("the prompt set is empty: add prompts")
    p = len(prompts)
    picks = [(j * p // num, seed) for j in range(num)] if num < p else [(j % p, seed + j // p) for j in range(num)]
    return [Job(j, prompts[i].text, prompts[i].category, s) for j, (i, s) in enumerate(picks)]


def jobs_from_dicts(items: Iterable[dict]) -> list[Job]:
    return [Job(int(d["index"]), d["prompt"], d.get("category", "all"), int(d["seed"])) for d in items]


def render(pipe, jobs: list[Job], config, progress: bool = False) -> np.ndarray:
    """Images (N,H,W,3) float32 in [0,1] for the jobs, one at a time (batch 1)."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from diffusia.generate import generate

    out = []
    for job in tqdm(jobs, desc="images", disable=not progress, leave=False):
        cfg = replace(config, seed=job.seed)
        out.append(generate(pipe, job.prompt, 1, cfg, progress=False, output_type="np")[0])
    return np.stack(out) if out else np.empty((0, 0, 0, 3), np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0,1] floats -> uint8 exactly as diffusers' `numpy_to_pil` rounds them."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def png_name(index: int) -> str:
    return f"{index:05d}.png"


def save_images(images: np.ndarray, indices: list[int], folder: str | Path) -> None:
    """One PNG per image, named by job index."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for image, index in zip(to_uint8(images), indices):
        Image.fromarray(image).save(folder / png_name(index), format="PNG")


def load_images(folder: str | Path, count: int) -> np.ndarray:
    """The PNGs 0..count-1 of a folder as float32 (N,H,W,3) in [0,1]."""
    from PIL import Image

    folder = Path(folder)
    missing = [png_name(i) for i in range(count) if not (folder / png_name(i)).is_file()]
    if missing:
        raise DiffusiaError(
            f"{folder} lacks {len(missing)} of {count} images (first: {missing[0]}): re-run the evaluation"
        )
    return np.stack(
        [np.asarray(Image.open(folder / png_name(i)).convert("RGB"), dtype=np.float32) / 255.0 for i in range(count)]
    )
