"""Shared fixtures: tiny seeded pipelines built on the fly (no downloads, seconds on a CPU)."""

from __future__ import annotations

import functools
import os
import tempfile

import pytest
import torch

from tests._cli_support import inputs, saved_models  # noqa: F401  (fixtures of the bad-input tests)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# two cores: one thread per pytest-xdist worker (`-n 2`), both threads otherwise
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

MICRO_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
MICRO_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    sample_size=16,
    layers_per_block=1,
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    norm_num_groups=8,
)
MICRO_TEXT = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=32,
)


@functools.cache
def _clip_tokenizer():
    """One CLIP tokenizer for every micro pipeline of the process (reading its vocabulary takes ~0.4 s)."""
    from transformers import CLIPTokenizer

    from diffusia.models.tokenizer import write_clip_tokenizer

    with tempfile.TemporaryDirectory(prefix="diffusia-tok-") as tmp:  # the tokenizer is in memory once loaded
        return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp))


def build_micro_pipeline(seed: int = 0):
    from diffusers import StableDiffusionPipeline

    from diffusia.models.architectures import build_components

    parts = build_components(MICRO_UNET, MICRO_VAE, MICRO_TEXT, seed=seed)
    return StableDiffusionPipeline(
        **parts, tokenizer=_clip_tokenizer(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on an oversubscribed 2-core box, 2 threads stall ~10 ms per op (OpenMP barriers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def micro_pipeline_dir(tmp_path_factory):
    """A saved micro pipeline folder (safetensors), shared by the whole session; treat it as read-only."""
    folder = tmp_path_factory.mktemp("micro") / "pipe"
    build_micro_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def micro_pipeline_copy(micro_pipeline_dir, tmp_path):
    """A private copy of the micro pipeline folder that a test may damage."""
    import shutil

    dst = tmp_path / "pipe"
    shutil.copytree(micro_pipeline_dir, dst)
    return dst
