"""Bad input, end to end through the command line, from one table per class: malformed metadata (quantized
folders, pipeline folders, QAT checkpoints, result files), text that is not UTF-8, JSON of the wrong shape, numbers
and devices, a U-Net of another base model. Each case ends in one line and exit code 2, with no traceback and no
output written. Output paths are in tests/test_bad_outputs.py; failing disks in tests/test_failing_disks.py."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests._cli_support import Inputs, refused, snapshot

ASSETS = Path(__file__).parents[1] / "diffusia" / "assets"


# ------------------------------------------------------------------------------------------------ file surgery
def edit_json(path: Path, change: Callable) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def header(obj) -> bytes:
    raw = json.dumps(obj).encode()
    return struct.pack("<Q", len(raw)) + raw


def rehash(folder: Path) -> None:
    """Update diffusia.json's sha256 block, as a crafted folder would, so that the file itself is what is read."""
    edit_json(
        folder / "diffusia.json",
        lambda m: {**m, "sha256": {k: hashlib.sha256((folder / k).read_bytes()).hexdigest() for k in m["sha256"]}},
    )


def damage_unet(write: Callable[[Path], None], crafted: bool) -> Callable[[Inputs], Path]:
    def make(c: Inputs) -> Path:
        folder = c.copy("quantized")
        write(folder / "unet" / "diffusion_pytorch_model.safetensors")
        if crafted:
            rehash(folder)
        return folder

    return make


def damage_meta(change: Callable) -> Callable[[Inputs], Path]:
    def make(c: Inputs) -> Path:
        folder = c.copy("quantized")
        edit_json(folder / "diffusia.json", change)
        return folder

    return make


def write_meta(raw: bytes) -> Callable[[Inputs], Path]:
    def make(c: Inputs) -> Path:
        folder = c.copy("quantized")
        (folder / "diffusia.json").write_bytes(raw)
        return folder

    return make


def damage_pipe(name: str, write: Callable[[Path], None]) -> Callable[[Inputs], Path]:
    def make(c: Inputs) -> Path:
        folder = c.copy("pipe")
        write(folder / name)
        return folder

    return make


def transplant(c: Inputs) -> Path:
    """The embedded tiny pipeline with the micro pipeline's quantized U-Net in place of its own."""
    folder = c.tmp / "tiny-with-foreign-unet"
    shutil.copytree(ASSETS / "tiny", folder)
    shutil.rmtree(folder / "unet")
    shutil.copytree(c.quantized / "unet", folder / "unet")
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


