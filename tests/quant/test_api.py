import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusia.config import PRESETS, Recipe, get_preset
from diffusia.errors import DiffusiaError
from diffusia.quant import api, cpu
from diffusia.quant.timestep import get_state, set_timestep
from tests.quant._support import inputs, rel_l2, tiny_unet

CALIB = [inputs(i, t, batch=1) for i, t in enumerate([850, 150])]
EVAL = inputs(100, 400, batch=1)  # 16x16 latents; forwards dominate the test time
# rel-L2 vs FP32 on the random tiny U-Net (measured: fp16 0.06 %, bf16 0.5 %, w8 1.2 %, w8a8 / mixed with
# 7-bit activations and 99.9 % percentile ~10 %, w4 ~21 %): random weights and 32-channel layers make int8
# activations and int4 weights far noisier here than on a trained U-Net; bounds leave some margin.
TOL = {
    "fp32": 1e-6,
    "fp16": 0.005,
    "bf16": 0.02,
    "w8": 0.03,
    "w8a8": 0.15,
    "w8a8x2": 0.15,
    "mixed": 0.15,
    "hybrid": 0.15,
    "w4": 0.3,
}


@pytest.fixture(scope="module")
def reference():
    with torch.no_grad():
        return tiny_unet()(*EVAL).sample


def quantized(recipe: Recipe, freeze: bool = True):
    u = tiny_unet()
    api.quantize(u, recipe)
    if any(m.precision in ("w8a8", "w8a8x2") for m in api.qmodules(u).values()):
        with api.calibrate(u):
            for c in CALIB:
                u(*c)
    if freeze:
        api.freeze(u)
    return u


def run(u, args=EVAL):
    with torch.no_grad():
        return u(*args).sample


_CACHE: dict[str, tuple] = {}


def frozen(name: str):
    """(model, output, fake-quant output) of a preset, built once per test session (forwards are slow here)."""
    if name not in _CACHE:
        u = quantized(get_preset(name), freeze=False)
        fake = None
        if name == "w8a8":
            api.enable_fake_quant(u)
            fake = run(u)
        api.freeze(u)
        _CACHE[name] = (u, run(u), fake)
    return _CACHE[name]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_close_to_fp32(name, reference):
    u, y, _ = frozen(name)
    err = rel_l2(y, reference)
    assert err < TOL[name], f"{name}: rel L2 {err:.4f}"
    assert all(m.mode == "real" for m in api.qmodules(u).values())
    assert (name == "fp32") == (not api.qmodules(u))


def test_w8a8_with_uint8_mse_within_a_few_percent(reference):
    u = quantized(get_preset("w8a8").replace(activations="uint8", calibrator="mse"))
    m = u.get_submodule("down_blocks.0.resnets.0.conv1")
    assert m.settings.act_qmax == 255 and m.settings.weight_qmax == cpu.weight_qmax(255, cpu.host_class())
    assert rel_l2(run(u), reference) < 0.06


@pytest.mark.parametrize(
    "name, dtype", [("w8a8", torch.int8), ("w8", torch.int8), ("w4", torch.uint8), ("fp16", torch.float16)]
)
def test_frozen_model_holds_low_precision_tensors(name, dtype):
    sd = frozen(name)[0].state_dict()
    key = {"w8a8": "weight_int8", "w8": "weight_int8", "w4": "weight_int4", "fp16": "weight_fp16"}[name]
    q = sd[f"down_blocks.0.resnets.0.conv1.{key}"]
    assert q.dtype == dtype and "down_blocks.0.resnets.0.conv1.weight" not in sd
    # kept in high precision: fp32 for the fp16 preset, fp16 storage in the integer presets (keep_as)
    kept = {k: v for k, v in sd.items() if k.startswith(("conv_in.weight", "time_embedding.linear_1.weight"))}
    if name == "fp16":
        assert {k: v.dtype for k, v in kept.items()} == {
            "conv_in.weight": torch.float32,
            "time_embedding.linear_1.weight": torch.float32,
        }
    else:
        assert {k: v.dtype for k, v in kept.items()} == {
            "conv_in.weight_fp16": torch.float16,
            "time_embedding.linear_1.weight_fp16": torch.float16,
        }
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    fp32 = sum(t.numel() * 4 for t in tiny_unet().state_dict().values())
    assert nbytes < fp32 * (0.6 if name != "fp16" else 0.7)


