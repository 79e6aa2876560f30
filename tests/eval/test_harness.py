"""The harness end to end on the micro pipeline (fp32 and the w8 preset, 3 images), fp16 folders and notes, and the
one-line input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusia.errors import DiffusiaError
from diffusia.eval import libraries
from diffusia.eval.harness import _notes, evaluate
from diffusia.eval.variants import check_compatible, folder_bytes, materialise, parse_variants
from tests.eval.conftest import CHEAP_EXTRACTOR


@pytest.fixture(scope="module")
def evaluated(micro_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    prompts = out / "prompts.json"
    prompts.write_text(
        json.dumps(
            [
                {"prompt": "a red bag", "category": "bags"},
                {"prompt": "a blue coat", "category": "tops"},
                {"prompt": "a green shirt", "category": "tops"},
            ]
        )
    )
    res = evaluate(
        str(micro_pipeline_dir),
        "fp32,w8",
        prompts=str(prompts),
        num=3,
        out=out / "run",
        runs=2,
        steps=2,
        height=32,
        width=32,
        threads=1,
        feature_net=CHEAP_EXTRACTOR,
        progress=False,
    )
    return res, out / "run"


def test_files_and_tables(evaluated):
    res, out = evaluated
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "grid.png", "variants", "images"}
    assert json.loads((out / "results.json").read_text())["config"]["num"] == 3
    md = (out / "report.md").read_text()
    assert "## IV. Quality vs FP32" in md and "FD-test vs FP32" in md
    assert sorted(p.name for p in (out / "images" / "w8").iterdir()) == ["00000.png", "00001.png", "00002.png"]


def test_size_memory_latency(evaluated):
    res, _ = evaluated
    fp32, w8 = res["variants"]["fp32"], res["variants"]["w8"]
    assert w8["kind"] == "preset" and (Path(w8["folder"]) / "diffusia.json").is_file()
    assert fp32["size"]["unet_bytes"] / w8["size"]["unet_bytes"] > 2.5  # int8 weights
    assert w8["size"]["unet_change_pct"] < -60 and fp32["unet_dtype"] == "float32"
    for v in (fp32, w8):
        assert v["memory"]["peak_mb"] > 0 and v["memory"]["libraries_resident"] == libraries.enabled()
        assert v["memory"]["percent_of_budget"] == pytest.approx(100 * v["memory"]["peak_mb"] / 4096)
        assert v["latency"]["end_to_end"]["n"] == 2 and v["latency"]["unet_step"]["n"] == 4


def test_quality(evaluated):
    res, _ = evaluated
    q = res["quality"]
    fp32, w8 = q["variants"]["fp32"], q["variants"]["w8"]
    assert fp32["overall"]["ssim"]["mean"] == pytest.approx(1.0) and fp32["overall"]["lpips"]["mean"] < 1e-6
    assert 0.5 < w8["overall"]["ssim"]["mean"] <= 1.0
    assert w8["per_category"]["tops"]["ssim"]["n"] == 2 and w8["per_category"]["bags"]["ssim"]["n"] == 1
    assert w8["fd_vs_reference"] >= 0 and "fd_vs_real" not in w8  # real images only for model `tiny`


@pytest.fixture
def half_units(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native FP16/BF16 arithmetic."""
    from diffusia.quant import cpu

    def use(native: bool) -> None:
        monkeypatch.setattr(cpu, "has_native_half", lambda dtype: native)

    return use


def test_fp16_is_the_whole_pipeline_where_native(micro_pipeline_dir, tmp_path, half_units):
    half_units(True)
    assert [v.kind for v in parse_variants("fp32,fp16,bf16", "cpu")] == ["fp32", "dtype", "dtype"]
    assert parse_variants("fp16", "cuda")[0].dtype == "fp16"
    fp32, fp16 = (materialise(v, str(micro_pipeline_dir), tmp_path) for v in parse_variants("fp32,fp16"))
    ratio = folder_bytes(fp32 / "unet") / folder_bytes(fp16 / "unet")
    assert 1.9 < ratio < 2.1
    assert folder_bytes(fp16) < folder_bytes(fp32)


