"""Every preset on a micro pipeline: quantize (calibrated on sampling trajectories), save, load, same output."""

import json

import numpy as np
import pytest
from safetensors import safe_open

from diffusia import load_pipeline
from diffusia.config import PRESETS, get_preset
from diffusia.errors import DiffusiaError
from diffusia.generate import GenerationConfig, generate
from diffusia.prompts import load_prompts
from diffusia.quant import serialization
from diffusia.quant.pipeline import quantize_pipeline

CFG = GenerationConfig(steps=2)


def _quantized(micro_pipeline_dir, preset):
    pipe = load_pipeline(micro_pipeline_dir, progress=False)
    return quantize_pipeline(pipe, get_preset(preset), load_prompts("tiny"), calib_size=2, steps=2, progress=False)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_save_load_same_output(micro_pipeline_dir, tmp_path, preset):
    pipe = _quantized(micro_pipeline_dir, preset)
    before = generate(pipe, "a red bag", 1, CFG, progress=False, output_type="np")
    serialization.save_quantized_pipeline(pipe, tmp_path / preset)
    meta = json.loads((tmp_path / preset / "diffusia.json").read_text())
    assert meta["recipe"]["name"] == preset and set(meta["sha256"]) and meta["packages"]["diffusers"]
    loaded = load_pipeline(tmp_path / preset, progress=False)
    after = generate(loaded, "a red bag", 1, CFG, progress=False, output_type="np")
    np.testing.assert_array_equal(before, after)


def test_w8a8_folder_holds_int8_and_is_small(micro_pipeline_dir, tmp_path):
    pipe = _quantized(micro_pipeline_dir, "w8a8")
    info = pipe.diffusia_calibration  # 2 prompts in one batch x 2 steps (guidance branches batched too)
    assert info.batch == 4 and info.unet_calls == 2
    out = serialization.save_quantized_pipeline(pipe, tmp_path / "q")
    with safe_open(str(out / serialization.UNET_FILE), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert sum(d == "I8" for d in dtypes.values()) >= 20
    fp32_bytes = sum(p.stat().st_size for p in (micro_pipeline_dir / "unet").glob("*.safetensors"))
    q_bytes = (out / serialization.UNET_FILE).stat().st_size
    assert q_bytes < 0.45 * fp32_bytes  # micro U-Net: norms/conv_in/out kept in fp32 weigh relatively more


def test_altered_tensor_file_is_detected(micro_pipeline_dir, tmp_path):
    out = serialization.save_quantized_pipeline(_quantized(micro_pipeline_dir, "w8"), tmp_path / "q")
    f = out / serialization.UNET_FILE
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(DiffusiaError, match="sha256"):
        load_pipeline(out)
    f.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DiffusiaError, match="truncated"):
        load_pipeline(out)


def test_crash_mid_save_leaves_no_complete_folder(micro_pipeline_dir, tmp_path, monkeypatch):
    pipe = _quantized(micro_pipeline_dir, "w8")

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(serialization, "_sha256", boom)
    with pytest.raises(KeyboardInterrupt):
        serialization.save_quantized_pipeline(pipe, tmp_path / "q")
    assert not (tmp_path / "q").exists()
    assert not list(tmp_path.iterdir())  # the partial temp folder is gone too


def test_w8a8_requires_calibration_prompts(micro_pipeline_dir):
    pipe = load_pipeline(micro_pipeline_dir, progress=False)
    with pytest.raises(DiffusiaError, match="calibration prompts"):
        quantize_pipeline(pipe, get_preset("w8a8"), [], progress=False)


def test_integrity_check_cannot_be_switched_off(micro_pipeline_dir, tmp_path):
    out = serialization.save_quantized_pipeline(_quantized(micro_pipeline_dir, "w8"), tmp_path / "q")
    meta_path = out / "diffusia.json"
    meta = json.loads(meta_path.read_text())
    stray = out / "unet" / "extra.safetensors"
    stray.write_bytes((out / serialization.UNET_FILE).read_bytes())
    with pytest.raises(DiffusiaError, match="extra.safetensors is not listed in diffusia.json's sha256"):
        load_pipeline(out)
    stray.unlink()
    for broken in ({k: v for k, v in meta.items() if k != "sha256"}, {**meta, "sha256": {}}, {**meta, "sha256": [1]}):
        meta_path.write_text(json.dumps(broken))
        with pytest.raises(DiffusiaError, match="no valid sha256 block"):
            load_pipeline(out)
