"""benchmarks/class_targets.sh: for every CPU class its dry run names scripts that exist, rows that `backends.py`
has, and the plan files the two-digit plan script writes."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.test_bench_backends import _bench_module

ROOT = Path(__file__).resolve().parent.parent


def _dry_run(cpu_class: str, only: str = "") -> dict[str, list[str]]:
    env = {key: value for key, value in os.environ.items() if key not in ("OUT", "PLAN", "GROWN")}
    env.update(CPU_CLASS=cpu_class, ONLY=only)
    out = subprocess.run(
        ["bash", "benchmarks/class_targets.sh", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        line[3:].split(":")[0]: shlex.split(line.split(": ", 1)[1])
        for line in out.splitlines()
        if line.startswith("== ")
    }


@pytest.mark.parametrize("cpu_class", ["avx2", "vnni", "amx"])
def test_every_command_names_existing_scripts_and_rows(monkeypatch, cpu_class):
    rows_of_backends = set(_bench_module(monkeypatch, "backends").backend_names())
    commands = _dry_run(cpu_class)
    grows = cpu_class != "avx2"  # the AVX2 plan already grows W8A8; with VNNI, a second plan grows it for bf16
    assert list(commands) == [
        "tiny_interleaved",
        "x2_layer_gain",
        *(["x2_grow"] if grows else []),
        "sd15_interleaved",
        "openvino_profile",
        "calibration_time",
    ]
    for name, argv in commands.items():
        scripts = [a for a in argv if a.startswith("benchmarks/") and a.endswith(".py")]
        assert len(scripts) == 1 and (ROOT / scripts[0]).is_file(), name
        assert f"benchmarks/results/{cpu_class}/targets" in " ".join(argv), name  # results under this class
        if "--only" in argv:
            rows = argv[argv.index("--only") + 1].split(",")
            assert set(rows) <= rows_of_backends, (name, set(rows) - rows_of_backends)
    gain_out = commands["x2_layer_gain"][commands["x2_layer_gain"].index("--out") + 1]
    assert f"X2_PLAN={gain_out}/x2_layer_gain.json" in commands["sd15_interleaved"]  # the plan it just chose
    assert ("--start" in commands["x2_layer_gain"]) == grows  # VNNI: the preset shrunk for the 2 % target
    if grows:
        grow_out = commands["x2_grow"][commands["x2_grow"].index("--out") + 1]
        assert "--start" not in commands["x2_grow"]
        assert f"X2_GROWN={grow_out}/x2_layer_gain.json" in commands["sd15_interleaved"]
        assert "diffusia_w8a8_x2_grown_ov_bf16" in " ".join(commands["sd15_interleaved"])
    # the configuration the sd15-arch W8A8 target is met with, on `tiny` too
    suffix = "_bf16" if cpu_class != "avx2" else ""
    tiny = commands["tiny_interleaved"]
    tiny_rows = tiny[tiny.index("--only") + 1].split(",")
    assert {f"diffusia_w8a8_balanced_attn8_ov{suffix}", f"diffusia_hybrid_mse_ov{suffix}"} <= set(tiny_rows)
    assert tiny[tiny.index("--against") + 1] == "ov_fp32" in tiny_rows  # "beats every FP32 path": OpenVINO's
    bf16_rows = [r for r in " ".join(commands["sd15_interleaved"]).split(",") if r.endswith("_bf16")]
    assert bool(bf16_rows) == (cpu_class != "avx2")  # no bf16 units without AVX-512 BF16


def test_only_runs_the_steps_it_names():
    assert list(_dry_run("vnni", only="calibration_time,tiny_interleaved")) == ["tiny_interleaved", "calibration_time"]


def test_an_unknown_class_is_refused_in_one_line():
    env = {**os.environ, "CPU_CLASS": "arm"}
    run = subprocess.run(
        ["bash", "benchmarks/class_targets.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 2 and run.stderr.strip() == "unknown CPU class 'arm': set CPU_CLASS to avx2, vnni or amx"
