"""benchmarks/bias_correction.py: after a correction measured on float inputs, the quantized layer's mean output
per channel equals the float layer's on those inputs; the sequential correction leaves the fake-quantized U-Net's
output mean where FP32's is more closely than none."""

import copy

import torch

from tests.quant._support import inputs, tiny_unet
from tests.test_bench_backends import _bench_module


def _calibrated(unet, calib):
    from diffusia.config import get_preset
    from diffusia.quant import api

    api.quantize(unet, get_preset("w8a8").replace(calibrator="mse"))
    with torch.no_grad(), api.calibrate(unet):
        for x in calib:
            unet(*x)
    return unet


def test_float_input_correction_cancels_each_layers_mean_shift(monkeypatch):
    from diffusia.quant import api

    bench = _bench_module(monkeypatch, "bias_correction")
    calib = [inputs(s) for s in (1, 2)]
    unet = _calibrated(tiny_unet(), calib)
    name, layer = next((n, m) for n, m in api.qmodules(unet).items() if n.endswith("conv1"))
    before = copy.deepcopy(layer)  # its float weight and bias, its ranges
    seen = []
    hook = layer.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        for x in calib:
            unet(*x)  # float mode: the float model's input to the layer
    hook.remove()
    assert bench.correct_biases(unet, calib, sequential=False) == sum(
        m.spec.act_digits > 0 for m in api.qmodules(unet).values()
    )
    api.enable_fake_quant(unet, True)
    before.set_mode("float")
    with torch.no_grad():
        shift = sum((layer(x) - before(x)).double().mean((0, 2, 3)) for x in seen) / len(seen)
        raw = sum(bench.channel_mean_shift(before, x, before(x), False)[0] for x in seen)
    assert raw.abs().max() > 1e-4  # there was a shift to correct
    assert shift.abs().max() < 1e-5, name


def test_sequential_correction_runs_on_the_batched_inputs_and_adds_missing_biases(monkeypatch):
    from diffusia.quant import api

    bench = _bench_module(monkeypatch, "bias_correction")
    calib = [inputs(s) for s in (1, 2)]
    unet = _calibrated(tiny_unet(), calib)
    without_bias = [n for n, m in api.qmodules(unet).items() if m.spec.act_digits and m.bias is None]
    assert without_bias  # the attention projections (to_q, to_k, to_v)
    assert bench.correct_biases(unet, calib, sequential=True) > 0
    layers = api.qmodules(unet)
    assert all(layers[n].bias is not None and layers[n].bias.abs().sum() > 0 for n in without_bias)
    assert all(m.mode == "float" for m in layers.values())  # left as it was found