def test_fp16_is_a_storage_format_on_cpus_without_half_units(micro_pipeline_dir, tmp_path, half_units):
    half_units(False)
    specs = parse_variants("fp32,fp16", "cpu")
    assert specs[1].kind == "storage" and specs[1].dtype is None and "stored in fp16" in specs[1].describe()
    fp32, fp16 = (materialise(v, str(micro_pipeline_dir), tmp_path) for v in specs)
    from diffusia import load_pipeline
    from diffusia.quant import api

    pipe = load_pipeline(fp16, progress=False)
    precisions = {m.precision for m in api.qmodules(pipe.unet).values()}
    assert precisions == {"fp16"} and pipe.unet.conv_in.weight.dtype == torch.float32  # policy keeps conv_in
    assert folder_bytes(fp16 / "unet") < 0.75 * folder_bytes(fp32 / "unet")


@pytest.mark.parametrize("native", [True, False])
def test_half_latency_note(half_units, native):
    half_units(native)
    res = {
        "variants": {
            "fp32": {"latency": {"end_to_end": {"median": 1.0}}},
            "fp16": {"latency": {"end_to_end": {"median": 1.25}}},
        },
        "machine": {"cpu_cores": 2, "loadavg": [0.5]},
        "quality": None,
    }
    notes = _notes(res, parse_variants("fp32,fp16", "cpu"), "cpu")
    assert len(notes) == 1 and "1.25x the FP32 latency" in notes[0]
    assert ("native fp16 instructions" in notes[0]) == native and ("computed in FP32" in notes[0]) != native


def test_jobs_spread_over_categories_then_cycle_with_next_seed():
    from diffusia.eval.images import make_jobs
    from diffusia.prompts import Prompt

    prompts = [Prompt(f"p{i}", "tops" if i < 4 else "bags") for i in range(8)]
    few = make_jobs(prompts, 4, 42)
    assert [j.prompt for j in few] == ["p0", "p2", "p4", "p6"] and {j.category for j in few} == {"tops", "bags"}
    many = make_jobs(prompts, 10, 42)
    assert [(j.prompt, j.seed) for j in many[7:]] == [("p7", 42), ("p0", 43), ("p1", 43)]
    assert [j.index for j in many] == list(range(10))


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(DiffusiaError, match=r"unknown variant 'int3'.*fp32, fp16, bf16"):
        parse_variants("fp32,int3")


def test_missing_fp32_reference(micro_pipeline_dir, prompt_file, tmp_path):
    with pytest.raises(DiffusiaError, match="add fp32 to --variants"):
        evaluate(str(micro_pipeline_dir), "fp16", prompts=str(prompt_file), out=tmp_path, progress=False)


@pytest.mark.parametrize("content", [None, "", "[]"])
def test_missing_or_empty_prompt_file(micro_pipeline_dir, tmp_path, content):
    path = tmp_path / "p.txt" if content != "[]" else tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DiffusiaError, match="empty|unknown prompt set"):
        evaluate(str(micro_pipeline_dir), "fp32", prompts=str(path), out=tmp_path / "o", progress=False)


def test_incompatible_quantized_folder(micro_pipeline_dir, micro_pipe, prompt_file, tmp_path):
    folder = tmp_path / "other"
    (folder / "unet").mkdir(parents=True)
    (folder / "diffusia.json").write_text("{}")
    config = dict(micro_pipe.unet.config)
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 768}, default=str))
    with pytest.raises(DiffusiaError, match="another base model.*cross_attention_dim is 768 there and 32 here"):
        evaluate(
            str(micro_pipeline_dir), f"fp32,{folder}", prompts=str(prompt_file), out=tmp_path / "o", progress=False
        )
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "quantization_config": {}}, default=str))
    check_compatible(folder, config, "micro")  # the same base: no error
    assert parse_variants(f"fp32,{folder}")[1].name == "other"
    with pytest.raises(DiffusiaError, match="has no diffusia.json"):
        parse_variants(str(micro_pipeline_dir))


