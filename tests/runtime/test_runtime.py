"""The U-Net on OpenVINO / ONNX Runtime inside the unchanged diffusers pipeline: same images as diffusia's kernels,
saved with the folder, `auto` by CPU class, one-line errors."""

import builtins
import json
import logging

import numpy as np
import pytest
import torch

from diffusia import load_pipeline, runtime
from diffusia.config import get_preset
from diffusia.errors import DiffusiaError
from diffusia.generate import GenerationConfig, generate
from diffusia.prompts import load_prompts
from diffusia.quant import api, cpu, serialization
from diffusia.quant.pipeline import quantize_pipeline
from diffusia.runtime.unet import RuntimeUNet

pytest.importorskip("openvino")

CFG = GenerationConfig(steps=8)
EXPORTED = ("openvino", "onnxruntime")


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    """The trained `tiny` pipeline in W8A8, saved with both runtimes' graphs (exported and checked at save), its
    torch image and the FP32 image of the same prompt and seed."""
    pipe = load_pipeline("tiny", progress=False)
    fp32_image = _image(pipe)
    quantize_pipeline(pipe, get_preset("w8a8"), load_prompts("tiny"), calib_size=2, steps=3, progress=False)
    folder = tmp_path_factory.mktemp("rt") / "q"
    serialization.save_quantized_pipeline(pipe, folder, runtimes=EXPORTED)
    return folder, _image(pipe), fp32_image


def _image(pipe):
    return generate(pipe, "a red bag", 1, CFG, progress=False, output_type="np")


def _same_quantized_model(image, torch_image, fp32_image):
    """The runtime computes diffusia's quantized model: its image is closer to diffusia's than diffusia's is to FP32,
    and as close to FP32. Not equal: the runtimes compute the float parts in another order, a value on a rounding
    tie then gets the neighbouring code, and a deep quantized network amplifies that (measured on `tiny` at 8 steps:
    runtime vs diffusia 0.009 mean, diffusia vs FP32 0.014)."""
    error = np.abs(torch_image - fp32_image).mean()
    assert np.abs(image - torch_image).mean() < error
    assert np.abs(image - fp32_image).mean() < 1.5 * error


@pytest.mark.parametrize("name", EXPORTED)
def test_saved_runtime_graph_gives_the_torch_image(quantized_dir, name):
    folder, torch_image, fp32_image = quantized_dir
    meta = json.loads((folder / "diffusia.json").read_text())
    check = meta["runtimes"][name]["check"]
    assert check["relative_l2_vs_diffusia"] < 0.05 and check["quantizers"]["other_differences"] == 0
    assert any(k.startswith(f"{name}/") for k in meta["sha256"])  # the graphs are integrity-checked too
    pipe = load_pipeline(folder, progress=False, runtime=name)
    assert isinstance(pipe.unet, RuntimeUNet) and runtime.runtime_of(pipe) == name
    assert not api.qmodules(pipe.unet)  # no PyTorch U-Net was built
    if name == "openvino":  # OpenVINO decodes too, from the graph saved and hashed beside the U-Net's
        assert meta["runtimes"][name]["vae_decoder"]["relative_l2"] < 1e-3
        assert "openvino/vae_decoder.bin" in meta["sha256"] and pipe.vae.diffusia_decoder == "openvino"
    image = _image(pipe)
    _same_quantized_model(image, torch_image, fp32_image)


def test_unsaved_runtime_is_exported_on_load_and_matches(quantized_dir):
    folder, torch_image, fp32_image = quantized_dir
    pipe = load_pipeline(folder, progress=False)  # torch U-Net, deployed by hand (what the Python API does)
    runtime.deploy(pipe, "openvino")
    assert runtime.runtime_of(pipe) == "openvino"
    assert pipe.vae.decoder._diffusia_releases_heap  # OpenVINO's decoder releases the freed heap as PyTorch's did
    _same_quantized_model(_image(pipe), torch_image, fp32_image)
    with pytest.raises(DiffusiaError, match="already runs on openvino"):
        runtime.deploy(pipe, "onnxruntime")


def test_float_pipeline_runs_on_a_runtime(micro_pipeline_dir):
    reference = _image(load_pipeline(micro_pipeline_dir, progress=False))
    pipe = load_pipeline(micro_pipeline_dir, progress=False, runtime="onnxruntime")
    assert runtime.runtime_of(pipe) == "onnxruntime"
    assert np.abs(_image(pipe) - reference).max() < 1e-3


