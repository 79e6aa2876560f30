"""Real kernels against their float simulations (tight) and against FP32 (loose)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffusia.quant import cpu, qmath
from diffusia.quant import kernels as K

REAL = K.onednn_int8_available()
needs_onednn = pytest.mark.skipif(not REAL, reason="oneDNN INT8 ops not in this torch build")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def qweight(w: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    absmax = w.reshape(w.shape[0], -1).abs().amax(1)
    scale = absmax / qmax
    q = torch.round(w / scale.reshape((-1,) + (1,) * (w.dim() - 1))).clamp(-qmax, qmax).to(torch.int8)
    return q, scale


def act_qparams(x: torch.Tensor, qmax: int) -> tuple[float, int]:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s = (hi - lo) / qmax
    return s, int(round(-lo / s))


def conv_case(seed: int, n: int, c: int, o: int, hw: tuple[int, int], k: int, groups: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = F.silu(torch.randn(n, c, *hw, generator=g) * 2)
    w = torch.randn(o, c // groups, k, k, generator=g) / (c * k * k / groups) ** 0.5
    b = torch.randn(o, generator=g) * 0.1
    return x, w, b


CONV_CASES = [  # (n, c, o, hw, k, stride, padding, dilation, groups)
    (2, 32, 48, (12, 12), 3, 1, 1, 1, 1),
    (2, 32, 32, (12, 10), 3, 2, 1, 1, 1),
    (1, 64, 32, (8, 8), 1, 1, 0, 1, 1),
    (2, 16, 32, (9, 9), 3, 1, 2, 2, 1),
    (2, 32, 32, (8, 8), 3, 1, 1, 1, 2),
]


HOST_VNNI = cpu.has_vnni(cpu.detected_features())


@needs_onednn
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("act_qmax", [127, 255])
@pytest.mark.parametrize("cls", cpu.CPU_CLASSES)
def test_int8_conv2d_matches_reference(case, act_qmax, cls):
    """Each class's layout on any host: real oneDNN where its pair sums cannot saturate here, else the reference."""
    n, c, o, hw, k, stride, padding, dilation, groups = case
    x, w, b = conv_case(0, n, c, o, hw, k, groups)
    wq, ws = qweight(w, cpu.weight_qmax(act_qmax, cls))
    s, zp = act_qparams(x, act_qmax)
    kern = K.Int8Conv2d(wq, ws, b, stride, padding, dilation, groups, s, zp, act_qmax)
    assert kern.backend == ("onednn" if HOST_VNNI or cpu.pair_sums_fit(act_qmax, int(wq.abs().max())) else "reference")
    y = kern(x)
    ref = K.reference_int8_conv2d(x, wq, ws, b, stride, padding, dilation, groups, s, zp, act_qmax)
    fp32 = F.conv2d(x, w, b, stride, padding, dilation, groups)
    assert y.dtype == torch.float32 and y.shape == fp32.shape and y.is_contiguous()
    assert rel(y, ref) < 1e-4
    assert rel(y, fp32) < 0.04


@needs_onednn
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_two_activation_digits_match_reference_and_cut_the_error(kind):
    """act_digits=2 (w8a8x2): the residual's digit goes through the same packed weight; the sum equals the
    reference's two-digit math and leaves only the weight rounding (8-bit weights with 7-bit digits)."""
    x, w, b = conv_case(3, 2, 32, 48, (12, 12), 3)
    if kind == "linear":
        x, w = x.permute(0, 2, 3, 1).reshape(-1, 32), w[:, :, 1, 1].contiguous()
    wq, ws = qweight(w, 127)
    s, zp = act_qparams(x, 127)
    args = (wq, ws, b) + ((1, 1, 1, 1) if kind == "conv" else ())
    make = K.Int8Conv2d if kind == "conv" else K.Int8Linear
    one, two = (make(*args, act_scale=s, act_zero_point=zp, act_qmax=127, act_digits=d) for d in (1, 2))
    ref_fn = K.reference_int8_conv2d if kind == "conv" else K.reference_int8_linear
    ref2 = ref_fn(x, *args, s, zp, 127, 2)
    w_only = (
        F.conv2d(x, wq.float() * ws[:, None, None, None], b, 1, 1)
        if kind == "conv"
        else F.linear(x, wq.float() * ws[:, None], b)
    )  # exact activations, the same int8 weights
    assert rel(two(x), ref2) < 1e-4
    assert rel(two(x), w_only) < rel(one(x), w_only) / 20  # ~7 more bits of activation resolution


