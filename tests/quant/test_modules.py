import dataclasses

import pytest
import torch
from torch import nn

from diffusia.errors import DiffusiaError
from diffusia.quant import qmath
from diffusia.quant.kernels import onednn_int8_available
from diffusia.quant.modules import QConv2d, QLinear, QSettings, qclass_for
from diffusia.quant.timestep import TimestepState
from tests.quant._support import rel_l2

torch.manual_seed(0)


def make(kind: str, precision: str, groups: int = 1, ts=None, **kw):
    base = nn.Conv2d(36, 24, 3, padding=1) if kind == "conv" else nn.Linear(40, 24)
    q = qclass_for(base).from_module(base, QSettings(precision, timestep_groups=groups, **kw), ts)
    return base, q


def x_for(kind: str, scale: float = 1.0):
    x = torch.randn(2, 36, 8, 8) if kind == "conv" else torch.randn(2, 5, 40)
    return torch.nn.functional.silu(x) * scale


def test_registry_and_sharing():
    base, q = make("conv", "w8a8")
    assert type(q) is QConv2d and isinstance(q, nn.Conv2d) and q.weight is base.weight
    assert qclass_for(nn.Linear(2, 2)) is QLinear
    with pytest.raises(DiffusiaError, match="Conv2d, Linear"):
        qclass_for(nn.Conv1d(2, 2, 1))
    with pytest.raises(DiffusiaError, match="not a quantized precision"):
        QSettings("fp32")


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_float_and_calibrate_modes_match_original(kind):
    base, q = make(kind, "w8a8")
    x = x_for(kind)
    assert torch.equal(q(x), base(x))
    q.set_mode("calibrate")
    assert torch.equal(q(x), base(x)) and not q._calibrators[0].empty
    assert q.compute_ranges()
    scale, zp = q.act_qparams(0)
    assert scale > 0 and 0 <= zp <= 127 and q.calibrated


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize(
    "precision, tol", [("w8a8", 0.03), ("w8a8x2", 0.01), ("w8", 0.01), ("w4", 0.15), ("fp16", 1e-3), ("bf16", 1e-2)]
)
def test_fake_close_to_float_and_real_matches_fake(kind, precision, tol):
    calibrator = "minmax" if precision == "w8a8x2" else "percentile"  # as api.layer_settings chooses
    base, q = make(kind, precision, group_size=32, calibrator=calibrator)
    x = x_for(kind)
    ref = base(x).detach()
    q.set_mode("calibrate")
    q(x)
    q.compute_ranges()
    q.set_mode("fake")
    fake = q(x).detach()
    assert rel_l2(fake, ref) < tol
    q.set_mode("real")
    with torch.no_grad():
        real = q(x)
    assert rel_l2(real, fake) < 1e-3  # the real kernel against the simulated reference
    if precision in ("w8a8", "w8a8x2") and onednn_int8_available():
        assert q._kernels[0].backend == "onednn"  # really INT8, not a float fallback


@pytest.mark.parametrize(
    "precision, names, dtypes",
    [
        (
            "w8a8",
            ["weight_int8", "weight_scale", "act_scale", "act_zero_point"],
            [torch.int8, torch.float32, torch.float32, torch.int32],
        ),
        (
            "w8a8x2",
            ["weight_int8", "weight_scale", "act_scale", "act_zero_point"],
            [torch.int8, torch.float32, torch.float32, torch.int32],
        ),
        ("w8", ["weight_int8", "weight_scale"], [torch.int8, torch.float32]),
        ("w4", ["weight_int4", "weight_scale"], [torch.uint8, torch.float16]),
        ("fp16", ["weight_fp16"], [torch.float16]),
        ("bf16", ["weight_bf16"], [torch.bfloat16]),
    ],
)
def test_frozen_buffers(precision, names, dtypes):
    _, q = make("conv", precision)
    q.set_mode("calibrate")
    q(x_for("conv"))
    q.compute_ranges()
    q.freeze()
    sd = q.state_dict()
    assert q.weight is None and "weight" not in sd and q.mode == "real"
    assert [sd[n].dtype for n in names] == dtypes
    specs = q.frozen_buffer_specs()
    assert all(tuple(sd[n].shape) == shape and sd[n].dtype == dt for n, (shape, dt) in specs.items())
    if precision == "w4":  # 36*9 = 324 columns, padded to 384 for groups of 64, two per byte
        assert sd["weight_int4"].shape == (24, 192) and sd["weight_scale"].shape == (24, 6)


