import pytest
from torch import nn

from diffusia.config import Recipe, get_preset
from diffusia.errors import DiffusiaError
from diffusia.quant.policy import default_plan, is_quantizable, layer_names, plan
from tests.quant._support import tiny_unet


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


KEPT = [
    "conv_in",
    "conv_out",
    "time_embedding.linear_1",
    "time_embedding.linear_2",
    "down_blocks.0.resnets.0.time_emb_proj",
    "mid_block.resnets.1.time_emb_proj",
]
QUANTIZED = [
    "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.attentions.0.proj_out",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
    "down_blocks.0.resnets.0.conv1",
    "down_blocks.1.resnets.0.conv_shortcut",
    "down_blocks.0.downsamplers.0.conv",
    "up_blocks.0.upsamplers.0.conv",
]


def test_default_policy(unet):
    p = default_plan(unet, "w8a8")
    assert set(p) == set(layer_names(unet))
    assert all(p[n] == "keep" for n in KEPT)
    assert all(p[n] == "w8a8" for n in QUANTIZED)
    kept = [n for n, v in p.items() if v == "keep"]
    assert len(kept) == 4 + sum(n.endswith("time_emb_proj") for n in p) == 12


@pytest.mark.parametrize("preset", ["w8a8", "w8a8x2", "w8", "w4", "mixed"])
def test_integer_presets_store_kept_layers_in_fp16(unet, preset):
    p = plan(unet, get_preset(preset))
    assert all(p[n] == "fp16" for n in KEPT)
    assert plan(unet, get_preset(preset).replace(keep_as="fp32"))["conv_in"] == "keep"
    assert plan(unet, Recipe(weights="w8", keep_as="fp16", rules=[("conv_in", "keep")]))["conv_in"] == "keep"


def test_keep_as_is_validated():
    with pytest.raises(DiffusiaError, match="keep_as"):
        Recipe(keep_as="int8")


def test_norm_linears_are_kept():
    assert not is_quantizable("x.norm1.linear") and is_quantizable("x.attn1.to_q")


def test_rules_apply_in_order(unet):
    r = Recipe(
        weights="w8",
        rules=[("*.to_?", "fp16"), ("re:.*attn2\\.to_[kv]", "w4"), ("conv_in", "w8a8"), ("*resnets.0.conv1", "keep")],
    )
    p = plan(unet, r)
    assert p["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"] == "fp16"
    assert p["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] == "w4"
    assert p["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q"] == "fp16"
    assert p["conv_in"] == "w8a8" and p["conv_out"] == "keep"
    assert p["down_blocks.0.resnets.0.conv1"] == "keep" and p["down_blocks.0.resnets.0.conv2"] == "w8"


def test_mixed_plan(unet):
    p = plan(unet, get_preset("mixed"))
    assert p["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"] == "fp16"
    assert p["mid_block.attentions.0.transformer_blocks.0.attn1.to_v"] == "fp16"
    assert p["down_blocks.0.resnets.0.conv1"] == "w8a8" and p["mid_block.attentions.0.proj_in"] == "w8a8"


def test_w8a8x2_plan_splits_the_full_resolution_blocks(unet):
    p = plan(unet, get_preset("w8a8x2"))
    x2 = {n for n, v in p.items() if v == "w8a8x2"}
    last_up = f"up_blocks.{len(unet.up_blocks) - 1}."
    assert x2 == {n for n in p if n.startswith(("down_blocks.0.", last_up)) and is_quantizable(n)}
    assert {
        "down_blocks.0.resnets.0.conv1",
        last_up + "resnets.0.conv_shortcut",
        last_up + "attentions.0.transformer_blocks.0.attn1.to_q",
    } <= x2
    assert {v for n, v in p.items() if is_quantizable(n) and n not in x2} == {"w8a8"}
    assert p["conv_in"] == p["conv_out"] == p["down_blocks.0.resnets.0.time_emb_proj"] == "fp16"  # kept stay kept
    with pytest.raises(DiffusiaError, match="full_res_weights matches no layer"):
        plan(nn.Sequential(nn.Linear(2, 2)), get_preset("w8a8x2"))


@pytest.mark.parametrize("pattern", ["down_blocks.0.resnets.0.conv3", "re:down_blocks\\.0\\.resnets\\.0\\.conv3"])
def test_rule_matching_nothing_lists_nearest(unet, pattern):
    with pytest.raises(DiffusiaError) as e:
        plan(unet, Recipe(rules=[(pattern, "fp16")]))
    msg = str(e.value)
    assert "matches no layer" in msg and "down_blocks.0.resnets.0.conv1" in msg and msg.count(",") == 2
