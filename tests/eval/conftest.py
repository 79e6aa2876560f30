"""Fixtures of the evaluation-harness tests: a loaded micro pipeline, a small prompt file, a cheap extractor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

PROMPTS = [
    {"prompt": "a red bag", "category": "bags"},
    {"prompt": "a blue coat", "category": "tops"},
    {"prompt": "a green shirt", "category": "tops"},
]


@pytest.fixture(scope="session")
def micro_pipe(micro_pipeline_dir):
    from diffusia import load_pipeline

    return load_pipeline(micro_pipeline_dir, progress=False)


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(PROMPTS))
    return path


def pooled_features(images: torch.Tensor) -> np.ndarray:
    """A cheap stand-in feature network for tests: 4x4 average-pooled pixels (48-d)."""
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1).double().numpy()


CHEAP_EXTRACTOR = ("FD-test", pooled_features)
