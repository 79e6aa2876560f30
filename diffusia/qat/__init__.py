"""Quantization-aware training: fine-tune a PTQ-initialised U-Net under simulated INT8, save the real INT8 folder.

`from diffusia.qat import QATConfig, run_qat`; the names load lazily so `python -m diffusia.qat.train` runs cleanly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QATConfig", "QATResult", "run_qat"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from diffusia.qat import train as _train

        return getattr(_train, name)
    raise AttributeError(f"module 'diffusia.qat' has no attribute {name!r}")
