import collections
import dataclasses

import onnx
import pytest

from diffusia.config import get_preset
from diffusia.errors import DiffusiaError
from diffusia.export.onnx import check_against_onnxruntime, export_unet
from diffusia.prompts import load_prompts
from diffusia.quant.pipeline import quantize_pipeline
from tests.conftest import build_micro_pipeline


def _quantized(preset, **changes):
    pipe = build_micro_pipeline()
    recipe = dataclasses.replace(get_preset(preset), **changes)
    return quantize_pipeline(pipe, recipe, load_prompts("tiny"), calib_size=2, steps=2,
                             progress=False, validate=False)


def test_default_w8a8_onnx_graph_runs_the_same_math_in_onnxruntime(tmp_path):
    # 8-bit activations: ORT equals the exported QDQ math; against diffusia's oneDNN kernels the random micro
    # model amplifies rare last-bit differences of one GEGLU projection (3e-4 on that layer) to ~2 %
    pipe = _quantized("w8a8", keep_as="fp32")
    check = check_against_onnxruntime(pipe.unet, export_unet(pipe.unet, tmp_path / "unet.onnx"))
    assert check["relative_l2_vs_qdq_graph"] < 1e-4
    assert check["relative_l2_vs_diffusia"] < 0.05


@pytest.mark.xfail(strict=True, reason="known bug: with the kept layers stored in FP16 (the presets' keep_as), "
                   "ONNX Runtime differs from the exported QDQ graph by 0.4-1.6 % on the micro model; not found yet")
def test_fp16_kept_layers_export_the_same_math(tmp_path):
    pipe = _quantized("w8a8")
    check = check_against_onnxruntime(pipe.unet, export_unet(pipe.unet, tmp_path / "unet.onnx"))
    assert check["relative_l2_vs_qdq_graph"] < 1e-4


def test_w8a8_exports_qdq_with_int8_weights_matching_onnxruntime(tmp_path):
    pipe = _quantized("w8a8", activations="uint7", keep_as="fp32")
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    model = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    int8_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert len(int8_inits) == ops["DequantizeLinear"] - ops["QuantizeLinear"]  # one per quantized weight
    assert check_against_onnxruntime(pipe.unet, path)["relative_l2_vs_diffusia"] < 1e-3


def test_weight_only_int8_export(tmp_path):
    pipe = _quantized("w8")
    path = export_unet(pipe.unet, tmp_path / "unet.onnx")
    assert check_against_onnxruntime(pipe.unet, path)["relative_l2_vs_diffusia"] < 1e-2


def test_float_unet_is_refused(tmp_path):
    with pytest.raises(DiffusiaError, match="frozen quantized"):
        export_unet(build_micro_pipeline().unet, tmp_path / "unet.onnx")
    assert not list(tmp_path.iterdir())
