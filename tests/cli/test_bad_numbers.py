"""Bad numbers, devices and choices on the command line: each is refused while parsing, before any model work,
with one line naming the option, the value and a valid example, exit code 2, and nothing written."""

from __future__ import annotations

import time

import pytest

from diffusia import cli

MISSING = "no-such-model"  # a model that would fail to load: the option must be refused before loading

# command -> the arguments every case of it takes (required options, an --out that must not appear)
BASE = {
    "generate": ["generate", "--prompt", "a bag", "--model", MISSING, "--out", "out.png"],
    "quantize": ["quantize", "--model", MISSING, "--out", "out"],
    "export": ["export", "--model", MISSING, "--out", "out.onnx"],
    "eval": ["eval", "--model", MISSING, "--out", "out"],
    "study": ["study", "--model", MISSING, "--out", "out"],
    "sensitivity": ["sensitivity", "--model", MISSING, "--out", "out"],
    "search": ["search", "--sensitivity", "sens", "--out", "out.json"],
    "recommend": ["recommend", "--results", "runs"],
    "qat": ["qat", "--model", MISSING, "--out", "out"],
}

# (command, option, bad value, what the one line says about it)
CASES = [
    ("generate", "--steps", "0", "from 1 to 1000"),
    ("generate", "--steps", "-3", "from 1 to 1000"),
    ("generate", "--steps", "100000", "from 1 to 1000"),
    ("generate", "--guidance", "nan", "finite"),
    ("generate", "--guidance", "inf", "finite"),
    ("generate", "--guidance", "-1", "from 0 to 100"),
    ("generate", "--num-images", "0", "from 1 to 1000"),
    ("generate", "--seed", "-1", "from 0 to 4294967295"),
    ("generate", "--device", "tpu", "unknown device"),
    ("generate", "--device", "cuda:99", "no such CUDA device"),
    ("generate", "--dtype", "fp8", "not one of fp32, fp16, bf16"),
    ("generate", "--runtime", "tensorrt", "not one of auto, torch, openvino"),
    ("generate", "--runtime-precision", "fp8", "not one of f32, bf16"),
    ("quantize", "--calib-size", "0", "from 1 to 10000"),
    ("quantize", "--calib-steps", "0", "from 1 to 1000"),
    ("quantize", "--calib-batch", "0", "from 1 to 64"),
    ("quantize", "--calib-batch", "65", "from 1 to 64"),
    ("quantize", "--timestep-groups", "0", "from 1 to 1000"),
    ("quantize", "--calibrator", "kl", "not one of percentile, minmax, mse"),
    ("quantize", "--calib-resolution", "100", "a multiple of 8 from 64 to 2048"),
    ("quantize", "--calib-resolution", "4096", "a multiple of 8 from 64 to 2048"),
    ("quantize", "--device", "tpu", "unknown device"),
    ("quantize", "--target", "arm", "not one of auto, portable"),
    ("quantize", "--runtime", "openvino,tensorrt", "'tensorrt' is not one of"),
    ("qat", "--runtime", "tensorrt", "'tensorrt' is not one of"),
    ("export", "--tolerance", "nan", "finite"),
    ("export", "--tolerance", "0", "above 0 to 1"),
    ("export", "--tolerance", "-1", "above 0 to 1"),
    ("export", "--format", "tflite", "not one of onnx, openvino, onnxruntime"),
    ("eval", "--num", "0", "from 1 to 100000"),
    ("eval", "--runs", "0", "from 1 to 10000"),
    ("eval", "--warmup", "-1", "from 0 to 1000"),
    ("eval", "--budget-mb", "-5", "> 0"),
    ("eval", "--budget-mb", "nan", "finite"),
    ("eval", "--steps", "0", "from 1 to 1000"),
    ("eval", "--guidance", "nan", "finite"),
    ("eval", "--seed", "-1", "from 0"),
    ("eval", "--threads", "0", "from 1 to 1024"),
    ("eval", "--processes", "0", "from 1 to 64"),
    ("eval", "--calib-size", "0", "from 1 to 10000"),
    ("eval", "--device", "tpu", "unknown device"),
    ("study", "--num", "0", "from 1 to 100000"),
    ("study", "--runs", "0", "from 1 to 10000"),
    ("study", "--qat-steps", "0", "from 1 to 1000000"),
    ("study", "--activations", "int4", "not one of auto, uint8, uint7, int8"),
    ("study", "--attention", "int4", "not one of float, int8"),
    ("quantize", "--activations", "int4", "not one of auto, uint8, uint7, int8"),
    ("sensitivity", "--eval-timesteps", "0", "from 1 to 1000"),
    ("sensitivity", "--calib-size", "0", "from 1 to 10000"),
    ("sensitivity", "--steps", "0", "from 1 to 1000"),
    ("sensitivity", "--top", "-1", "from 0"),
    ("sensitivity", "--device", "tpu", "unknown device"),
    ("search", "--budget-mb", "-1", "> 0"),
    ("search", "--budget-mb", "nan", "finite"),
    ("search", "--latency-s", "0", "> 0"),
    ("search", "--quality-floor", "nan", "finite"),
    ("search", "--method", "simplex", "not one of auto, milp, greedy"),
    ("search", "--precisions", "w8a8,int3", "'int3' is not one of w8a8"),
    ("recommend", "--memory-mb", "-5", "> 0"),
    ("recommend", "--memory-mb", "nan", "finite"),
    ("recommend", "--latency-s", "-1", "> 0"),
    ("recommend", "--quality-tolerance", "-0.1", ">= 0"),
    ("qat", "--steps", "0", "from 1 to 1000000"),
    ("qat", "--lr", "nan", "finite"),
    ("qat", "--lr", "0", "above 0 to 1"),
    ("qat", "--lsq-lr", "-1", "above 0 to 1"),
    ("qat", "--batch", "0", "from 1 to 4096"),
    ("qat", "--checkpoint-every", "-1", ">= 0"),
    ("qat", "--calib-size", "0", "from 1 to 10000"),
    ("qat", "--timestep-groups", "0", "from 1 to 1000"),
    ("qat", "--seed", "-1", "from 0"),
    ("qat", "--device", "tpu", "cpu, cuda or auto"),
    ("qat", "--device", "cuda:0", "cpu, cuda or auto"),  # accelerate picks the GPU of each process
    ("qat", "--data", "imagenet", "not one of fashion-mnist"),
]


