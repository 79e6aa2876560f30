"""Cheap integrity check of safetensors files: header parses and the file holds every byte it declares."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from diffusia.errors import DiffusiaError


def read_header(path: str | Path) -> tuple[int, dict]:
    """(header length, header) of a safetensors file: tensor names, dtypes, shapes and offsets, no tensor data."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        for name, entry in header.items():
            offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
            if name != "__metadata__" and not (
                isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            ):
                raise ValueError(f"tensor {name!r} has no data_offsets [begin, end]")
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise DiffusiaError(f"{path} is not a valid safetensors file ({e}): re-save or re-download it") from None
    return n, header


def check_safetensors(path: str | Path) -> None:
    """Raise a one-line DiffusiaError if `path` is not a complete safetensors file."""
    path = Path(path)
    size = path.stat().st_size
    n, header = read_header(path)
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise DiffusiaError(
            f"{path} is truncated or altered: header declares {8 + n + end} bytes, file has {size}; "
            "re-save or re-download it"
        )


def check_folder(folder: str | Path) -> None:
    """Check every safetensors file below a pipeline folder; refuse pickled weights."""
    folder = Path(folder)
    for f in sorted(folder.rglob("*.safetensors")):
        check_safetensors(f)
    pickled = [p for ext in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in folder.rglob(ext)]
    if pickled and not any(folder.rglob("*.safetensors")):
        raise DiffusiaError(
            f"{folder} holds only pickled weights ({pickled[0].name}); diffusia loads safetensors only from user "
            "paths: convert them with diffusers' save_pretrained(safe_serialization=True)"
        )