def test_fake_quant_close_to_real():
    _, real, fake = frozen("w8a8")
    assert rel_l2(real, fake) < 0.05  # rounding flips compound over ~60 layers; per layer see test_modules


def save_and_reload(u, tmp_path, skeleton):
    """Through safetensors and a JSON quantization map, as a user would."""
    save_file(u.state_dict(), tmp_path / "unet.safetensors")
    (tmp_path / "qmap.json").write_text(json.dumps(api.quantization_map(u)))
    qmap = json.loads((tmp_path / "qmap.json").read_text())
    v = api.load_quantized_state(skeleton, qmap, load_file(tmp_path / "unet.safetensors"))
    assert api.quantization_map(v)["layers"] == qmap["layers"]
    return v


@pytest.mark.parametrize("name", ["w8a8", "w4", "mixed"])
def test_save_and_reload_gives_identical_output(tmp_path, name):
    u, y, _ = frozen(name)
    if name == "w4":  # a meta-device skeleton: float weights are never materialised
        with torch.device("meta"):
            skeleton = tiny_unet()
    else:
        skeleton = tiny_unet(seed=123)  # different float weights: everything must come from the file
    assert torch.equal(run(save_and_reload(u, tmp_path, skeleton)), y)


def test_reload_rejects_mismatched_state(tmp_path):
    u = quantized(get_preset("w8"))
    sd = u.state_dict()
    sd.pop("down_blocks.0.resnets.0.conv1.weight_int8")
    with pytest.raises(DiffusiaError, match="missing"):
        api.load_quantized_state(tiny_unet(), api.quantization_map(u), sd)
    with pytest.raises(DiffusiaError, match="quantization map"):
        api.load_quantized_state(tiny_unet(), {"layers": {}}, sd)


def test_timestep_groups_select_ranges_and_survive_reload(tmp_path):
    u = tiny_unet()
    api.quantize(u, get_preset("w8a8").replace(timestep_groups=2))
    x, _, e = inputs(0, batch=1)
    with api.calibrate(u):
        u(x * 0.1, torch.tensor([100]), e)  # group 0: small latents
        u(x * 10.0, torch.tensor([900]), e)  # group 1: large latents
    down = u.down_blocks[0].downsamplers[0].conv  # sees the residual stream, which scales with the latents
    lo, hi = down.act_range[:, 0], down.act_range[:, 1]
    assert hi[1] - lo[1] > 5 * (hi[0] - lo[0])
    assert torch.equal(u.conv_in.weight, tiny_unet().conv_in.weight)
    api.freeze(u)
    y900 = run(u, (x, 900, e))
    assert get_state(u).group == 1
    y10 = u(sample=x, timestep=torch.tensor(10), encoder_hidden_states=e).sample  # keyword call: hook sees it
    assert get_state(u).group == 0
    assert set_timestep(u, 999) == 1
    v = save_and_reload(u, tmp_path, tiny_unet(seed=7))
    assert torch.equal(run(v, (x, 900, e)), y900) and torch.equal(run(v, (x, 10, e)), y10.detach())


def test_summary_lists_every_quantized_layer():
    u = frozen("mixed")[0]
    lines = api.summary(u).splitlines()
    assert len(lines) == 1 + len(api.qmodules(u)) and lines[0].split()[:4] == ["layer", "precision", "w", "bits"]
    conv1 = next(line.split() for line in lines if line.startswith("down_blocks.0.resnets.0.conv1 "))
    assert conv1[1:5] == ["w8a8", "7" if cpu.weight_qmax(255, cpu.host_class()) < 127 else "8", "8", "real"]
    assert any(line.split()[1] == "fp16" for line in lines[1:])
    assert next(line.split()[1] for line in lines if line.startswith("conv_in ")) == "fp16"  # keep_as
    assert not any(line.startswith("conv_in") for line in api.summary(frozen("fp16")[0]).splitlines())


def test_lifecycle_errors():
    u = tiny_unet()
    with pytest.raises(DiffusiaError, match="not quantized"):
        api.freeze(u)
    api.quantize(u, get_preset("w8a8"))
    with pytest.raises(DiffusiaError, match="already quantized"):
        api.quantize(u, get_preset("w8a8"))
    with pytest.raises(DiffusiaError, match=r"have no activation range \(e.g. 'down_blocks"):
        api.freeze(u)
    with pytest.raises(DiffusiaError, match="nearest: .*conv_in"):
        api.quantize(tiny_unet(), Recipe(rules=[("conv_inn", "w8")]))
