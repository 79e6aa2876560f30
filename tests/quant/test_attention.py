"""INT8 attention: Q/K/V and the attention probabilities quantized by a diffusers attention processor."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from diffusia.config import Recipe, Rule, get_preset
from diffusia.errors import DiffusiaError
from diffusia.quant import api, attention
from tests.quant._support import rel_l2, tiny_unet
from tests.quant.test_api import CALIB, run
from tests.quant.test_api import quantized as quantized_with

INT8_ATTENTION = get_preset("w8a8").replace(attention="int8")


def quantized(recipe=INT8_ATTENTION, freeze=True):
    return quantized_with(recipe, freeze)


def test_float_mode_is_diffusers_attention():
    u = tiny_unet()
    reference = run(u)
    names = list(attention.attentions(u))
    attention.install(u, names)
    assert len(attention.processors(u)) == len(names) == 8  # self and cross attention of 4 transformer blocks
    torch.testing.assert_close(run(u), reference, rtol=1e-5, atol=1e-6)


def test_installed_where_the_projections_are_w8a8_only():
    kept = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    u = tiny_unet()
    api.quantize(u, INT8_ATTENTION.replace(rules=[Rule(f"{kept}.to_k", "w8")]))
    assert kept not in attention.processors(u) and len(attention.processors(u)) == 7
    assert set(attention.quantizers(u)) <= set(api.observers(u))
    with pytest.raises(DiffusiaError, match="to_q/to_k/to_v are W8A8 layers, and this plan has none"):
        api.quantize(tiny_unet(), get_preset("mixed").replace(attention="int8"))
    with pytest.raises(DiffusiaError, match="recipe field 'attention' is 'int4'; valid: float, int8"):
        Recipe(attention="int4")


def test_eligible_in_a_plan_of_the_float_unet_is_where_quantize_installs():
    from diffusia.quant.policy import plan

    recipe = INT8_ATTENTION.replace(rules=[Rule("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "w8")])
    u = tiny_unet()
    planned = attention.eligible(u, plan(u, recipe))
    api.quantize(u, recipe)
    assert planned == list(attention.processors(u)) and len(planned) == 7
    u = tiny_unet()
    assert attention.eligible(u, plan(u, get_preset("mixed"))) == []  # its attention linears stay fp16


def test_calibrated_ranges_and_real_codes():
    u = quantized()
    quantizers = attention.quantizers(u)
    assert len(quantizers) == 4 * 8 and all(q.mode == "real" for q in quantizers.values())
    for name, q in quantizers.items():
        scale, zp = q.act_qparams(0)
        lo, hi = q.act_range[0].tolist()
        if name.endswith(".probs"):  # u8 from 0: a softmax over few keys reaches well above its mean
            assert zp == 0 and 0 <= lo < hi <= 1, (name, lo, hi)
        else:  # symmetric int8: zero point at mid-scale
            assert zp == 128 and lo == -hi and hi > 0, name
    probs = quantizers["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.probs"]
    seen = []
    handle = probs.register_forward_hook(lambda m, a, y: seen.append((y / m.act_qparams(0)[0]).flatten()))
    out = run(u)
    handle.remove()
    codes = torch.cat(seen)
    assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.max() <= 255 and len(codes.unique()) > 20
    float_attention = quantized(get_preset("w8a8"))
    difference = rel_l2(out, run(float_attention))
    assert 1e-4 < difference < 0.05, difference  # measured 1.1 % on this random model


def test_chunks_compute_the_same(monkeypatch):
    u = quantized()
    whole = run(u)
    monkeypatch.setattr(attention, "SCORES_AT_ONCE", 256 * 7)  # a few batch x head slices at a time
    torch.testing.assert_close(run(u), whole, rtol=0, atol=1e-6)


def test_saved_and_loaded_with_the_model():
    u = quantized()
    qmap, state = api.quantization_map(u), u.state_dict()
    assert len(qmap["attention"]) == 8 and set(qmap["attention"].values()) == {"real"}
    assert any(k.endswith("processor.probs.act_scale") for k in state)
    loaded = api.load_quantized_state(tiny_unet(), qmap, state)
    assert torch.equal(run(loaded), run(u))
    api.dequantize(loaded)
    assert not attention.processors(loaded)
    assert all(isinstance(p, AttnProcessor2_0) for p in loaded.attn_processors.values())


def test_uncalibrated_attention_cannot_freeze():
    u = tiny_unet()
    api.quantize(u, INT8_ATTENTION)
    with api.calibrate(u):
        for c in CALIB:
            u(*c)
    for q in attention.quantizers(u).values():
        q.act_scale.zero_()
    with pytest.raises(DiffusiaError, match=r"have no activation range \(e.g. '.*processor.q'\)"):
        api.freeze(u)


def test_fake_quant_equals_real():
    u = quantized(freeze=False)
    api.enable_fake_quant(u)
    fake = run(u)
    api.freeze(u)
    # as for the layers alone (tests/quant/test_api.py): rounding flips of the real kernels compound over the layers
    assert rel_l2(run(u), fake) < 0.05


def test_summary_lists_the_attention_quantizers():
    u = quantized()
    rows = [line.split() for line in api.summary(u).splitlines() if ".processor." in line]
    assert len(rows) == 4 * 8 and all(r[1:6] == ["int8", "attention", "-", "8", "real"] for r in rows)
    assert all(r[6].startswith("[") for r in rows)  # a calibrated range
