"""The precision registry (a new precision is one entry) and frozen kernels as module state (moves, dtypes)."""

import dataclasses

import pytest
import torch
from torch import nn

from diffusia.analysis.layers import weight_bytes
from diffusia.config import Recipe
from diffusia.errors import DiffusiaError
from diffusia.quant import api, qmath
from diffusia.quant.modules import QSettings, qclass_for
from diffusia.quant.precisions import get_precision, int8_weights, register_precision, unregister_precision
from tests.quant._support import inputs, rel_l2, tiny_unet

X = inputs(3, 400, batch=1)


def run(u, args=X):
    with torch.no_grad():
        return u(*args).sample


@pytest.fixture
def w6():
    """A toy weight-only precision: 6-bit symmetric weights in int8 storage (levels -31..31), the w8 kernels."""
    register_precision(dataclasses.replace(get_precision("w8"), name="w6", weight_bits=6, **int8_weights(qmax=31)))
    yield "w6"
    unregister_precision("w6")


def test_a_registered_precision_runs_through_the_api(w6):
    ref, u = run(tiny_unet()), tiny_unet()
    plan = api.quantize(
        u, Recipe(weights="w8", rules=[("*resnets.*", w6)])
    )  # the recipe validates against the registry
    six = {n for n, p in plan.items() if p == w6}
    assert six and any(p == "w8" for p in plan.values())
    api.enable_fake_quant(u)
    fake = run(u)
    api.freeze(u)
    y = run(u)
    qm = api.qmodules(u)
    for n in six:
        assert qm[n].weight_int8.abs().max() == 31 and qm[n].mode == "real"  # stored on the 6-bit grid
    assert rel_l2(y, fake) < 1e-4  # the fake quantization simulates the frozen weights
    assert 0 < rel_l2(y, ref) < 0.1
    w8 = tiny_unet()
    api.quantize(w8, Recipe(weights="w8"))
    api.freeze(w8)
    assert rel_l2(run(w8), ref) < rel_l2(y, ref)  # coarser than w8
    rows = {line.split()[0]: line.split() for line in api.summary(u).splitlines()[1:]}
    assert all(rows[n][1:3] == ["w6", "6"] for n in six)
    shape = tuple(qm[next(iter(six))].weight_shape)
    assert weight_bytes(shape, w6) == weight_bytes(shape, "w8")

    qmap = api.quantization_map(u)  # the saved form names it as any other precision, and loads back
    assert {qmap["layers"][n]["precision"] for n in six} == {w6}
    loaded = api.load_quantized_state(tiny_unet(), qmap, u.state_dict())
    assert torch.equal(run(loaded), y)


def test_unknown_precisions_are_one_line_errors(w6):
    with pytest.raises(DiffusiaError, match=r"'w3' is not a quantized precision; valid: fp16, bf16, .*w4, w6$"):
        get_precision("w3")
    with pytest.raises(DiffusiaError, match="already defined"):
        register_precision(get_precision("w8"))
    unregister_precision(w6)
    with pytest.raises(DiffusiaError, match="valid: fp32, fp16, bf16, w8a8, w8a8x2, w8, w4, keep"):
        Recipe(weights=w6)


def test_one_activation_quantizer_with_the_kernels_rounding():
    scale, zp = 0.1, 3
    x = torch.tensor([0.05, 0.15, 0.25, -0.05, 1.0]) * (1 + 1e-7)  # ties of x / scale, nudged by float error
    want = (torch.clamp(torch.round(x * torch.tensor(1 / scale, dtype=torch.float32)) + zp, 0, 127) - zp) * scale
    assert torch.equal(qmath.quantize_dequantize_act(x, scale, zp, 127), want)
    xg = x.clone().requires_grad_()
    assert torch.equal(qmath.fake_quant_act(xg, scale, zp, 127).detach(), want)


# ----------------------------------------------------------------- kernels as module state
def frozen_conv(precision: str = "w8a8"):
    base = nn.Conv2d(16, 8, 3, padding=1)
    q = qclass_for(base).from_module(base, QSettings(precision))
    x = torch.randn(2, 16, 6, 6)
    if get_precision(precision).act_digits:
        q.set_mode("calibrate")
        q(x)
        q.compute_ranges()
    q.freeze()
    return q, x


@pytest.mark.parametrize("precision", ["w8a8", "w4", "fp16"])
def test_dtype_change_of_a_frozen_layer_is_refused_before_anything_moves(precision):
    q, x = frozen_conv(precision)
    y = q(x)
    dtypes = {n: t.dtype for n, t in q.state_dict().items()}
    for change in (q.half, q.bfloat16, q.double, lambda: q.to(torch.float16)):
        with pytest.raises(DiffusiaError, match="frozen quantized layer cannot change dtype"):
            change()
    assert {n: t.dtype for n, t in q.state_dict().items()} == dtypes and torch.equal(q(x), y)


@pytest.mark.parametrize("keep_as", ["fp16", "fp32"])
def test_a_quantized_unet_refuses_half_but_moves_to_its_own_device(keep_as):
    u = tiny_unet()
    api.quantize(u, Recipe(weights="w8", keep_as=keep_as))
    api.freeze(u)
    y = run(u)
    dtypes = {n: t.dtype for n, t in u.state_dict().items()}
    for cast in (u.half, lambda: u.to(torch.bfloat16)):  # diffusers' guard on the frozen model: before any layer moves
        with pytest.raises(ValueError, match="quantized model"):
            cast()
    assert {n: t.dtype for n, t in u.state_dict().items()} == dtypes
    kernels = {n: list(m._kernels) for n, m in api.qmodules(u).items()}
    u.to("cpu")  # what pipe.to(device) does on the same device: nothing moves, the kernels stay
    assert all(m._kernels == kernels[n] for n, m in api.qmodules(u).items())
    assert torch.equal(run(u), y)


def test_a_frozen_layer_refuses_a_dtype_change():
    q, _ = frozen_conv("w8a8")
    with pytest.raises(DiffusiaError, match="cannot change dtype"):
        q.half()


def test_a_new_layout_rebuilds_the_kernels_from_the_moved_buffers():
    q, x = frozen_conv("w8a8")
    y, before = q(x), q._kernels[0]
    q.to(memory_format=torch.channels_last)  # replaces the 4-d buffers, as a device move does
    assert q.weight_int8.is_contiguous(memory_format=torch.channels_last)
    assert q._kernels[0] is not before and q._kernels[0].weight_int8 is q.weight_int8
    assert torch.equal(q(x), y)


def test_a_move_where_kernels_cannot_live_is_refused():
    q, x = frozen_conv("w8a8")
    with pytest.raises(DiffusiaError, match="frozen quantized layers run on cpu or cuda, not meta"):
        q.to("meta")
    assert q.weight_int8.device.type == "cpu" and q(x).shape == (2, 8, 6, 6)