@needs_onednn
def test_int8_conv2d_layouts_and_shapes():
    x, w, b = conv_case(1, 2, 32, 32, (8, 8), 3)
    wq, ws = qweight(w)
    s, zp = act_qparams(x, 127)
    kern = K.Int8Conv2d(wq, ws, None, 1, 1, 1, 1, s, zp)
    xcl = x.contiguous(memory_format=torch.channels_last)
    y_cl = kern(xcl)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y_cl, kern(x))
    # one packed weight serves other batch sizes and resolutions
    for shape in [(1, 32, 5, 7), (3, 32, 16, 16)]:
        xi = F.silu(torch.randn(shape))
        ref = K.reference_int8_conv2d(xi, wq, ws, None, 1, 1, 1, 1, s, zp, 127)
        assert rel(kern(xi), ref) < 1e-4


@needs_onednn
@pytest.mark.parametrize("shape", [(37, 64), (2, 9, 64)])
def test_int8_linear_matches_reference(shape):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, generator=g)
    w, b = torch.randn(80, 64, generator=g) / 8, torch.randn(80, generator=g)
    wq, ws = qweight(w)
    s, zp = act_qparams(x, 127)
    kern = K.Int8Linear(wq, ws, b, s, zp, 127)
    assert kern.backend == "onednn"
    y = kern(x)
    assert y.shape == (*shape[:-1], 80) and y.dtype == torch.float32
    assert rel(y, K.reference_int8_linear(x, wq, ws, b, s, zp, 127)) < 1e-4
    assert rel(y, F.linear(x, w, b)) < 0.04


@needs_onednn
def test_out_of_range_activations_clamp_like_reference():
    """Inputs beyond the calibrated range clamp to act_qmax (127), exactly as the reference does."""
    x = torch.randn(64, 64)
    wq, ws = qweight(torch.randn(32, 64))
    s, zp = act_qparams(x * 0.3, 127)  # calibrated on a narrower range
    y = K.Int8Linear(wq, ws, None, s, zp, 127)(x)
    assert rel(y, K.reference_int8_linear(x, wq, ws, None, s, zp, 127)) < 1e-4
    q = K.quantize_act_u8(x, s, zp, 127)
    assert q.dtype == torch.uint8 and int(q.max()) == 127


