import onnx
import pytest
import torch
import torch.nn.functional as F

from diffusia.export.compare import same_codes
from diffusia.export.head_slices import one_head_at_a_time
from diffusia.export.onnx import check_against_onnxruntime, export_unet
from diffusia.quant import attention
from diffusia.runtime.artifact import export_runtime
from tests.export.test_onnx import _quantized


@pytest.fixture
def slice_all(monkeypatch):
    """Every attention counts as large (the micro U-Net's are far below `SCORES_AT_ONCE`)."""
    monkeypatch.setattr("diffusia.export.head_slices.SCORES_AT_ONCE", 0)


@pytest.mark.parametrize("mask", [None, "per-head", "broadcast"])
def test_attention_per_head_computes_the_same_values(mask, slice_all):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=g) for _ in range(3))
    m = {None: None, "per-head": torch.randn(2, 4, 16, 16, generator=g), "broadcast": torch.randn(2, 1, 16, 16)}[mask]
    whole = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    original = F.scaled_dot_product_attention
    with one_head_at_a_time():
        assert F.scaled_dot_product_attention is not original
        sliced = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    assert F.scaled_dot_product_attention is original
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-6)


def _softmaxes(path) -> int:
    return sum(n.op_type == "Softmax" for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_small_attentions_stay_whole(tmp_path):
    pipe = _quantized("w8", keep_as="fp32")
    whole = export_unet(pipe.unet, tmp_path / "whole.onnx")
    assert _softmaxes(export_unet(pipe.unet, tmp_path / "small.onnx", per_head_attention=True)) == _softmaxes(whole)


def test_onnxruntime_graph_runs_float_attention_per_head_with_the_same_codes(tmp_path, slice_all):
    pipe = _quantized("w8a8", keep_as="fp32")
    heads = {m.heads for m in attention.attentions(pipe.unet).values()}
    whole = export_unet(pipe.unet, tmp_path / "whole.onnx")
    sliced = export_unet(pipe.unet, tmp_path / "sliced.onnx", per_head_attention=True)
    assert heads == {8} and _softmaxes(sliced) == 8 * _softmaxes(whole) == 8 * len(attention.attentions(pipe.unet))
    check = check_against_onnxruntime(pipe.unet, sliced)
    assert same_codes(check["codes"]), check["codes"]
    assert check["quantizers"]["other_differences"] == 0


def test_onnxruntime_artifact_slices_float_attention_and_leaves_int8_attention_whole(tmp_path, slice_all):
    floats = _quantized("w8", keep_as="fp32")
    manifest = export_runtime(floats.unet, "onnxruntime", tmp_path / "float")
    assert manifest["check"]["relative_l2_vs_diffusia"] < 1e-5  # weight-only: float math, reordered per head
    assert _softmaxes(tmp_path / "float" / manifest["files"][0]) == 8 * len(attention.attentions(floats.unet))
    int8 = _quantized("w8a8", attention="int8")
    manifest = export_runtime(int8.unet, "onnxruntime", tmp_path / "int8")
    assert _softmaxes(tmp_path / "int8" / manifest["files"][0]) == len(attention.attentions(int8.unet))
