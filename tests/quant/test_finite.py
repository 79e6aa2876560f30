import pytest
import torch

from diffusia.errors import DiffusiaError
from diffusia.quant.finite import check_finite
from tests.quant._support import tiny_unet
from tests.quant.test_api import EVAL, frozen, run


def test_check_finite_names_the_first_bad_layer():
    u = tiny_unet()
    assert check_finite(u, *EVAL).sample.shape == (1, 4, 16, 16)
    with torch.no_grad():
        u.down_blocks[1].resnets[0].conv2.weight[3, 0, 0, 0] = float("nan")
    with pytest.raises(DiffusiaError, match=r"'down_blocks\.1\.resnets\.0\.conv2' \(Conv2d\)"):
        check_finite(u, *EVAL)


def test_check_finite_on_a_frozen_model():
    u = frozen("w8a8")[0]
    check_finite(u, *EVAL)
    layer = u.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn1.to_k")
    saved = layer.weight_scale[0].item()
    try:
        layer.weight_scale[0] = float("inf")
        layer.build_kernels()  # kernels may pre-pack scales
        with pytest.raises(DiffusiaError, match=r"'mid_block\.attentions\.0\.transformer_blocks\.0\.attn1\.to_k'"):
            check_finite(u, *EVAL)
    finally:
        layer.weight_scale[0] = saved
        layer.build_kernels()
    x, t, e = EVAL
    with pytest.raises(DiffusiaError, match="input"):
        check_finite(u, x * float("nan"), t, e)
    assert torch.equal(run(u), frozen("w8a8")[1])  # restored
