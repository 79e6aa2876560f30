"""diffusia: quantize the U-Net of Stable-Diffusion-class pipelines for edge hardware."""
from __future__ import annotations

import logging
import os

__version__ = "0.1.0"

# diffusers imports torchao when present; its optional CUDA extensions log noise on CPU machines.
os.environ.setdefault("TORCHAO_LOG_LEVEL", "ERROR")
logging.getLogger("torchao").setLevel(logging.ERROR)


def load_pipeline(spec, device="cpu", dtype=None, **kwargs):
    """Load a text-to-image pipeline: `tiny`, `sd15-arch`, a local folder, a hub id or a diffusia folder."""
    from diffusia.models.loading import load_pipeline as _load

    return _load(spec, device=device, dtype=dtype, **kwargs)


__all__ = ["__version__", "load_pipeline"]
