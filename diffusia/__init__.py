"""diffusia: quantize the U-Net of Stable-Diffusion-class pipelines for edge hardware."""
from __future__ import annotations

import logging
import os

__version__ = "0.1.0"

# diffusers imports torchao when present; on a CPU-only machine it and transformers log warnings about optional
# CUDA extensions and torchvision that do not concern diffusia. Keep the console for diffusia's own messages.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def load_pipeline(spec, device="cpu", dtype=None, **kwargs):
    """Load a text-to-image pipeline: `tiny`, `sd15-arch`, a local folder, a hub id or a diffusia folder."""
    from diffusia.models.loading import load_pipeline as _load

    return _load(spec, device=device, dtype=dtype, **kwargs)


__all__ = ["__version__", "load_pipeline"]