def test_quantize_act_u8_rounds_like_reference():
    x = torch.randn(3, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    s, zp = act_qparams(x, 127)
    q = K.quantize_act_u8(x, s, zp, 127)
    ref = torch.clamp(torch.round(x * (1.0 / s)) + zp, 0, 127)
    assert q.is_contiguous(memory_format=torch.channels_last)
    assert int((q.float() - ref).abs().max()) <= 1 and float((q.float() != ref).float().mean()) < 1e-3


@needs_onednn
@pytest.mark.skipif(HOST_VNNI, reason="this CPU has VNNI: int8 products accumulate in int32, nothing saturates")
def test_8bit_activations_with_8bit_weights_saturate_without_vnni(monkeypatch):
    """Without VNNI, u8 (0..255) x s8 (+-127) on oneDNN deviates from its own reference, 7-bit either side does not;
    so the kernel refuses oneDNN for that layout and computes the reference instead."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 512, generator=g)
    w = torch.randn(256, 512, generator=g)
    wq, ws = qweight(w, 127)
    s, zp = act_qparams(x, 255)
    assert K.Int8Linear(wq, ws, None, s, zp, 255).backend == "reference"
    errs = {}
    with monkeypatch.context() as m:  # pretend the hardware had VNNI, to see what oneDNN would compute
        m.setattr(cpu, "detected_features", lambda: cpu.parse_features("vnni"))
        for act_qmax, w_qmax in [(255, 127), (127, 127), (255, 64)]:
            wq, ws = qweight(w, w_qmax)
            s, zp = act_qparams(x, act_qmax)
            kern = K.Int8Linear(wq, ws, None, s, zp, act_qmax)
            assert kern.backend == "onednn"
            errs[(act_qmax, w_qmax)] = rel(kern(x), K.reference_int8_linear(x, wq, ws, None, s, zp, act_qmax))
    assert errs[(255, 127)] > 1e-3
    assert errs[(127, 127)] < 1e-4 and errs[(255, 64)] < 1e-4


@needs_onednn
@pytest.mark.skipif(not HOST_VNNI, reason="this CPU has no VNNI")
def test_8bit_activations_with_8bit_weights_are_exact_with_vnni():
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(256, 512, generator=g), torch.randn(256, 512, generator=g)
    wq, ws = qweight(w, 127)
    s, zp = act_qparams(x, 255)
    kern = K.Int8Linear(wq, ws, None, s, zp, 255)
    assert kern.backend == "onednn" and rel(kern(x), K.reference_int8_linear(x, wq, ws, None, s, zp, 255)) < 1e-4


def test_int4_pack_roundtrip_and_format():
    q = torch.randint(-8, 8, (5, 64), dtype=torch.int8)
    packed = K.pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 32)
    assert torch.equal(K.unpack_int4(packed), q)
    # low nibble = even column, high nibble = odd column, stored as value + 8
    assert int(packed[0, 0]) == (int(q[0, 0]) + 8) | ((int(q[0, 1]) + 8) << 4)
    with pytest.raises(ValueError):
        K.pack_int4(torch.full((1, 2), 8))


def quantize_int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    w2 = w.reshape(w.shape[0], -1)
    cols = w2.shape[1]
    padded = -(-cols // group) * group
    w2 = F.pad(w2, (0, padded - cols)).reshape(w.shape[0], -1, group)
    scale = w2.abs().amax(-1).clamp_min(1e-12) / 7
    q = torch.round(w2 / scale[..., None]).clamp(-8, 7).reshape(w.shape[0], padded)
    return K.pack_int4(q), scale


@pytest.mark.parametrize("group", [32, 64, 128])
def test_weight_int4_linear(group):
    g = torch.Generator().manual_seed(4)
    x, w, b = torch.randn(2, 7, 200, generator=g), torch.randn(48, 200, generator=g), torch.randn(48, generator=g)
    packed, scale = quantize_int4(w, group)
    kern = K.WeightInt4Linear(packed, scale, b, group_size=group, in_features=200)
    assert kern.weight_int4.dtype == torch.uint8 and kern.weight_int4.numel() * 2 >= 48 * 200
    wd = qmath.dequantize_weight_int4(packed, scale, (48, 200))
    y = kern(x)
    assert rel(y, F.linear(x, wd, b)) < 1e-5
    assert rel(y, F.linear(x, w, b)) < 0.15


def test_weight_int4_conv2d_padded_groups():
    x, w, b = conv_case(5, 2, 4, 16, (8, 8), 3)  # 4 * 3 * 3 = 36 columns, padded to 64
    packed, scale = quantize_int4(w, 64)
    assert packed.shape == (16, 32)
    kern = K.WeightInt4Conv2d(packed, scale, b, 1, 1, 1, 1, group_size=64, weight_shape=tuple(w.shape))
    wd = qmath.dequantize_weight_int4(packed, scale, tuple(w.shape))
    y = kern(x)
    assert rel(y, F.conv2d(x, wd, b, 1, 1)) < 1e-5
    assert rel(y, F.conv2d(x, w, b, 1, 1)) < 0.15


def test_weight_int8_linear_and_conv():
    x, w, b = conv_case(6, 2, 32, 24, (6, 6), 3)
    wq, ws = qweight(w)
    conv = K.WeightInt8Conv2d(wq, ws, b, 1, 1, 1, 1)
    assert conv.weight_int8.dtype == torch.int8
    assert rel(conv(x), F.conv2d(x, wq.float() * ws[:, None, None, None], b, 1, 1)) < 1e-5
    assert rel(conv(x), F.conv2d(x, w, b, 1, 1)) < 0.02
    xl, wl = torch.randn(2, 5, 64), torch.randn(40, 64)
    wlq, wls = qweight(wl)
    for use_pack in (False, True):
        lin = K.WeightInt8Linear(wlq, wls, None, use_int8pack=use_pack)
        assert rel(lin(xl), F.linear(xl, wlq.float() * wls[:, None])) < 1e-5
        assert rel(lin(xl), F.linear(xl, wl)) < 0.02


def test_contract_validation():
    wq, ws = qweight(torch.randn(8, 4, 3, 3))
    with pytest.raises(TypeError):
        K.Int8Conv2d(wq.float(), ws, None, 1, 1, 1, 1, 0.1, 0)
    with pytest.raises(ValueError):
        K.Int8Conv2d(wq, ws, None, 1, 1, 1, 1, 0.1, 200, act_qmax=127)
    with pytest.raises(ValueError):
        K.WeightInt4Linear(torch.zeros(8, 16, dtype=torch.uint8), torch.ones(8, 3), None, group_size=32, in_features=32)


@needs_onednn
def test_int8_kernels_survive_deepcopy_and_pickle():
    """The opaque oneDNN packed weight is rebuilt from weight_int8 (models holding kernels can be copied)."""
    import copy
    import pickle

    x, w, b = conv_case(7, 1, 8, 8, (5, 5), 3)
    wq, ws = qweight(w)
    s, zp = act_qparams(x, 127)
    conv = K.Int8Conv2d(wq, ws, b, 1, 1, 1, 1, s, zp)
    lin = K.Int8Linear(wq.reshape(8, -1), ws, b, s, zp)
    xl = torch.randn(3, 72)
    for kern, inp in ((conv, x), (lin, xl)):
        for clone in (copy.deepcopy(kern), pickle.loads(pickle.dumps(kern))):
            assert clone.backend == "onednn" and torch.equal(clone(inp), kern(inp))
