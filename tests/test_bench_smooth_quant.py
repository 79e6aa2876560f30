"""benchmarks/smooth_quant.py: smoothing moves activation range into weights without changing what the float
U-Net computes, and flattens the smoothed linears' input maxima."""

import copy

import torch

from tests.quant._support import inputs, rel_l2, tiny_unet
from tests.test_bench_backends import _bench_module


def test_smoothing_is_float_equivalent_and_evens_the_channels(monkeypatch):
    bench = _bench_module(monkeypatch, "smooth_quant")
    calib = [inputs(s) for s in (1, 2)]
    unet = tiny_unet()
    original = copy.deepcopy(unet)
    pairs = bench.smoothing_pairs(unet)
    # per transformer block: norm1, norm3, norm2, attn2's to_v, attn1's to_v, the GEGLU value half
    blocks = sum(type(m).__name__ == "BasicTransformerBlock" for m in unet.modules())
    assert len(pairs) == 6 * blocks > 0
    proj = pairs[-1][0]
    consumers = [c for _, _, cs in pairs for c in cs]
    before = bench.input_maxima(unet, consumers, calib)
    assert bench.smooth(unet, calib, alpha=1.0) == len(pairs)
    with torch.no_grad():
        for x in calib:
            assert rel_l2(unet(*x).sample, original(*x).sample) < 1e-5
    after = bench.input_maxima(unet, consumers, calib)
    spread = lambda m: float(m.max() / m.min().clamp(min=1e-12))  # noqa: E731
    assert all(spread(after[c]) < spread(before[c]) for c in consumers)  # alpha 1: every channel's max near 1
    assert not torch.equal(proj.weight, original.get_submodule(_name(unet, proj)).weight)


def _name(model, module):
    return next(n for n, m in model.named_modules() if m is module)
