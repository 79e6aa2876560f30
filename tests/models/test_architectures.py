"""SD 2.x (v-prediction) and SDXL pipelines, as tiny seeded random models: load, quantize W8A8, generate."""

import numpy as np
import pytest
import torch

from diffusia import load_pipeline
from diffusia.config import get_preset
from diffusia.generate import GenerationConfig, generate
from diffusia.models import architectures, loading
from diffusia.models.unet_inputs import example_unet_inputs, text_embeds_dim
from diffusia.prompts import Prompt
from diffusia.quant import api
from diffusia.quant.pipeline import quantize_pipeline
from diffusia.quant.serialization import save_quantized_pipeline
from tests.models._support import TINY, save_tiny

PROMPTS = [Prompt("a red sneaker"), Prompt("a lighthouse at dusk")]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    return {name: save_tiny(name, root / name) for name in TINY}


@pytest.mark.parametrize(
    "name, cls, prediction",
    [
        ("sd2-v", "StableDiffusionPipeline", "v_prediction"),
        ("sd2-eps", "StableDiffusionPipeline", "epsilon"),
        ("sdxl", "StableDiffusionXLPipeline", "epsilon"),
    ],
)
def test_quantize_generate_save_load(tiny_dirs, one_thread, tmp_path, name, cls, prediction):
    pipe = load_pipeline(tiny_dirs[name], progress=False)
    assert type(pipe).__name__ == cls and pipe.scheduler.config.prediction_type == prediction
    reference = pipe.unet(**example_unet_inputs(pipe.unet.config)).sample
    quantize_pipeline(pipe, get_preset("w8a8"), PROMPTS, calib_size=2, steps=2, progress=False)
    assert pipe.diffusia_calibration.unet_calls == 2  # 2 steps, both prompts and guidance branches in one batch
    assert pipe.diffusia_validation["quantized_layers"] == len(api.qmodules(pipe.unet)) > 0
    out = pipe.unet(**example_unet_inputs(pipe.unet.config)).sample
    rel = float((out - reference).norm() / reference.norm())
    assert rel < 0.2, f"W8A8 U-Net output {rel:.3f} away from FP32"
    image = generate(pipe, "a dog on a beach", 1, GenerationConfig(steps=2), progress=False, output_type="np")[0]
    assert image.shape == (16, 16, 3) and np.isfinite(image).all() and image.std() > 1e-3
    save_quantized_pipeline(pipe, tmp_path / "q")
    again = load_pipeline(tmp_path / "q", progress=False)
    assert type(again).__name__ == cls and len(api.qmodules(again.unet)) == len(api.qmodules(pipe.unet))
    assert np.array_equal(
        generate(again, "a dog on a beach", 1, GenerationConfig(steps=2), progress=False, output_type="np")[0], image
    )


@pytest.mark.parametrize("name", list(TINY))
def test_every_preset_plans_every_layer(name):
    from diffusers import UNet2DConditionModel

    from diffusia.config import PRESETS
    from diffusia.quant.policy import plan

    with torch.device("meta"):
        unet = UNet2DConditionModel(**TINY[name].unet)
    for preset in PRESETS:  # a recipe rule that matched no layer would raise
        p = plan(unet, get_preset(preset))
        if get_preset(preset).keep_as == "fp16":
            assert "keep" not in p.values(), [n for n, v in p.items() if v == "keep"]  # no layer left unclassified


def test_sdxl_added_conditioning_kept_in_high_precision(tiny_dirs):
    pipe = load_pipeline(tiny_dirs["sdxl"], progress=False)
    plan = api.quantize(pipe.unet, get_preset("w8a8"))
    assert plan["add_embedding.linear_1"] == plan["add_embedding.linear_2"] == plan["time_embedding.linear_1"] == "fp16"
    inputs = example_unet_inputs(pipe.unet.config, batch=3)
    assert inputs["added_cond_kwargs"]["text_embeds"].shape == (3, text_embeds_dim(pipe.unet.config)) == (3, 32)
    assert inputs["added_cond_kwargs"]["time_ids"].shape == (3, 6)
    assert inputs["encoder_hidden_states"].shape == (3, 77, 64)


def test_arch_specs_are_real_configs_labelled_random(monkeypatch):
    from diffusers import UNet2DConditionModel

    for arch, unet_params in ((architectures.SD21, 865_910_724), (architectures.SDXL, 2_567_463_684)):
        with torch.device("meta"):
            unet = UNet2DConditionModel(**arch.unet)
        assert sum(p.numel() for p in unet.parameters()) == unet_params
    assert (
        architectures.SDXL.text_2["hidden_size"] == 1280
        and architectures.SD21.scheduler["prediction_type"] == "v_prediction"
    )
    built = []
    monkeypatch.setattr(architectures, "build_pipeline", lambda arch, seed=0, dtype=None: built.append(arch) or _Stub())
    for spec in ("sd21-arch", "sdxl-arch"):
        assert "random weights" in load_pipeline(spec).diffusia_spec
    assert built == [architectures.SD21, architectures.SDXL]


