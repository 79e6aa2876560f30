import torch

from diffusia.config import get_preset
from diffusia.qat.lsq import LearnableActScales, QATModel
from diffusia.quant import api
from tests.conftest import build_micro_pipeline


def _fake_quantized_unet(preset: str = "w8a8"):
    unet = build_micro_pipeline().unet
    api.quantize(unet, get_preset(preset))
    inputs = (torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.randn(2, 77, 32))
    with api.calibrate(unet):
        unet(*inputs)
    api.enable_fake_quant(unet)
    return unet, inputs


def test_step_sizes_get_gradients_and_reach_the_layers():
    torch.manual_seed(0)
    unet, inputs = _fake_quantized_unet()
    lsq = LearnableActScales(unet)
    model = QATModel(unet, lsq)
    assert set(dict(model.named_parameters())) >= {f"lsq.log_scale.{k}" for k in lsq.log_scale}
    model(*inputs).square().mean().backward()
    grads = [p.grad for p in lsq.log_scale.values()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) > 0 for g in grads) > len(grads) // 2
    name, layer = next(iter(lsq.layers.items()))
    with torch.no_grad():
        lsq.log_scale[lsq._key(name)].add_(0.5)
    lsq.sync_buffers()
    assert torch.allclose(layer.act_scale, lsq.log_scale[lsq._key(name)].exp())
    lsq.remove()
    assert not lsq._handles


def test_two_digit_layers_learn_their_step_too():
    torch.manual_seed(0)
    unet, inputs = _fake_quantized_unet("w8a8x2")
    x2 = {n for n, m in api.qmodules(unet).items() if m.precision == "w8a8x2"}
    lsq = LearnableActScales(unet)
    assert x2 and x2 <= set(lsq.layers)
    with torch.no_grad():
        before = unet(*inputs).sample
    assert torch.allclose(QATModel(unet, lsq)(*inputs), before, atol=1e-4)  # same grids: the hook changes nothing
    QATModel(unet, lsq)(*inputs).square().mean().backward()
    assert any(float(lsq.log_scale[lsq._key(n)].grad.abs().sum()) > 0 for n in x2)
