"""Where benchmark results go: benchmarks/results/<machine class>/, from the real hardware, so figures of different
machine classes never mix: `avx2` (x86 without VNNI), `vnni` (AVX-512 VNNI / AVX-VNNI, no AMX) and `amx` (VNNI
and AMX tiles, e.g. Intel Sapphire Rapids: the same INT8 layout as `vnni`, but oneDNN and OpenVINO run INT8 and
BF16 matmuls on the tile units, so its timings are a class of their own)."""

from __future__ import annotations

import datetime as dt
import os
import statistics
from pathlib import Path

from diffusia.quant import cpu

# OpenVINO's own kernels, oneDNN's (OpenVINO's copy and PyTorch's), PyTorch's ATen, diffusia's INT8 layout
ISA_CAP_VARIABLES = ("OV_CPU_MAX_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "DIFFUSIA_CPU")


def isa_caps() -> dict[str, str]:
    """The environment variables set to cap the instruction sets the kernels use: an emulated class, not the
    machine's own (`machine_class` stays the real hardware's)."""
    return {k: os.environ[k] for k in ISA_CAP_VARIABLES if os.environ.get(k)}


def machine_class() -> str:
    features = cpu.detected_features()
    return "amx" if features.get("amx") else cpu.host_class(features)


def results_dir() -> Path:
    return Path(__file__).resolve().parent / "results" / machine_class()


def write_results(stem: Path, result: dict, markdown: str) -> None:
    """A benchmark's result as `stem`.json and `stem`.md (each written atomically); the Markdown also on stdout."""
    from diffusia.fileio import write_json, write_text

    write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), markdown)
    print(markdown.rstrip("\n"))


def result_header(**fields) -> dict:
    """What a result starts with: what ran (`fields`, e.g. model, latent, versions), on which CPU and class, when."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {**fields, "cpu": cpu.cpu_model(), "class": machine_class(), "isa_caps": isa_caps(), "date": now}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile of `values` (inclusive: within their range), as every benchmark
    reports a spread."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3
