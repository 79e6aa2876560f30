"""Single-file (original LDM layout) checkpoints: offline loading through diffusers' from_single_file, detection of
the architecture from tensor names and shapes, one-line errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusia import load_pipeline
from diffusia.errors import DiffusiaError
from diffusia.models import single_file
from diffusia.models.single_file import SINGLE_FILE_DIR, model_type
from tests.conftest import build_micro_pipeline
from tests.models._ldm import pipeline_to_ldm

V1 = "model.diffusion_model.output_blocks.11.0.skip_connection.weight"
V2 = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
XL = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A micro SD 1.x pipeline, its single-file checkpoint and a config folder without weights or tokenizer."""
    root = tmp_path_factory.mktemp("single")
    pipe = build_micro_pipeline(seed=3)
    pipe.save_pretrained(root / "config", safe_serialization=True)
    for f in (root / "config").rglob("*.safetensors"):
        f.unlink()
    shutil.rmtree(root / "config" / "tokenizer")
    save_file(pipeline_to_ldm(pipe), str(root / "model.safetensors"))
    return pipe, root / "model.safetensors", root / "config"


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test (HF_HUB_OFFLINE alone would let a fallback stay silent)."""
    import socket

    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_round_trip_gives_the_source_weights(checkpoint, no_network, one_thread):
    source, path, config = checkpoint
    pipe = load_pipeline(path, config=config, progress=False)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(source, part).state_dict(), getattr(pipe, part).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k].reshape(ours[k].shape)) for k in ours), part
    assert pipe.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]  # built offline: no tokenizer in config
    image = pipe("a cat", num_inference_steps=2, output_type="np").images[0]
    assert np.isfinite(image).all() and image.std() > 1e-3


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({V1: (320, 320, 1, 1)}, "sd15"),
        ({V1: (320, 320, 1, 1), V2: (320, 1024)}, "sd21"),
        ({V2: (640, 2048), XL: (1280,)}, "sdxl"),
    ],
)
def test_detection_from_names_and_shapes(keys, expected):
    shapes = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    assert model_type(shapes) == expected


def test_detected_sd15_loads_with_the_shipped_config(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    save_file({V1: torch.zeros(2, 2, 1, 1)}, str(tmp_path / "sd15.safetensors"))
    seen = {}
    monkeypatch.setattr(
        StableDiffusionPipeline,
        "from_single_file",
        classmethod(lambda cls, path, **kw: seen.update(kw, path=path) or "pipe"),
    )
    assert single_file.load_single_file(tmp_path / "sd15.safetensors") == "pipe"
    assert seen["config"] == str(SINGLE_FILE_DIR / "sd15") and seen["local_files_only"] is True
    assert seen["safety_checker"] is None and seen["tokenizer"].pad_token == "<|endoftext|>"
    unet = json.loads((SINGLE_FILE_DIR / "sd15" / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [320, 640, 1280, 1280] and unet["cross_attention_dim"] == 768


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_shipped_configs_are_current(name, tmp_path):
    fresh = single_file.write_config(name, tmp_path / name)
    for f in fresh.rglob("*.json"):
        ours, shipped = (json.loads(p.read_text()) for p in (f, SINGLE_FILE_DIR / name / f.relative_to(fresh)))
        for d in (ours, shipped):
            d.pop("_diffusers_version", None), d.pop("transformers_version", None)
        assert ours == shipped, f"{name}/{f.relative_to(fresh)}: run scripts/write_single_file_configs.py"


def test_pickled_checkpoint_is_refused_unread(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(DiffusiaError, match="pickled checkpoint.*convert it to .safetensors"):
        load_pipeline(path)


def test_safetensors_that_is_not_a_checkpoint(tmp_path):
    save_file({"conv_in.weight": torch.zeros(2)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(DiffusiaError, match="not a Stable Diffusion checkpoint"):
        load_pipeline(tmp_path / "unet.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(DiffusiaError, match="not a valid safetensors"):
        load_pipeline(tmp_path / "junk.safetensors")


@pytest.mark.parametrize(
    "key",
    [
        "model.diffusion_model.input_blocks.10.0.skip_connection.bias",  # upscaler
        "model.diffusion_model.time_embed.0.weight",
    ],
)  # no known layout
def test_unknown_architecture(tmp_path, key):
    save_file({key: torch.zeros(2)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(DiffusiaError, match="ships configs for SD 1.x, SD 2.x and SDXL base only: pass --config"):
        load_pipeline(tmp_path / "m.safetensors")


def test_config_is_for_single_files_only(micro_pipeline_dir):
    with pytest.raises(DiffusiaError, match="--config applies to single-file checkpoints only"):
        load_pipeline(micro_pipeline_dir, config=micro_pipeline_dir)
