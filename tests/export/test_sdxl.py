"""SDXL U-Nets on ONNX Runtime and OpenVINO: SDXL's added conditioning (`text_embeds`, `time_ids`) are two more
graph inputs, the export passes the same check as SD 1.x/2.x, and the runtime U-Net generates inside the pipeline."""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import diffusia
from diffusia import runtime
from diffusia.errors import DiffusiaError
from diffusia.export import compare
from diffusia.export import onnx as qdq
from diffusia.generate import GenerationConfig, generate
from diffusia.models.architectures import build_pipeline
from diffusia.models.unet_inputs import example_unet_inputs
from diffusia.runtime.artifact import export_runtime
from tests.conftest import build_micro_pipeline
from tests.models._support import TINY_SDXL

# The tiny SDXL U-Net has random weights: like the random micro model, it amplifies rounding ties that fall
# differently in a runtime (one code one step off moves every later layer), so its output gate is looser than the
# 5 % `diffusia export` states for trained U-Nets (measured: ONNX Runtime 4.0 % with one tie among 274k quantizer
# codes, 1.5-4.7 % on other seeds; OpenVINO 3e-7). Every activation quantizer is still compared strictly on the
# runtime's own input (a wrong scale, zero point or input moves most codes), and the float graph's added inputs are
# checked to float precision (`test_added_conditioning_reaches_the_graph`).
RANDOM_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def sdxl(one_thread):
    pipe = build_pipeline(TINY_SDXL, seed=0)
    diffusia.quantize(pipe, "w8a8", calib_prompts=["a red bag", "a blue shoe"], calib_size=2, steps=2, progress=False)
    return pipe


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_sdxl_exports_checks_and_generates(sdxl, tmp_path, name):
    if name == "openvino":
        pytest.importorskip("openvino")
    manifest = export_runtime(sdxl.unet, name, tmp_path / name, tolerance=RANDOM_TOLERANCE)
    check = manifest["check"]
    q = check["quantizers"]
    assert q["quantizers"] > 0 and q["other_differences"] == 0 and not q.get("unmatched")
    assert check["relative_l2_vs_diffusia"] <= RANDOM_TOLERANCE

    unet = runtime.load_unet(name, tmp_path / name, sdxl.unet.config)
    x = example_unet_inputs(sdxl.unet.config, batch=2, seed=3)
    with torch.no_grad():
        ref = sdxl.unet(**x).sample
        out = unet(**x).sample
    assert out.shape == ref.shape and compare.relative_l2(out.numpy(), ref.numpy()) <= RANDOM_TOLERANCE

    pipe = copy.copy(sdxl)  # the same components, the U-Net swapped for the runtime's
    runtime.install(pipe, unet)
    assert runtime.runtime_of(pipe) == name and runtime.runtime_of(sdxl) == "torch"
    image = generate(pipe, "a dog on a beach", 1, GenerationConfig(steps=2), progress=False, output_type="np")[0]
    assert image.shape == (16, 16, 3) and np.isfinite(image).all() and image.std() > 1e-3


def test_added_conditioning_reaches_the_graph(tmp_path):
    # the float U-Net's graph, free of rounding ties: ONNX Runtime follows PyTorch to float precision on inputs whose
    # added conditioning differs, and that conditioning moves the output (a graph that dropped it could not follow)
    unet = build_pipeline(TINY_SDXL, seed=0).unet
    path = qdq.export_unet(unet, tmp_path / "unet.onnx", dynamic=True, float_ok=True)
    graph = onnx.load(str(path), load_external_data=False).graph
    assert [i.name for i in graph.input] == list(qdq.INPUTS + qdq.ADDED_INPUTS)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = qdq.example_inputs(unet, 3, seed=1)  # another batch than the export's
    for inputs in (x, (*x[:3], x[3] + 1, x[4]), (*x[:3], x[3], x[4] * 2)):
        with torch.no_grad():
            ref = qdq.run_unet(unet, inputs).numpy()
        assert compare.relative_l2(session.run(None, qdq.graph_feeds(inputs))[0], ref) < 1e-4
        if inputs is not x:
            assert compare.relative_l2(ref, qdq.run_unet(unet, x).detach().numpy()) > 1e-2


def test_sd_graphs_keep_three_inputs(tmp_path):
    pipe = build_micro_pipeline()
    path = qdq.export_unet(pipe.unet, tmp_path / "unet.onnx", dynamic=True, float_ok=True)
    assert [i.name for i in onnx.load(str(path)).graph.input] == list(qdq.INPUTS)


def test_runtime_unet_needs_both_added_inputs(sdxl, tmp_path):
    export_runtime(sdxl.unet, "onnxruntime", tmp_path / "ort", check=False)
    unet = runtime.load_unet("onnxruntime", tmp_path / "ort", sdxl.unet.config)
    x = example_unet_inputs(sdxl.unet.config, batch=2)
    with pytest.raises(DiffusiaError, match="exactly text_embeds and time_ids"):
        unet(x["sample"], x["timestep"], x["encoder_hidden_states"], added_cond_kwargs={"text_embeds": x["sample"]})
