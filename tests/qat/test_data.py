"""QAT data sources: recorded distillation data and coloured Fashion-MNIST batches, deterministic per (seed, step)."""

import json

import numpy as np
import pytest
import torch

from diffusia import load_pipeline
from diffusia.prompts import load_prompts
from diffusia.qat.data import Batch, DistillData, FashionMNISTData, ddpm_alphas_cumprod, step_generator


@pytest.fixture(scope="module")
def pipe(micro_pipeline_dir):
    return load_pipeline(micro_pipeline_dir, progress=False)


@pytest.fixture(scope="module")
def distill(pipe):
    return DistillData.record(pipe, load_prompts("tiny")[:2], steps=2, guidance=7.5)


def test_distill_items_and_teacher_targets(pipe, distill):
    data, calls = distill
    assert len(calls) == 2 * 2 and len(data) == 2 * 2 * 2  # prompts x steps x guidance branches
    assert data.ehs_table.shape[0] == 2 * 2  # conditioning stored once per trajectory (uncond + cond rows)
    sample, t, ehs, added = calls[3]
    assert added is None  # SD 1.x: no added conditioning
    with torch.no_grad():
        teacher = pipe.unet(sample, t, encoder_hidden_states=ehs).sample
    np.testing.assert_allclose(data.targets[6:8].numpy(), teacher.numpy(), atol=1e-5)
    np.testing.assert_array_equal(data.samples[6:8].numpy(), sample.numpy())
    assert torch.equal(data.ehs_table[data.ehs_index[6:8]], ehs) and torch.all(data.timesteps[6:8] == float(t))


TENSOR_FIELDS = ("sample", "timestep", "encoder_hidden_states", "target")


def test_distill_batches_deterministic_and_sharded(distill, tmp_path):
    data, _ = distill
    a, b = data.batch(5, seed=1, batch=4), data.batch(5, seed=1, batch=4)
    assert isinstance(a, Batch) and len(a) == 4
    assert a.added is None and all(torch.equal(getattr(a, k), getattr(b, k)) for k in TENSOR_FIELDS)
    assert not torch.equal(a.sample, data.batch(6, seed=1, batch=4).sample)
    halves = [data.batch(5, seed=1, batch=2, rank=r, world=2) for r in range(2)]
    assert torch.equal(torch.cat([h.sample for h in halves]), a.sample)
    data.save(tmp_path / "d.safetensors")
    again = DistillData.load(tmp_path / "d.safetensors")
    assert torch.equal(again.batch(5, seed=1, batch=4).target, a.target)


def test_fashion_mnist_batches(pipe):
    from diffusia.data.fashion_mnist import DATA_DIR, coloured_split

    if not (DATA_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed")
    data = FashionMNISTData(pipe, caption_dropout=0.5, limit=64)
    images, _, colours, captions = coloured_split("train", seed=0, limit=64)
    idx = np.arange(8)
    assert data.captions(idx) == captions[:8]  # the tiny training set's colours and captions
    size = pipe.vae.config.sample_size
    x = data.images(idx)
    assert x.shape == (8, 3, size, size) and 0 <= float(x.min()) and float(x.max()) <= 1
    b = data.batch(3, seed=0, batch=6)
    assert b.sample.shape == b.target.shape == (6, 4, size // 2, size // 2)
    assert b.encoder_hidden_states.shape[:2] == (6, pipe.tokenizer.model_max_length)
    assert torch.all((b.timestep >= 0) & (b.timestep < 1000))
    assert torch.equal(b.sample, data.batch(3, seed=0, batch=6).sample)
    halves = [data.batch(3, seed=0, batch=3, rank=r, world=2) for r in range(2)]
    torch.testing.assert_close(torch.cat([h.sample for h in halves]), b.sample, atol=1e-5, rtol=1e-5)
    # x_t = sqrt(a) x0 + sqrt(1-a) eps with the VAE latents * scaling_factor and the SD DDPM schedule
    gen_idx = torch.randint(0, 64, (6,), generator=step_generator(0, 3))  # the first draw of the step stream
    x0 = data.encode_images(data.images(gen_idx.numpy()))
    a = ddpm_alphas_cumprod()[b.timestep.long()].view(-1, 1, 1, 1)
    torch.testing.assert_close(b.sample, a.sqrt() * x0 + (1 - a).sqrt() * b.target, atol=1e-5, rtol=1e-5)


def test_distill_data_is_safetensors_and_unreadable_files_are_one_line_errors(distill, tmp_path):
    from safetensors import safe_open

    from diffusia.errors import DiffusiaError

    data, _ = distill
    path = tmp_path / "d.safetensors"
    data.save(path)
    with safe_open(str(path), framework="pt") as f:  # no pickle: tensors, and the rest as JSON metadata
        assert sorted(f.keys()) == sorted(["samples", "timesteps", "ehs_table", "ehs_index", "targets"])
        assert json.loads(f.metadata()["info"]) == data.info
    assert DistillData.load(path).info == data.info
    raw = path.read_bytes()
    torch.save({"format": "diffusia.qat.distill_data", "version": 1}, tmp_path / "old.safetensors")  # the v1 pickle
    bad = {"truncated": raw[:-10], "empty": b"", "old": (tmp_path / "old.safetensors").read_bytes()}
    for name, content in bad.items():
        (tmp_path / f"{name}.safetensors").write_bytes(content)
    for name in [*bad, "missing"]:
        with pytest.raises(DiffusiaError, match="distillation data .* is unreadable .*--overwrite") as e:
            DistillData.load(tmp_path / f"{name}.safetensors")
        assert "\n" not in str(e.value)
    from safetensors.torch import save_file

    save_file({"samples": data.samples}, str(tmp_path / "other.safetensors"), metadata={"format": "other"})
    with pytest.raises(DiffusiaError, match="not diffusia distillation data v2"):
        DistillData.load(tmp_path / "other.safetensors")
