"""diffusers loads diffusia folders: modelled on diffusers' QuantizationTesterMixin (memory reduction, inference,
serialization round trip, modules_to_not_convert, dtype change raises), plus the registration hook."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel

import diffusia
from diffusia.errors import DiffusiaError
from diffusia.generate import GenerationConfig, generate
from diffusia.quant import api, attention, serialization
from diffusia.quant.modules import QModuleMixin

PROMPTS = ["a red bag", "a blue sneaker"]
CFG = GenerationConfig(steps=2)


def _unet_inputs(unet):
    g = torch.Generator().manual_seed(0)
    c = unet.config
    return (
        torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=g),
        torch.tensor([500]),
        torch.randn(2, 8, c.cross_attention_dim, generator=g),
    )


@pytest.fixture(scope="module")
def saved(micro_pipeline_dir, tmp_path_factory):
    """A W8A8 micro pipeline with int8 attention, whose second up block's attention stays float (a rule), saved."""
    pipe = diffusia.load_pipeline(micro_pipeline_dir, progress=False)
    recipe = diffusia.config.load_recipe("w8a8", rules=["up_blocks.1.attentions.*=keep"]).replace(attention="int8")
    diffusia.quantize(pipe, recipe, calib_prompts=PROMPTS, calib_size=2, steps=2, progress=False)
    folder = diffusia.save(pipe, tmp_path_factory.mktemp("saved") / "q")
    return pipe, folder


def _image(pipe):
    return generate(pipe, "a red bag", 1, CFG, progress=False, output_type="np")


def test_the_four_line_round_trip(micro_pipeline_dir, tmp_path):
    pipe = diffusia.load_pipeline(micro_pipeline_dir, progress=False)
    assert diffusia.quantize(pipe, "w8a8", calib_prompts=PROMPTS, calib_size=2, steps=2, progress=False) is pipe
    diffusia.save(pipe, tmp_path / "q")
    np.testing.assert_array_equal(_image(pipe), _image(diffusia.load_pipeline(tmp_path / "q", progress=False)))


def test_diffusion_pipeline_loads_the_same_images(saved):
    pipe, folder = saved
    plain = DiffusionPipeline.from_pretrained(folder)
    assert type(plain).__name__ == type(pipe).__name__ and plain.unet.is_quantized
    assert plain.unet.quantization_method == "diffusia"
    np.testing.assert_array_equal(_image(diffusia.load_pipeline(folder, progress=False)), _image(plain))


def test_unet_from_pretrained_matches_the_pipeline(saved):
    pipe, folder = saved
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    assert set(attention.processors(unet)) == set(attention.processors(pipe.unet)) != set()  # int8 attention
    with torch.no_grad():
        torch.testing.assert_close(
            unet(*_unet_inputs(unet)).sample, pipe.unet(*_unet_inputs(unet)).sample, rtol=0, atol=0
        )


def test_memory_reduction(saved, micro_pipeline_dir):
    _, folder = saved
    quantized = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    full = UNet2DConditionModel.from_pretrained(micro_pipeline_dir, subfolder="unet")
    assert quantized.get_memory_footprint() < 0.5 * full.get_memory_footprint()
    assert any(b.dtype == torch.int8 for b in quantized.buffers())


def test_modules_to_not_convert(saved):
    _, folder = saved
    config = json.loads((folder / "unet" / "config.json").read_text())["quantization_config"]
    kept = config["modules_to_not_convert"]
    assert kept and all(n.startswith("up_blocks.1.attentions.") for n in kept)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    for name in kept:
        assert not isinstance(unet.get_submodule(name), QModuleMixin)
    assert isinstance(unet.get_submodule("down_blocks.0.attentions.0.proj_in"), QModuleMixin)


def test_dtype_change_raises(saved):
    _, folder = saved
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    with pytest.raises(ValueError, match="dtype"):
        unet.to(torch.float16)


def test_diffusers_save_pretrained_round_trip(saved, tmp_path):
    _, folder = saved
    plain = DiffusionPipeline.from_pretrained(folder)
    plain.save_pretrained(tmp_path / "again")
    np.testing.assert_array_equal(_image(plain), _image(DiffusionPipeline.from_pretrained(tmp_path / "again")))