def test_a_recipe_file_is_a_variant(micro_pipeline_dir, prompt_file, tmp_path):
    """`--variants fp32,int8.json` quantizes with that recipe (here symmetric activations); names stay unique and
    distinct from the presets; a bad recipe fails before anything runs, naming the file."""
    from diffusia import load_pipeline
    from diffusia.prompts import load_prompts
    from diffusia.quant import api

    recipe = tmp_path / "int8.json"
    recipe.write_text(json.dumps({"name": "s8", "weights": "w8a8", "activations": "int8"}))
    clash = tmp_path / "w8a8.json"
    clash.write_text(recipe.read_text())
    specs = parse_variants(f"fp32,{recipe},{clash}")
    assert [(v.name, v.kind) for v in specs[1:]] == [("int8", "recipe"), ("recipe-w8a8", "recipe")]
    assert "recipe" in specs[1].describe()
    prompts = load_prompts(str(prompt_file))
    folder = materialise(
        specs[1], str(micro_pipeline_dir), tmp_path / "v", prompts, calib_size=2, progress=False, steps=2
    )
    pipe = load_pipeline(folder, progress=False)
    assert pipe.diffusia_recipe.activations == "int8"
    zero_points = {int(z) for m in api.qmodules(pipe.unet).values() if m.precision == "w8a8" for z in m.act_zero_point}
    assert 128 in zero_points
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": "w3"}))
    with pytest.raises(DiffusiaError, match=r"recipe .*bad.json: .*weights"):
        parse_variants(f"fp32,{bad}")