# ------------------------------------------------------------------------------ models read by `generate`
MODEL_CASES = {
    "diffusia.json is a JSON list": (write_meta(b"[1, 2]"), "is not a diffusia quantized pipeline"),
    "diffusia.json is not UTF-8": (write_meta(b'{"format": "\xff"}'), "diffusia.json is unreadable"),
    "diffusia.json is not JSON": (write_meta(b'{"format": '), "diffusia.json is unreadable"),
    "calibration has an unknown key": (
        damage_meta(lambda m: {**m, "calibration": {**m["calibration"], "temperature": 3}}),
        "its 'calibration' entry is malformed",
    ),
    "calibration is a list": (damage_meta(lambda m: {**m, "calibration": [1]}), "'calibration' entry is a JSON list"),
    "recipe is malformed": (
        damage_meta(lambda m: {**m, "recipe": {**m["recipe"], "weights": "w3a3"}}),
        "its 'recipe' entry is malformed",
    ),
    "target is a string": (damage_meta(lambda m: {**m, "target": "vnni"}), "'target' entry is a JSON str"),
    "sha256 block deleted": (damage_meta(lambda m: {k: v for k, v in m.items() if k != "sha256"}), "no valid sha256"),
    "U-Net tensors truncated": (damage_unet(truncate, crafted=False), "is truncated or altered"),
    "U-Net header is a JSON array (rehashed)": (
        damage_unet(lambda p: p.write_bytes(header([1, 2])), crafted=True),
        "header is not a JSON object",
    ),
    "U-Net header lacks data_offsets (rehashed)": (
        damage_unet(lambda p: p.write_bytes(header({"w": {"dtype": "F32", "shape": [1]}})), crafted=True),
        "tensor 'w' has no data_offsets",
    ),
    "U-Net config.json is not JSON": (
        lambda c: (f := c.copy("quantized"), (f / "unet" / "config.json").write_text("{"))[0],
        "could not load the pipeline",
    ),
    "pipeline: model_index.json is a list": (
        damage_pipe("model_index.json", lambda p: p.write_text("[]")),
        "without a UNet2DConditionModel",
    ),
    "pipeline: text encoder truncated": (
        damage_pipe("text_encoder/model.safetensors", truncate),
        "is truncated or altered",
    ),
    "pipeline: VAE header lacks data_offsets": (
        damage_pipe(
            "vae/diffusion_pytorch_model.safetensors", lambda p: p.write_bytes(header({"w": {"dtype": "F32"}}))
        ),
        "has no data_offsets",
    ),
    "pipeline: U-Net config is not UTF-8": (
        damage_pipe("unet/config.json", lambda p: p.write_bytes(b'{"a": "\xff"}')),
        "could not load the pipeline",
    ),
    "a U-Net of another base model": (transplant, "does not fit its pipeline: its cross_attention_dim is 32"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_malformed_model_is_one_line_and_writes_nothing(inputs, monkeypatch, capsys, case):
    make, message = MODEL_CASES[case]
    model = make(inputs)
    before = snapshot(inputs.tmp)
    refused(monkeypatch, capsys, ["generate", "--prompt", "a bag", "--model", model, "--steps", "1"], message)
    assert snapshot(inputs.tmp) == before  # no out.png, no temporaries


# --------------------------------------------------------------------------- QAT checkpoints read by --resume
def damage_checkpoint(name: str, write: Callable[[Path], None]) -> Callable[[Inputs], Path]:
    def make(c: Inputs) -> Path:
        folder = c.copy("qat")
        (step,) = sorted((folder / "checkpoints").iterdir())[-1:]
        write(step / name)
        return folder

    return make


CHECKPOINT_CASES = {
    "model.safetensors truncated": damage_checkpoint("model.safetensors", truncate),
    "state.json lacks keys": damage_checkpoint("state.json", lambda p: edit_json(p, lambda d: {"step": d["step"]})),
    "state.json is not UTF-8": damage_checkpoint("state.json", lambda p: p.write_bytes(b"\xff")),
    "an old pickled rng.pt": damage_checkpoint("rng.pt", lambda p: p.write_bytes(b"\x80\x04K\x01.")),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_damaged_checkpoint_on_resume_is_one_line(inputs, monkeypatch, capsys, case):
    out = CHECKPOINT_CASES[case](inputs)
    before = snapshot(inputs.tmp)
    args = ["qat", "--model", inputs.pipe, "--calib-prompts", "tiny", "--calib-size", "1", "--calib-steps", "1"]
    refused(monkeypatch, capsys, [*args, "--batch", "1", "--steps", "2", "--resume", "--out", out], "checkpoint")
    assert snapshot(inputs.tmp) == before


# ----------------------------------------------------------- user text files, text options, numbers, devices
def user_file(name: str, raw: bytes) -> Callable[[Inputs], Path]:
    def make(c: Inputs) -> Path:
        (c.tmp / name).write_bytes(raw)
        return c.tmp / name

    return make


def quantize_with(option: str, file: Callable[[Inputs], Path]) -> Callable[[Inputs], list]:
    return lambda c: ["quantize", "--model", c.pipe, "--calib-size", "1", option, file(c), "--out", c.tmp / "q"]


def results_file(raw: bytes) -> Callable[[Inputs], list]:
    def make(c: Inputs) -> list:
        (c.tmp / "run").mkdir()
        (c.tmp / "run" / "results.json").write_bytes(raw)
        return ["pareto", "--results", c.tmp / "run", "--out", c.tmp / "p"]

    return make


def generate_with(*extra: str) -> Callable[[Inputs], list]:
    return lambda c: ["generate", "--model", c.pipe, "--out", c.tmp / "a.png", *(extra or ("--prompt", "a bag"))]


ARGUMENT_CASES = {
    # text that is not UTF-8
    "recipe file in Latin-1": (
        quantize_with("--recipe", user_file("r.json", '{"weights": "w8a8", "name": "caf\xe9"}'.encode("latin-1"))),
        "not UTF-8",
    ),
    "prompt file in Latin-1": (
        quantize_with("--calib-prompts", user_file("p.txt", "a caf\xe9 sign\n".encode("latin-1"))),
        "not UTF-8",
    ),
    "--prompt with bytes that are not UTF-8": (generate_with("--prompt", "a caf\udce9 sign"), "is not UTF-8 text"),
    "results.json in Latin-1": (results_file('{"variants": ["\xe9"]}'.encode("latin-1")), "is not UTF-8 text"),
    # JSON of the wrong shape
    "prompt JSON is a number": (quantize_with("--calib-prompts", user_file("p.json", b"42")), "JSON int, not a list"),
    "prompt JSON is a list of numbers": (
        quantize_with("--calib-prompts", user_file("p.json", b"[1, 2]")),
        "neither a string nor an object",
    ),
    "prompt JSON is an object": (
        quantize_with("--calib-prompts", user_file("p.json", b'{"a red bag": 1}')),
        "JSON dict, not a list",
    ),
    "recipe JSON is a list": (quantize_with("--recipe", user_file("r.json", b"[]")), "r.json"),
    "results.json is a list": (results_file(b"[]"), "results.json"),
    # numbers and devices, checked before any model work
    "--steps -3": (generate_with("--prompt", "a bag", "--steps", "-3"), "--steps -3: must be an integer from 1"),
    "--steps abc": (generate_with("--prompt", "a bag", "--steps", "abc"), "e.g. --steps 25"),
    "--guidance nan": (generate_with("--prompt", "a bag", "--guidance", "nan"), "--guidance nan: must be a finite"),
    "--device tpu": (generate_with("--prompt", "a bag", "--device", "tpu"), "--device 'tpu': unknown device"),
}


@pytest.mark.parametrize("case", ARGUMENT_CASES)
def test_bad_argument_is_one_line_and_writes_nothing(inputs, monkeypatch, capsys, case):
    make, message = ARGUMENT_CASES[case]
    args = make(inputs)
    before = snapshot(inputs.tmp)
    refused(monkeypatch, capsys, args, message)
    assert snapshot(inputs.tmp) == before