def test_dequantize_gives_float_layers_computing_the_same(saved, micro_pipeline_dir):
    pipe, folder = saved
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    x = _unet_inputs(unet)
    with torch.no_grad():
        before = unet(*x).sample
        unet.dequantize()  # diffusers' verb, through the quantizer
    assert not api.qmodules(unet) and not unet.is_quantized
    with torch.no_grad():
        after = unet(*x).sample  # float activations and attention now: close to, not equal to, the W8A8 output
    # measured on the random micro model: 9.4 % with float attention, 10.9 % with int8 attention
    assert torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before) < 0.15


def test_version_1_folder_still_loads(saved, tmp_path):
    """The earlier layout: quantization map in diffusia.json, tensors in unet/diffusia_unet.safetensors."""
    import shutil

    pipe, folder = saved
    old = tmp_path / "v1"
    shutil.copytree(folder, old)
    config_path = old / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    qconfig = config.pop("quantization_config")
    config_path.write_text(json.dumps(config))
    (old / serialization.UNET_FILE).rename(old / serialization.UNET_FILE_V1)
    meta = json.loads((old / "diffusia.json").read_text())
    meta.update(version=1, quantization_map=qconfig["quantization_map"])
    meta["sha256"][serialization.UNET_FILE_V1] = meta["sha256"].pop(serialization.UNET_FILE)
    (old / "diffusia.json").write_text(json.dumps(meta))
    np.testing.assert_array_equal(_image(pipe), _image(diffusia.load_pipeline(old, progress=False)))


def test_a_changed_diffusers_registry_is_one_clear_error(monkeypatch):
    from diffusers.quantizers import auto

    from diffusia.integrations import diffusers as integration

    monkeypatch.delattr(auto, "AUTO_QUANTIZER_MAPPING")
    with pytest.raises(DiffusiaError, match="no longer has the quantizer tables.*requirements.txt"):
        integration.register()


def test_import_registers_lazily_without_importing_diffusers():
    code = (
        "import sys, diffusia; assert 'diffusers' not in sys.modules, 'diffusers imported eagerly';"
        "from diffusers.quantizers import auto; assert auto.AUTO_QUANTIZER_MAPPING['diffusia'].__name__ == "
        "'DiffusiaQuantizer'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_model_level_verbs_on_a_bare_unet(micro_pipeline_dir):
    unet = UNet2DConditionModel.from_pretrained(micro_pipeline_dir, subfolder="unet")
    x = _unet_inputs(unet)
    with torch.no_grad():
        reference = unet(*x).sample
    assert diffusia.quantize(unet, "w8a8") is unet
    with diffusia.calibrate(unet), torch.no_grad():
        unet(*x)
    assert diffusia.freeze(unet) is unet
    assert "w8a8" in diffusia.summary(unet) and "real" in diffusia.summary(unet)
    with torch.no_grad():
        quantized = unet(*x).sample
    assert torch.linalg.vector_norm(quantized - reference) / torch.linalg.vector_norm(reference) < 0.1
    with pytest.raises(DiffusiaError, match="need a pipeline"):
        diffusia.quantize(
            UNet2DConditionModel.from_pretrained(micro_pipeline_dir, subfolder="unet"), "w8a8", calib_prompts=PROMPTS
        )


def test_quantize_takes_a_forward_loop(micro_pipeline_dir):
    unet = UNet2DConditionModel.from_pretrained(micro_pipeline_dir, subfolder="unet")
    seen = []
    diffusia.quantize(unet, "w8a8", forward_loop=lambda m: seen.append(m(*_unet_inputs(m))))
    assert seen and all(m.mode == "real" for m in api.qmodules(unet).values())


def test_bad_calibration_prompts_are_one_line_errors(micro_pipeline_dir):
    pipe = diffusia.load_pipeline(micro_pipeline_dir, progress=False)
    with pytest.raises(DiffusiaError, match="non-empty list of non-empty strings"):
        diffusia.quantize(pipe, "w8a8", calib_prompts=["a bag", ""], progress=False)