class _Stub:
    def to(self, *a, **k):
        return self

    def set_progress_bar_config(self, **k):
        pass


def test_folder_of_another_pipeline_kind_is_refused(tiny_dirs, tmp_path):
    import json
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_dirs["sd2-v"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(loading.DiffusiaError, match="without a UNet2DConditionModel"):
        load_pipeline(folder)


def test_sdxl_folder_needs_its_second_text_encoder(tiny_dirs, tmp_path):
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(tiny_dirs["sdxl"], folder)
    shutil.rmtree(folder / "text_encoder_2")
    with pytest.raises(loading.DiffusiaError, match="no text_encoder_2/"):
        load_pipeline(folder)


def test_runtime_export_inputs_add_sdxl_conditioning_only_for_sdxl():
    from diffusers import UNet2DConditionModel

    from diffusia.export.onnx import ADDED_INPUTS, INPUTS, example_inputs, input_names

    with torch.device("meta"):
        sd2, sdxl = (UNet2DConditionModel(**TINY[n].unet) for n in ("sd2-v", "sdxl"))
    assert input_names(sd2) == INPUTS and input_names(sdxl) == INPUTS + ADDED_INPUTS
    assert [t.shape[0] for t in example_inputs(sd2, batch=3)] == [3] * len(INPUTS)
    *_, text_embeds, time_ids = example_inputs(sdxl, batch=3)
    assert text_embeds.shape == (3, text_embeds_dim(sdxl.config)) and time_ids.shape == (3, 6)


def test_sdxl_recorded_calls_replay_to_the_same_noise_prediction(tiny_dirs):
    """The recorded calls keep SDXL's added conditioning: each replays to the output the pipeline's call gave (a
    call without it, or with another one, would not)."""
    from diffusia.calib.forward_loop import recording_unet_calls, sampling_forward_loop

    pipe = load_pipeline(tiny_dirs["sdxl"], progress=False)
    with recording_unet_calls(pipe.unet, outputs=True) as rec, torch.no_grad():
        sampling_forward_loop(pipe, PROMPTS[:1], steps=2, progress=False)()
    assert len(rec.calls) == 2
    for call, out in zip(rec.calls, rec.outputs):
        assert set(call.added) == {"text_embeds", "time_ids"} and call.added["time_ids"].shape == (2, 6)
        with torch.no_grad():
            torch.testing.assert_close(pipe.unet(**call.kwargs()).sample, out, rtol=0, atol=0)
            moved = {**call.added, "time_ids": call.added["time_ids"] + 64}
            assert not torch.allclose(pipe.unet(**{**call.kwargs(), "added_cond_kwargs": moved}).sample, out)


def test_sdxl_sensitivity_analysis(tiny_dirs):
    from diffusia.analysis.sensitivity import run_sensitivity

    pipe = load_pipeline(tiny_dirs["sdxl"], progress=False)
    sens = run_sensitivity(
        pipe,
        get_preset("w8a8"),
        PROMPTS,
        steps=2,
        top=0,
        eval_timesteps=1,
        precisions=("w8a8",),
        timing=False,
        progress=False,
    )
    names = {r["name"] for r in sens["layers"]}
    assert any(".attn1." in n for n in names) and not any(
        n.startswith(("add_embedding", "time_embedding")) for n in names
    )
    assert all(np.isfinite(r["sqnr_only_db"]) and r["sqnr_only_db"] > sens["sqnr_all_db"] for r in sens["layers"])
    assert not api.qmodules(pipe.unet)  # the pipeline is float again


def test_sdxl_qat_distillation_gives_an_int8_pipeline(tiny_dirs, tmp_path):
    from diffusia.qat.data import DistillData
    from diffusia.qat.train import DISTILL_FILE, QATConfig, run_qat

    cfg = QATConfig(
        out=str(tmp_path / "qat"),
        model=str(tiny_dirs["sdxl"]),
        steps=2,
        batch=2,
        calib_size=1,
        calib_steps=2,
        keep_checkpoints=True,
        progress=False,
    )
    res = run_qat(cfg)
    assert len(res.losses) == 2 and all(np.isfinite(res.losses))
    data = DistillData.load(res.out / "checkpoints" / DISTILL_FILE)
    assert data.added is not None and data.added["text_embeds"].shape[0] == len(data)
    pipe = load_pipeline(res.out, progress=False)
    assert all(m.mode == "real" for m in api.qmodules(pipe.unet).values())
    image = generate(pipe, "a red bag", 1, GenerationConfig(steps=2), progress=False, output_type="np")
    assert np.isfinite(image).all() and image.std() > 0
