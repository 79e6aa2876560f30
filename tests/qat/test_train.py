"""QAT on the micro pipeline: resume reproduces an uninterrupted run, the result is the PTQ folder format and
generates, LSQ scales are learned and frozen, and a 2-process accelerate run finishes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusia import load_pipeline
from diffusia.errors import DiffusiaError
from diffusia.generate import GenerationConfig, generate
from diffusia.qat.checkpoints import checkpoint_dir, latest_checkpoint
from diffusia.qat.train import DISTILL_FILE, LOSS_PNG, QATConfig, run_qat
from diffusia.quant import api
from diffusia.quant.serialization import UNET_FILE, read_meta

FAST = dict(steps=6, batch=2, calib_size=2, calib_steps=2, checkpoint_every=3, progress=False)


def _cfg(micro_pipeline_dir, out, **kw) -> QATConfig:
    return QATConfig(out=str(out), model=str(micro_pipeline_dir), **{**FAST, **kw})


@pytest.fixture(scope="module")
def straight(micro_pipeline_dir, tmp_path_factory):
    return run_qat(_cfg(micro_pipeline_dir, tmp_path_factory.mktemp("qat") / "straight"))


def test_resume_after_kill_reproduces_losses(micro_pipeline_dir, tmp_path, straight):
    out = tmp_path / "resumed"
    assert run_qat(_cfg(micro_pipeline_dir, out, stop_after=4, validate=False)) is None  # "killed" after step 4
    assert latest_checkpoint(out).name == "step-0000003" and not (out / "diffusia.json").exists()
    with pytest.raises(DiffusiaError, match="lr"):  # changed settings are refused on resume
        run_qat(_cfg(micro_pipeline_dir, out, resume=True, lr=1e-3, validate=False))
    resumed = run_qat(_cfg(micro_pipeline_dir, out, resume=True, validate=False))
    assert resumed.start_step == 3 and len(resumed.losses) == len(straight.losses) == 6
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=0, atol=1e-6)
    assert straight.losses[0] != straight.losses[1]  # batches differ from step to step
    assert read_meta(out)["qat"]["resumed_from_step"] == 3


def test_result_is_the_int8_folder_and_generates(straight):
    out = straight.out
    meta = read_meta(out)
    assert meta["qat"]["source"] == "distill" and meta["qat"]["steps"] == 6 and meta["calibration"]["size"] == 2
    assert meta["recipe"]["name"] == "w8a8" and UNET_FILE in meta["sha256"]
    assert (out / LOSS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "qat_losses.json").read_text())["losses"] == straight.losses
    assert not checkpoint_dir(out).exists()  # only the INT8 pipeline is left
    pipe = load_pipeline(out, progress=False)
    qm = api.qmodules(pipe.unet)
    assert qm and all(m.mode == "real" for m in qm.values())
    assert any(b.dtype == torch.int8 for m in qm.values() for b in m.buffers())
    image = generate(pipe, "a red bag", 1, GenerationConfig(steps=2), progress=False, output_type="np")
    assert np.isfinite(image).all() and image.std() > 0


def _shared(micro_pipeline_dir, prompts: int, batch: int = 1):
    from diffusia.config import get_preset
    from diffusia.prompts import load_prompts, take
    from diffusia.qat.data import SharedCalibration

    pipe = load_pipeline(micro_pipeline_dir, progress=False)
    chosen = take(load_prompts("calibration", str(micro_pipeline_dir)), prompts)
    return SharedCalibration.record(pipe, get_preset("w8a8"), chosen, FAST["calib_steps"], 7.5, batch=batch)


def test_shared_calibration_starts_qat_as_its_own_sampling_would(micro_pipeline_dir, tmp_path, straight):
    """A study's one sampling pass (observations + distillation data of the same calls) gives QAT the same PTQ
    start and teacher: the first loss, taken before any update, equals the run that sampled on its own."""
    shared = _shared(micro_pipeline_dir, FAST["calib_size"])
    res = run_qat(_cfg(micro_pipeline_dir, tmp_path / "shared", validate=False), shared)
    calibration = read_meta(res.out)["calibration"]
    assert calibration["shared"] and calibration["unet_calls"] == shared.observations.unet_calls
    assert not read_meta(straight.out)["calibration"]["shared"]
    np.testing.assert_allclose(res.losses[0], straight.losses[0], rtol=1e-5)


def test_shared_calibration_of_other_prompts_is_not_used(micro_pipeline_dir, tmp_path, caplog):
    shared = _shared(micro_pipeline_dir, FAST["calib_size"] + 1)
    with caplog.at_level("INFO", logger="diffusia.qat.train"):
        res = run_qat(_cfg(micro_pipeline_dir, tmp_path / "other", steps=1, checkpoint_every=0, validate=False), shared)
    assert not read_meta(res.out)["calibration"]["shared"]
    assert "QAT samples its own calibration: the shared recording have sampling prompts=3 prompts" in caplog.text


def test_a_folder_with_its_checkpoints_and_distillation_data_loads(micro_pipeline_dir, tmp_path):
    out = tmp_path / "kept"
    run_qat(_cfg(micro_pipeline_dir, out, steps=2, checkpoint_every=0, validate=False, keep_checkpoints=True))
    assert (checkpoint_dir(out) / DISTILL_FILE).is_file() and latest_checkpoint(out) is not None
    assert api.qmodules(load_pipeline(out, progress=False).unet)  # resume data is not what loading verifies


def test_the_folder_is_saved_with_its_runtime_graph_as_quantize_saves_it(micro_pipeline_dir, tmp_path):
    pytest.importorskip("openvino")
    from diffusia.runtime import runtime_of

    out = tmp_path / "ov"
    run_qat(_cfg(micro_pipeline_dir, out, steps=1, checkpoint_every=0, validate=False, runtimes=("openvino",)))
    assert (out / "openvino" / "runtime.json").is_file()
    assert runtime_of(load_pipeline(out, runtime="openvino", progress=False)) == "openvino"


def test_lsq_on_fashion_mnist_learns_and_freezes_scales(micro_pipeline_dir, tmp_path):
    from diffusia.data.fashion_mnist import DATA_DIR

    if not (DATA_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed")
    out = tmp_path / "lsq"
    res = run_qat(
        _cfg(
            micro_pipeline_dir,
            out,
            source="fashion-mnist",
            lsq=True,
            steps=2,
            checkpoint_every=0,
            validate=False,
            keep_checkpoints=True,
        )
    )
    assert res.info["lsq"] and res.info["source"] == "fashion-mnist" and np.isfinite(res.losses).all()
    from safetensors.torch import load_file

    ckpt = load_file(str(latest_checkpoint(out) / "model.safetensors"))  # kept on request
    log_scales = {k: v for k, v in ckpt.items() if k.startswith("lsq.log_scale.")}
    assert log_scales
    frozen = load_pipeline(out, progress=False).unet
    for key, log_s in log_scales.items():
        name = key[len("lsq.log_scale.") :].replace("__", ".")
        torch.testing.assert_close(frozen.get_submodule(name).act_scale, log_s.exp())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_with_accelerate_launch(micro_pipeline_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "diffusia.qat.train",
        "--model",
        str(micro_pipeline_dir),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch",
        "1",
        "--calib-size",
        "2",
        "--calib-steps",
        "2",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--no-validate",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = read_meta(out)
    assert meta["qat"]["processes"] == 2 and meta["qat"]["global_batch"] == 2
    assert len(json.loads((out / "qat_losses.json").read_text())["losses"]) == 2
    assert api.qmodules(load_pipeline(out, progress=False).unet)


def test_cli_refuses_two_sources(tmp_path):
    from typer.testing import CliRunner

    from diffusia.cli import app

    res = CliRunner().invoke(app, ["qat", "--out", str(tmp_path / "x"), "--data", "fashion-mnist", "--distill"])
    assert isinstance(res.exception, DiffusiaError) and "exclude" in str(res.exception)
