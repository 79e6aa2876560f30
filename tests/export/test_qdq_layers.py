import dataclasses

import onnx
import pytest
import torch
from diffusers.models.activations import GEGLU

from diffusia.config import get_preset
from diffusia.export import qdq_layers
from diffusia.export.compare import digit_of, layer_of
from diffusia.export.onnx import export_unet
from diffusia.prompts import load_prompts
from diffusia.quant import api
from diffusia.quant.pipeline import quantize_pipeline
from tests.conftest import build_micro_pipeline


def _quantized(preset: str, **changes):
    recipe = dataclasses.replace(get_preset(preset), **changes)
    pipe = quantize_pipeline(
        build_micro_pipeline(), recipe, load_prompts("tiny"), calib_size=2, steps=2, progress=False, validate=False
    )
    return pipe.unet


def _geglus(unet):
    return [m for m in unet.modules() if isinstance(m, GEGLU)]


def _whole(monkeypatch):
    monkeypatch.setattr(qdq_layers, "split_geglus", lambda unet, qmods: [])


@pytest.mark.parametrize("preset", ["w8a8", "w8a8x2", "w8"])
def test_geglu_projection_in_halves_computes_the_same(preset, monkeypatch):
    unet = _quantized(preset)
    qmods = api.qmodules(unet)
    geglus = qdq_layers.split_geglus(unet, qmods)
    assert len(geglus) == len(_geglus(unet)) == 4  # the micro U-Net's feed-forwards, all quantized
    xs = [
        torch.randn(2, 5, g.proj.in_features, generator=torch.Generator().manual_seed(i)) for i, g in enumerate(geglus)
    ]
    with torch.no_grad(), qdq_layers.qdq_mode(unet):
        split = [g(x) for g, x in zip(geglus, xs)]
        value, gate = geglus[0].proj(xs[0])
    assert value.shape == gate.shape == (2, 5, geglus[0].proj.out_features // 2)
    _whole(monkeypatch)
    with torch.no_grad(), qdq_layers.qdq_mode(unet):
        whole = [g(x) for g, x in zip(geglus, xs)]
    for a, b in zip(split, whole):  # one input quantization, the same codes: equal to float rounding
        assert torch.allclose(a, b, rtol=0, atol=1e-6 * b.abs().max().item())
    # the forwards are the modules' own again, their temporary scale buffers gone
    assert all("forward" not in vars(m) for m in [*qmods.values(), *geglus])
    assert not [n for m in qmods.values() for n in m._buffers if n.startswith(qdq_layers.TEMPORARY_BUFFER)]


def test_int4_projection_exports_whole():
    unet = _quantized("w4")
    assert all(g.proj.spec.grouped for g in _geglus(unet))
    assert qdq_layers.split_geglus(unet, api.qmodules(unet)) == []
    with pytest.raises(Exception, match="int4 layer exports whole"):
        qdq_layers.qdq_forward(_geglus(unet)[0].proj, parts=2)


def _proj_nodes(path):
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return [n for n in nodes if "/ff/net.0/" in n.name]


@pytest.mark.parametrize("preset", ["w8a8", "w8a8x2"])
def test_exported_geglu_has_two_layers_on_one_quantized_input(tmp_path, preset, monkeypatch):
    unet = _quantized(preset)
    split = _proj_nodes(export_unet(unet, tmp_path / "split.onnx"))
    _whole(monkeypatch)
    whole = _proj_nodes(export_unet(unet, tmp_path / "whole.onnx"))

    def count(nodes, op):
        return sum(n.op_type == op for n in nodes)

    geglus = len(_geglus(unet))
    assert count(whole, "Split") + count(whole, "Slice") >= geglus  # the wide output, cut in two
    assert count(split, "Split") == count(split, "Slice") == 0
    assert count(split, "MatMul") == 2 * count(whole, "MatMul") > 0
    # one input quantizer per layer (and one residual digit for w8a8x2), in the projection's scope
    quantizers = [n.name for n in split if n.op_type == "QuantizeLinear"]
    assert len(quantizers) == sum(g.proj.spec.act_digits for g in _geglus(unet)) >= geglus
    assert sorted(map(digit_of, quantizers)) == sorted(digit_of(n.name) for n in whole if n.op_type == "QuantizeLinear")
    assert all(layer_of(q).endswith("ff.net.0.proj") for q in quantizers)
    assert (tmp_path / "split.onnx").stat().st_size == pytest.approx((tmp_path / "whole.onnx").stat().st_size, 0.01)


def test_float_kept_projection_is_not_split():
    unet = _quantized("w8a8", rules=[("*ff.net.0.proj", "keep")])
    assert len(_geglus(unet)) == 4
    assert qdq_layers.split_geglus(unet, api.qmodules(unet)) == []