def test_tampered_runtime_graph_is_refused(quantized_dir, tmp_path):
    import shutil

    folder = tmp_path / "q"
    shutil.copytree(quantized_dir[0], folder)
    with open(folder / "openvino" / "unet-g0.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x55")
    with pytest.raises(DiffusiaError, match="sha256|checksum|changed"):
        load_pipeline(folder, progress=False, runtime="openvino")


def test_auto_follows_the_cpu_class(monkeypatch):
    with cpu.simulate("avx2"):
        assert runtime.resolve("auto") == runtime.FASTEST["avx2"]
    with cpu.simulate("vnni"):
        assert runtime.resolve("auto") == runtime.FASTEST["vnni"] == "openvino"
        monkeypatch.setattr(runtime, "installed", lambda name: name == "torch")
        assert runtime.resolve("auto") == "torch"  # a class's fastest runtime that is not installed falls back
    assert runtime.resolve("auto", device="cuda") == "torch"
    assert runtime.resolve(None) == "torch"


@pytest.mark.parametrize(
    "spec, device, message",
    [
        ("tensorrt", "cpu", "unknown runtime 'tensorrt'; valid: auto, torch, openvino, onnxruntime"),
        ("openvino", "cuda", "runs on the CPU"),
    ],
)
def test_bad_runtime_is_one_line(spec, device, message):
    with pytest.raises(DiffusiaError, match=message.replace("(", r"\(")) as e:
        runtime.resolve(spec, device)
    assert "\n" not in str(e.value)


def test_missing_runtime_names_the_install_command(quantized_dir, monkeypatch):
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(DiffusiaError, match="openvino runtime is not installed: pip install openvino=="):
        load_pipeline(quantized_dir[0], progress=False, runtime="openvino")


def test_runtime_unet_refuses_moves_casts_and_sdxl_conditioning(quantized_dir):
    pipe = load_pipeline(quantized_dir[0], progress=False, runtime="openvino")
    with pytest.raises(DiffusiaError, match="float32 on the CPU"):
        pipe.unet.to(torch.float16)
    with pytest.raises(DiffusiaError, match="float32"):
        load_pipeline(quantized_dir[0], progress=False, runtime="openvino", dtype="fp16")
    x = torch.zeros(2, 4, 16, 16), torch.tensor([10, 10]), torch.zeros(2, 77, pipe.unet.config.cross_attention_dim)
    with pytest.raises(DiffusiaError, match="SDXL conditioning"):
        pipe.unet(*x, added_cond_kwargs={"text_embeds": torch.zeros(2, 8)})
    with pytest.raises(DiffusiaError, match="integer timesteps"):
        pipe.unet(x[0], torch.tensor([10.5, 10.5]), x[2])


def test_vnni_graph_is_not_run_on_an_avx2_cpu(tmp_path, caplog):
    pipe = load_pipeline("tiny", progress=False)  # trained: the export check's 5 % is far from rounding-tie luck
    recipe = get_preset("w8a8").replace(target="vnni")
    quantize_pipeline(pipe, recipe, load_prompts("tiny"), calib_size=2, steps=2, progress=False)
    serialization.save_quantized_pipeline(pipe, tmp_path / "q", runtimes=("onnxruntime",))
    with cpu.simulate("avx2"):
        loaded = load_pipeline(tmp_path / "q", progress=False, runtime="onnxruntime")
    assert "would saturate" in caplog.text
    # exported anew from the U-Net converted on load (7-bit activations), not the saved graph
    assert runtime.runtime_of(loaded) == "onnxruntime" and loaded.unet.folder.parent != tmp_path / "q"
    assert api.target_of(pipe.unet)["cpu_class"] == "vnni"


def test_bf16_float_layers_on_openvino_are_an_option(quantized_dir):
    folder, torch_image, fp32_image = quantized_dir
    if not cpu.has_native_half("bf16"):
        with pytest.raises(DiffusiaError, match="need a CPU with AVX-512 BF16 or AMX"):
            load_pipeline(folder, progress=False, runtime="openvino", runtime_precision="bf16")
        return
    pipe = load_pipeline(folder, progress=False, runtime="openvino", runtime_precision="bf16")
    assert pipe.unet.precision == "bf16"
    image = _image(pipe)  # unchecked by design: still the quantized model, within a few times its error
    assert np.abs(image - fp32_image).mean() < 3 * np.abs(torch_image - fp32_image).mean()
    with pytest.raises(DiffusiaError, match="applies to the openvino runtime, and the U-Net runs on torch"):
        load_pipeline(folder, progress=False, runtime_precision="bf16")


