"""Where benchmark results go: benchmarks/results/<CPU class>/, the class of the real hardware (`avx2`: x86
without VNNI; `vnni`: AVX-512 VNNI / AVX-VNNI / AMX), so figures of different machine classes never mix."""
from __future__ import annotations

from pathlib import Path

from diffusia.quant import cpu


def results_dir() -> Path:
    return Path(__file__).resolve().parent / "results" / cpu.host_class(cpu.detected_features())
