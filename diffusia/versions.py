"""Installed versions of the packages a result depends on, recorded with every saved model and report."""

from __future__ import annotations

import platform
from importlib import metadata

CORE = ("diffusia", "torch", "diffusers", "transformers", "safetensors", "accelerate")


def package_versions(names: tuple[str, ...] = CORE) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = platform.python_version()
    return out