def test_dynamic_int8_inputs_on_openvino_are_an_option(quantized_dir, tmp_path, caplog):
    """`+dynamic` turns on OpenVINO's dynamic quantization of the weight-only layers' float inputs (int8, groups of
    32), off otherwise. A `w8` model's images then move further from FP32, but stay closer than static W8A8's. A
    U-Net without weight-only layers runs, and reports, the float precision alone."""
    w8a8_image, fp32_image = quantized_dir[1:]
    pipe = load_pipeline("tiny", progress=False)
    quantize_pipeline(pipe, get_preset("w8"), load_prompts("tiny"), calib_size=2, steps=3, progress=False)
    serialization.save_quantized_pipeline(pipe, tmp_path / "q", runtimes=("openvino",))
    images, groups = {}, {}
    for precision in ("f32", "f32+dynamic"):
        loaded = load_pipeline(tmp_path / "q", progress=False, runtime="openvino", runtime_precision=precision)
        images[precision] = _image(loaded)
        compiled = [r.get_compiled_model() for r in loaded.unet._requests.values()]
        groups[precision] = {c.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") for c in compiled}
    assert groups == {"f32": {0}, "f32+dynamic": {32}}
    assert runtime.runtime_precision_of(loaded) == "f32+dynamic"
    for cls, warned in (("avx2", True), ("vnni", False)):  # capped to AVX2, OpenVINO left the inputs float
        caplog.clear()
        with cpu.simulate(cls), caplog.at_level(logging.WARNING, logger="diffusia.runtime.openvino"):
            runtime.load_unet("openvino", tmp_path / "q" / "openvino", loaded.unet.config, precision="f32+dynamic")
        assert ("f32+dynamic on a CPU without VNNI" in caplog.text) == warned
    with caplog.at_level(logging.WARNING, logger="diffusia.runtime.openvino"):
        w8a8 = load_pipeline(quantized_dir[0], progress=False, runtime="openvino", runtime_precision="f32+dynamic")
    assert runtime.runtime_precision_of(w8a8) == "f32" and "has no weight-only (w8/w4) layers" in caplog.text
    error = {p: np.abs(image - fp32_image).mean() for p, image in images.items()}
    assert error["f32"] <= error["f32+dynamic"] < np.abs(w8a8_image - fp32_image).mean()
    with pytest.raises(DiffusiaError, match="applies to the openvino runtime, and the U-Net runs on torch"):
        load_pipeline(tmp_path / "q", progress=False, runtime_precision="f32+dynamic")
    if not cpu.has_native_half("bf16"):
        with pytest.raises(DiffusiaError, match="use --runtime-precision f32[+]dynamic"):
            runtime.check_precision("openvino", "bf16+dynamic")


def test_runtime_precision_parts():
    assert [(runtime.float_precision(p), runtime.is_dynamic(p)) for p in runtime.PRECISIONS] == [
        ("f32", False),
        ("bf16", False),
        ("f32", True),
        ("bf16", True),
    ]
    with pytest.raises(DiffusiaError, match="unknown runtime precision 'f16'; valid: f32, bf16, f32[+]dynamic"):
        runtime.check_precision("openvino", "f16")


def test_saved_runtimes_are_the_named_exported_ones_once_each():
    from diffusia.runtime import saved_runtimes

    assert saved_runtimes("openvino, onnxruntime,openvino,torch") == ("openvino", "onnxruntime")
    assert saved_runtimes(None) == saved_runtimes("torch") == ()
    with pytest.raises(DiffusiaError, match="unknown runtime 'tensorrt'"):
        saved_runtimes("openvino,tensorrt")


@pytest.mark.parametrize("arena", ("kept", "shrunk", "off", "unplanned", "exact"))
def test_onnxruntime_memory_arena_changes_no_output(quantized_dir, arena):
    folder, _, _ = quantized_dir
    default = load_pipeline(folder, progress=False, runtime="onnxruntime").unet  # diffusia's: exact-unplanned
    other = runtime.load_unet("onnxruntime", default.folder, default.config, arena=arena)
    c = default.config
    sample = torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 7, c.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    assert not default._sessions[0].get_session_options().enable_mem_pattern
    options = other._sessions[0].get_session_options()
    assert options.enable_cpu_mem_arena == (arena != "off") and options.enable_mem_pattern == (arena != "unplanned")
    for t in (900, 100):  # twice, so a shrunk or missing arena serves a second run
        got, want = (u(sample, t, text, return_dict=False)[0] for u in (other, default))
        assert torch.equal(got, want)
    with pytest.raises(DiffusiaError, match="unknown ONNX Runtime arena 'pooled'; valid: kept, shrunk, off"):
        runtime.load_unet("onnxruntime", default.folder, default.config, arena="pooled")