def run(monkeypatch, capsys, tmp_path, args: list[str]) -> tuple[int, str]:
    """`diffusia ARGS` in this process, in an empty folder: (exit code, stderr); the folder must stay empty."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert list(tmp_path.iterdir()) == []  # no output, not even a temporary
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command, option, value, rule", CASES, ids=[" ".join(c[:3]) for c in CASES])
def test_bad_value_is_one_line_before_any_work(monkeypatch, capsys, tmp_path, command, option, value, rule):
    t0 = time.perf_counter()
    code, err = run(monkeypatch, capsys, tmp_path, [*BASE[command], option, value])
    line = err.rstrip("\n")
    assert code == 2 and "\n" not in line and "Traceback" not in err, err
    assert line.startswith(f"diffusia: error: {option} ") and value.lstrip("-").split(":")[0] in line, line
    assert rule in line and f", e.g. {option} " in line, line
    assert time.perf_counter() - t0 < 3.0  # refused while parsing (typically ~10 ms): no model was loaded


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--prompt", "a bag", "--steps", "abc"], "Invalid value for '--steps'"),
        (["generate", "--prompt", "a bag", "--guidance", "high"], "Invalid value for '--guidance'"),
        (["qat", "--out", "out", "--steps", "1.5"], "Invalid value for '--steps'"),
        (["generate", "--steps", "3"], "Missing option '--prompt'"),
        (["generate", "--prompt", "a bag", "--stepz", "3"], "No such option: --stepz"),
    ],
)
def test_malformed_command_line_is_one_line_too(monkeypatch, capsys, tmp_path, args, message):
    code, err = run(monkeypatch, capsys, tmp_path, args)
    line = err.rstrip("\n")
    assert code == 2 and "\n" not in line and line.startswith("diffusia: error: ") and message in line, err
    assert line.endswith(f"(see `diffusia {args[0]} --help`)")


def test_good_values_pass_the_checks(monkeypatch, capsys, tmp_path):
    """The boundaries themselves are accepted: the run gets past parsing to the (missing) model."""
    args = [
        *BASE["generate"],
        "--steps",
        "1000",
        "--guidance",
        "0",
        "--seed",
        "0",
        "--num-images",
        "1",
        "--device",
        "cpu",
        "--dtype",
        "fp16",
    ]
    code, err = run(monkeypatch, capsys, tmp_path, args)
    assert code == 2 and f"no such model '{MISSING}'" in err, err
