import pytest
import torch

from diffusia import load_pipeline
from diffusia.errors import DiffusiaError
from diffusia.models import loading


def test_local_folder_round_trip(micro_pipeline_dir, tmp_path):
    pipe = load_pipeline(micro_pipeline_dir)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    pipe.save_pretrained(tmp_path / "again", safe_serialization=True)
    again = load_pipeline(tmp_path / "again")
    for a, b in zip(pipe.unet.state_dict().values(), again.unet.state_dict().values()):
        assert torch.equal(a, b)
    assert not list((tmp_path / "again").rglob("*.bin"))


def test_dtype(micro_pipeline_dir):
    assert load_pipeline(micro_pipeline_dir, dtype="bf16").unet.dtype == torch.bfloat16
    with pytest.raises(DiffusiaError, match="unknown dtype"):
        load_pipeline(micro_pipeline_dir, dtype="int3")


def test_tiny_is_embedded():
    if not (loading.TINY_DIR / "model_index.json").is_file():
        pytest.fail("the embedded tiny pipeline is not shipped: run scripts/train_tiny.py")
    pipe = load_pipeline("tiny")
    assert [b.__class__.__name__ for b in pipe.unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert pipe.unet.mid_block.__class__.__name__ == "UNetMidBlock2DCrossAttn"
    assert [b.__class__.__name__ for b in pipe.unet.up_blocks] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert pipe.unet.config.sample_size >= 16
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert sum(f.stat().st_size for f in loading.TINY_DIR.rglob("*.safetensors")) <= 60e6
    assert not [f for ext in ("*.bin", "*.pt", "*.pth", "*.ckpt") for f in loading.TINY_DIR.rglob(ext)]


def test_sd15_arch_config_is_sd15(monkeypatch):
    # Building all 1.07B random parameters takes a while; check the configs drive it and the label says so.
    from diffusia.models.architectures import SD15_UNET

    assert SD15_UNET["block_out_channels"] == (320, 640, 1280, 1280) and SD15_UNET["cross_attention_dim"] == 768
    built = {}
    monkeypatch.setattr(loading, "build_sd15_arch", lambda dtype=None: built.setdefault("pipe", _Stub()))
    pipe = load_pipeline("sd15-arch")
    assert "random weights" in pipe.diffusia_spec


class _Stub:
    def to(self, *a, **k):
        return self

    def set_progress_bar_config(self, **k):
        pass


def test_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DiffusiaError, match="runwayml/stable-diffusion-v1-5.*local folder"):
        load_pipeline("runwayml/stable-diffusion-v1-5")


def test_missing_folder():
    with pytest.raises(DiffusiaError, match="no such model"):
        load_pipeline("./does/not/exist")


def test_folder_without_unet(micro_pipeline_copy):
    import shutil

    shutil.rmtree(micro_pipeline_copy / "unet")
    with pytest.raises(DiffusiaError, match="no unet/"):
        load_pipeline(micro_pipeline_copy)


def test_truncated_safetensors(micro_pipeline_copy):
    f = next((micro_pipeline_copy / "unet").glob("*.safetensors"))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DiffusiaError, match="truncated"):
        load_pipeline(micro_pipeline_copy)


def test_garbage_safetensors_header(micro_pipeline_copy):
    f = next((micro_pipeline_copy / "vae").glob("*.safetensors"))
    f.write_bytes(b"\xff" * 64)
    with pytest.raises(DiffusiaError, match="not a valid safetensors"):
        load_pipeline(micro_pipeline_copy)


def test_pickled_only_weights_are_refused(micro_pipeline_copy):
    for f in micro_pipeline_copy.rglob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(DiffusiaError, match="safetensors only"):
        load_pipeline(micro_pipeline_copy)


def test_model_index_required(micro_pipeline_copy):
    (micro_pipeline_copy / "model_index.json").unlink()
    with pytest.raises(DiffusiaError, match="model_index.json"):
        load_pipeline(micro_pipeline_copy)