def test_cli_error_is_one_line(monkeypatch, capsys):
    from diffusia import cli

    monkeypatch.setattr("sys.argv", ["diffusia", "eval", "--variants", "fp32,nope", "--num", "2"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffusia: error: unknown variant 'nope'") and "\n" not in err


def test_missing_real_set_is_said_with_the_command_that_adds_it(monkeypatch, tmp_path):
    from diffusia.data import fashion_mnist
    from diffusia.eval.harness import real_images

    monkeypatch.setattr(fashion_mnist, "DATA_DIR", tmp_path / "none")
    images, note = real_images("tiny", 4)
    assert images is None and "column absent" in note and "apt-get install dataset-fashion-mnist" in note
    assert real_images("sd15-arch", 4) == (None, None)  # no real set for other models


def test_an_sdxl_pipeline_evaluates(tmp_path):
    """SDXL (two text encoders, added conditioning) through the whole harness: W8A8 quantized, calibrated on the
    eval prompts' trajectories, measured in fresh processes and compared with its FP32 images."""
    from tests.models._support import save_tiny

    folder = save_tiny("sdxl", tmp_path / "sdxl")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": "a red bag", "category": "bags"}, {"prompt": "a blue coat"}]))
    res = evaluate(
        str(folder),
        "fp32,w8a8",
        prompts=str(prompts),
        num=2,
        out=tmp_path / "run",
        runs=1,
        steps=2,
        calib_size=2,
        threads=1,
        feature_net=CHEAP_EXTRACTOR,
        progress=False,
    )
    w8a8 = res["variants"]["w8a8"]
    assert res["variants"]["fp32"]["size"]["unet_bytes"] / w8a8["size"]["unet_bytes"] > 2
    assert w8a8["latency"]["end_to_end"]["n"] == 1
    components = w8a8["latency"]["components_per_image"]
    assert components["text_encoder"]["median"] > 0 and components["text_encoder_2"]["median"] > 0
    assert 0.3 < res["quality"]["variants"]["w8a8"]["overall"]["ssim"]["mean"] <= 1.0


def test_runtime_label_names_what_openvino_computes_in():
    from diffusia.eval.harness import runtime_label

    assert runtime_label({}) == "torch"
    assert runtime_label({"runtime": "openvino", "runtime_precision": "f32"}) == "openvino"
    assert runtime_label({"runtime": "openvino", "runtime_precision": "bf16"}) == "openvino (bf16 float layers)"
    assert (
        runtime_label({"runtime": "openvino", "runtime_precision": "bf16+dynamic"})
        == "openvino (bf16 float layers, weight-only inputs quantized dynamically)"
    )
    assert (
        runtime_label({"runtime": "openvino", "runtime_precision": "f32+dynamic"})
        == "openvino (weight-only inputs quantized dynamically)"
    )


def test_variants_run_on_openvino_in_every_measurement(micro_pipeline_dir, prompt_file, tmp_path):
    """Memory, latency and the images sharded over two processes come from the OpenVINO U-Net, its float layers in
    bf16 where the CPU has bf16 units; the report says so."""
    from diffusia import load_pipeline
    from diffusia.eval.images import load_images, make_jobs, render, to_uint8
    from diffusia.generate import GenerationConfig
    from diffusia.prompts import load_prompts
    from diffusia.quant import cpu

    precision = "bf16" if cpu.has_native_half("bf16") else "f32"
    if precision == "f32":
        with pytest.raises(DiffusiaError, match="need a CPU with AVX-512 BF16 or AMX"):
            evaluate(str(micro_pipeline_dir), "fp32", out=tmp_path / "x", runtime="openvino", runtime_precision="bf16")
    size = dict(steps=2, height=32, width=32)
    res = evaluate(
        str(micro_pipeline_dir),
        "w8a8",
        prompts=str(prompt_file),
        num=2,
        out=tmp_path / "run",
        runs=1,
        warmup=0,
        threads=1,
        calib_size=2,
        processes=2,
        quality=False,
        progress=False,
        runtime="openvino",
        runtime_precision=precision,
        **size,
    )
    v = res["variants"]["w8a8"]
    assert (v["runtime"], v["runtime_precision"]) == ("openvino", precision)
    assert v["latency"]["end_to_end"]["median"] > 0
    label = "openvino" + (" (bf16 float layers)" if precision == "bf16" else "")
    assert f"{label}: w8a8" in (tmp_path / "run" / "report.md").read_text()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the shards' threads: the same OpenVINO kernels
    try:
        pipe = load_pipeline(v["folder"], progress=False, runtime="openvino", runtime_precision=precision, threads=1)
        jobs = make_jobs(load_prompts(str(prompt_file)), 2, 42)
        expected = to_uint8(render(pipe, jobs, GenerationConfig(**size)))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(to_uint8(load_images(tmp_path / "run" / "images" / "w8a8", 2)), expected)


def test_size_counts_the_runtime_graph_the_unet_ran_and_nothing_else(tmp_path):
    from diffusia.eval.variants import variant_size
    from diffusia.runtime.artifact import FORMAT, MANIFEST, VERSION

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "weights.safetensors").write_bytes(b"w" * 3000)
    ov = tmp_path / "openvino"
    ov.mkdir()
    for name, n in (("unet-g0.xml", 100), ("unet-g0.bin", 2000), ("unet-g1.xml", 100), ("unet-g1.bin", 2000)):
        (ov / name).write_bytes(b"x" * n)
    (ov / "vae_decoder.bin").write_bytes(b"v" * 5000)  # the decoder is not the U-Net
    manifest = {"format": FORMAT, "version": VERSION, "files": ["unet-g0.xml", "unet-g1.xml"]}
    (ov / MANIFEST).write_text(json.dumps(manifest))
    size = variant_size(tmp_path, None, "openvino")
    assert size["runtime_graph_mb"] * 2**20 == 4200 and size["unet_bytes"] == 3000
    assert "runtime_graph_mb" not in variant_size(tmp_path, None, "torch")
    assert "runtime_graph_mb" not in variant_size(tmp_path, None, "onnxruntime")  # no graph saved for it


def test_note_says_when_the_libraries_were_not_resident():
    res = {
        "variants": {"fp32": {"memory": {"peak_mb": 1.0, "libraries_resident": False}}},
        "machine": {"cpu_cores": 2, "loadavg": [0.5]},
        "quality": None,
    }
    notes = _notes(res, parse_variants("fp32", "cpu"), "cpu")
    assert len(notes) == 1 and "depends on what the page cache held" in notes[0]
    res["variants"]["fp32"]["memory"]["libraries_resident"] = True
    assert not _notes(res, parse_variants("fp32", "cpu"), "cpu")


def test_note_names_the_unets_exported_when_loaded():
    ran = {"runtime": "openvino", "latency": {"end_to_end": {"median": 1.0}}}
    res = {
        "variants": {
            "fp32": {**ran, "size": {"unet_mb": 2.0}},
            "w8a8": {**ran, "size": {"unet_mb": 1.0, "runtime_graph_mb": 1.1}},
            "qat": {**ran, "size": {"unet_mb": 1.0}},
            "bf16": {"runtime": "torch", "size": {"unet_mb": 1.0}},
        },
        "machine": {"cpu_cores": 2, "loadavg": [0.5]},
        "quality": None,
    }
    notes = _notes(res, parse_variants("fp32", "cpu"), "cpu")
    at_load = [n for n in notes if "exported (and checked) when loaded" in n]
    assert len(at_load) == 1 and at_load[0].startswith("fp32, qat: ")