def test_int4_pack_round_trip():
    q = torch.randint(-8, 8, (5, 12))
    assert torch.equal(qmath.unpack_int4(qmath.pack_int4(q)), q.to(torch.int8))


def test_fake_quant_has_straight_through_gradient():
    _, q = make("linear", "w8a8")
    x = x_for("linear").requires_grad_()
    q.set_mode("calibrate")
    q(x)
    q.compute_ranges()
    q.set_mode("fake")
    q(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and q.weight.grad.abs().sum() > 0


def test_modes_are_checked():
    _, q = make("conv", "w8a8")
    with pytest.raises(DiffusiaError, match="calibrate before"):
        q.set_mode("fake")
    with pytest.raises(DiffusiaError, match="unknown mode"):
        q.set_mode("train")
    with pytest.raises(DiffusiaError, match="calibrate before freeze"):
        q.freeze()


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_timestep_groups_pick_their_own_range(kind):
    ts = TimestepState(groups=2, num_train_timesteps=1000)
    _, q = make(kind, "w8a8", groups=2, ts=ts)
    small, large = x_for(kind, 1.0), x_for(kind, 10.0)
    q.set_mode("calibrate")
    ts.set(100)
    q(small)
    ts.set(900)
    q(large)
    q.compute_ranges()
    assert q.act_scale[1] > 5 * q.act_scale[0]
    q.freeze()
    assert len(q._kernels) == 2
    with torch.no_grad():
        ts.set(100)
        y_small_g0 = q(small)
        ts.set(900)
        y_small_g1 = q(small)
    ref = (
        torch.nn.functional.linear(small, q.weight_int8.float() * q.weight_scale[:, None]) if kind == "linear" else None
    )
    assert not torch.equal(y_small_g0, y_small_g1)  # coarser grid in group 1
    if ref is not None:
        ref = ref + q.bias
        assert rel_l2(y_small_g0, ref) < rel_l2(y_small_g1, ref)


def test_empty_timestep_group_gets_union_range():
    ts = TimestepState(groups=3)
    _, q = make("linear", "w8a8", groups=3, ts=ts)
    q.set_mode("calibrate")
    ts.set(0)
    q(x_for("linear"))
    q.compute_ranges()
    assert torch.equal(q.act_range[1], q.act_range[0]) and q.calibrated


@pytest.mark.parametrize("qmax", [255, 127])
def test_the_residual_digit_is_symmetric_around_mid_scale(qmax):
    """The second digit's codes span +-(qmax//2) steps around (qmax+1)//2 (signed INT8 for OpenVINO), never clamped."""
    scale, zp = qmath.act_qparams(-3.0, 5.0, qmax)
    s2, zp2 = qmath.residual_qparams(scale, qmax)
    assert zp2 == (qmax + 1) // 2 and s2 == pytest.approx(scale / (2 * (qmax // 2)))
    x = torch.linspace(-2.9, 4.9, 100_003)
    from diffusia.quant.kernels._common import quantize_act_digits

    q1, q2 = quantize_act_digits(x, scale, zp, qmax, digits=2)
    codes = q2.int() - zp2
    assert int(codes.min()) == -(qmax // 2) and int(codes.max()) == qmax // 2


def test_two_digit_fake_quant_resolves_the_residual_with_identity_gradient():
    x = (torch.randn(1000) * 1.5).requires_grad_()
    scale, zp = qmath.act_qparams(-4.0, 4.0, 127)
    y = qmath.fake_quant_act(x, scale, zp, 127, digits=2)
    inside = x.detach().abs() < 3.9
    step2 = qmath.residual_qparams(scale, 127)[0]
    assert float((y - x).detach()[inside].abs().max()) <= step2 / 2 + 1e-6  # second digit's half step
    assert float((qmath.fake_quant_act(x, scale, zp, 127) - x).detach().abs().max()) > 20 * step2
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # one straight-through path, not one per digit


@pytest.mark.parametrize("qmax", [255, 127])
def test_symmetric_act_qparams_put_zero_at_mid_scale_and_cover_both_sides(qmax):
    scale, zp = qmath.act_qparams(-1.0, 3.0, qmax, symmetric=True)
    assert zp == (qmax + 1) // 2 and scale == pytest.approx(6.0 / qmax)
    assert -zp * scale <= -3.0 + 1e-6 and (qmax - zp) * scale >= 3.0 - scale  # +-3 inside, one step at the top
    assert qmath.act_qparams(0.5, 3.0, qmax, symmetric=True) == qmath.act_qparams(0.5, 3.0, qmax)  # no negative part
    assert qmath.act_qparams(-1.0, 3.0, qmax)[1] != zp  # asymmetric by default


def test_balanced_ranges_are_the_only_symmetric_ones():
    assert qmath.is_balanced(-1.0, 3.0) and qmath.is_balanced(-4.0, 1.0)
    assert not qmath.is_balanced(-0.28, 3.0) and not qmath.is_balanced(0.0, 3.0) and not qmath.is_balanced(-2.0, 0.0)


@pytest.mark.parametrize("calibrator", ["mse", "percentile"])
def test_balanced_activations_are_symmetric_where_the_range_is_balanced(calibrator):
    """`--activations balanced`: a layer whose input reaches both sides of 0 about evenly gets the calibrator's own
    symmetric range (zero point at mid-scale, the MSE calibrator searching one radius); one after SiLU keeps its
    affine range, exactly as with uint8."""
    for x, symmetric in ((torch.randn(2, 5, 40), True), (x_for("linear"), False)):
        qparams = {}
        for mode in ("uint8", "int8", "balanced"):
            kw = dict(act_symmetric=mode == "int8", act_balanced=mode == "balanced")
            _, q = make("linear", "w8a8", act_qmax=255, calibrator=calibrator, **kw)
            q.set_mode("calibrate")
            q(x)
            q.compute_ranges()
            qparams[mode] = q.act_qparams(0)
        assert qparams["balanced"] == qparams["int8" if symmetric else "uint8"]
        assert (qparams["balanced"][1] == 128) == symmetric and qparams["int8"] != qparams["uint8"]


def test_int8_activations_calibrate_symmetric_ranges():
    x = x_for("linear") - 0.1  # a range with more above zero than below
    for symmetric in (False, True):
        _, q = make("linear", "w8a8", act_qmax=255, act_symmetric=symmetric)
        q.set_mode("calibrate")
        q(x)
        q.compute_ranges()
        scale, zp = q.act_qparams(0)
        lo, hi = (float(v) for v in q.act_range[0])
        assert lo < 0 < hi and abs(lo) < hi  # the calibrated range itself is kept as observed
        if symmetric:
            assert zp == 128 and scale == pytest.approx(2 * hi / 255)
        else:
            assert zp == round(-lo / scale) and scale == pytest.approx((hi - lo) / 255)


def test_ranges_follow_settings_changed_after_calibration():
    """The sensitivity analysis re-targets a calibrated layer (w8a8x2: min-max range) without another pass."""
    x = x_for("linear")
    _, q = make("linear", "w8a8", act_qmax=255, calibrator="percentile")
    q.set_mode("calibrate")
    q(x)
    q.compute_ranges()
    clipped = [float(v) for v in q.act_range[0]]
    q.settings = dataclasses.replace(q.settings, precision="w8a8x2", calibrator="minmax")
    q.compute_ranges()
    assert [float(v) for v in q.act_range[0]] == [float(x.min()), float(x.max())]
    assert float(x.min()) < clipped[0] and clipped[1] < float(x.max())
    q.settings = dataclasses.replace(q.settings, precision="w8a8", calibrator="percentile")
    q.compute_ranges()
    assert [float(v) for v in q.act_range[0]] == clipped
