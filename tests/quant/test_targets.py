"""Targets: a folder quantized for one CPU class loads on the other correctly (converted or as is), never on
saturating kernels; the target and the CPU it was made on are recorded in diffusia.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffusia import load_pipeline
from diffusia.config import get_preset
from diffusia.generate import GenerationConfig, generate
from diffusia.prompts import load_prompts
from diffusia.quant import api, cpu, serialization
from diffusia.quant.pipeline import quantize_pipeline

CFG = GenerationConfig(steps=2)
HOST_VNNI = cpu.has_vnni(cpu.detected_features())


def _save(micro_pipeline_dir, folder, **changes):
    """A W8A8 folder whose full-resolution blocks are two-digit (both activation layouts in one model)."""
    pipe = load_pipeline(micro_pipeline_dir, progress=False)
    recipe = get_preset("w8a8").replace(full_res_weights="w8a8x2", **changes)
    quantize_pipeline(pipe, recipe, load_prompts("tiny"), calib_size=2, steps=2, progress=False)
    image = generate(pipe, "a red bag", 1, CFG, progress=False, output_type="np")
    return serialization.save_quantized_pipeline(pipe, folder), image


def _layers(pipe, precision):
    return [m for m in api.qmodules(pipe.unet).values() if m.precision == precision]


def _peak(m) -> int:
    return int(m.weight_int8.abs().max())


@pytest.mark.parametrize("target, cls", [("avx2", "avx2"), ("portable", "avx2"), ("vnni", "vnni")])
def test_each_target_gets_its_layout_on_any_host(micro_pipeline_dir, tmp_path, target, cls):
    folder, _ = _save(micro_pipeline_dir, tmp_path / "q", target=target)
    meta = json.loads((folder / "diffusia.json").read_text())
    assert meta["target"]["requested"] == target and meta["target"]["cpu_class"] == cls
    assert meta["target"]["made_on"]["class"] == cpu.host_class(cpu.detected_features())
    layers = serialization.quantization_config(folder)["quantization_map"]["layers"].values()
    one = [s for s in layers if s["precision"] == "w8a8"]
    two = [s for s in layers if s["precision"] == "w8a8x2"]
    assert one and two
    assert {(s["act_qmax"], s["weight_qmax"]) for s in one} == {(255, 64 if cls == "avx2" else 127)}
    assert {(s["act_qmax"], s["weight_qmax"]) for s in two} == {(127 if cls == "avx2" else 255, 127)}


def test_auto_follows_the_simulated_host(micro_pipeline_dir, tmp_path):
    for cls in cpu.CPU_CLASSES:
        with cpu.simulate(cls):
            folder, _ = _save(micro_pipeline_dir, tmp_path / cls)
        meta = json.loads((folder / "diffusia.json").read_text())
        assert meta["target"]["requested"] == "auto" and meta["target"]["cpu_class"] == cls
        assert meta["target"]["made_on"]["simulated_class"] in (None, cls)


def test_vnni_folder_on_an_avx2_host_is_converted_to_7bit_activations(micro_pipeline_dir, tmp_path):
    folder, image = _save(micro_pipeline_dir, tmp_path / "q", target="vnni")
    with cpu.simulate("avx2"):
        pipe = load_pipeline(folder, progress=False)
        converted = generate(pipe, "a red bag", 1, CFG, progress=False, output_type="np")
    layers = _layers(pipe, "w8a8") + _layers(pipe, "w8a8x2")
    assert layers and all(m.settings.act_qmax == 127 for m in layers)
    assert max(_peak(m) for m in layers) > 64  # the weights are untouched: 7-bit activations keep pairs in int16
    assert all(cpu.pair_sums_fit(m.settings.act_qmax, _peak(m)) for m in layers)
    assert all(k.backend == "onednn" for m in layers for k in m._kernels)  # real kernels, correct on every class
    assert api.target_of(pipe.unet)["converted_on_load"] == {"to": "avx2", "layers": len(layers), "act_qmax": 127}
    # the activation range each layer covers is the one it was calibrated on (one code step coarser)
    m = layers[0]
    scale, zp = m.act_qparams(0)
    lo, hi = float(m.act_range[0, 0]), float(m.act_range[0, 1])
    assert abs(-zp * scale - min(lo, 0.0)) <= scale and abs((127 - zp) * scale - max(hi, 0.0)) <= scale
    diff = np.abs(converted.astype(float) - image.astype(float)).mean()
    assert 0 < diff < 0.05  # 7-bit activations differ a little from 8-bit ones on the micro model


def test_avx2_folder_on_a_vnni_host_loads_unchanged(micro_pipeline_dir, tmp_path):
    folder, image = _save(micro_pipeline_dir, tmp_path / "q", target="avx2")
    with cpu.simulate("vnni"):
        pipe = load_pipeline(folder, progress=False)
        again = generate(pipe, "a red bag", 1, CFG, progress=False, output_type="np")
    one = _layers(pipe, "w8a8")
    assert one and all(m.settings.act_qmax == 255 and _peak(m) <= 64 for m in one)
    assert "converted_on_load" not in api.target_of(pipe.unet)
    np.testing.assert_array_equal(again, image)


def test_a_layout_that_saturates_this_hardware_never_runs_on_onednn(micro_pipeline_dir, tmp_path):
    # simulate a VNNI host on whatever this is: nothing is converted, and on real hardware without VNNI the
    # kernels compute the float reference rather than saturating
    folder, _ = _save(micro_pipeline_dir, tmp_path / "q", target="vnni")
    with cpu.simulate("vnni"):
        pipe = load_pipeline(folder, progress=False)
    one = _layers(pipe, "w8a8")
    assert all(m.settings.act_qmax == 255 for m in one)
    expected = {"onednn"} if HOST_VNNI else {"reference", "onednn"}
    backends = {k.backend for m in one for k in m._kernels}
    assert backends <= expected and (
        HOST_VNNI or all(k.backend == "reference" for m in one if _peak(m) > 64 for k in m._kernels)
    )
