"""diffusia: quantize the U-Net of Stable-Diffusion-class pipelines for edge hardware."""
from __future__ import annotations

__version__ = "0.1.0"  # importing diffusia changes no process state: the CLI's set-up is diffusia.cli.setup_process


def load_pipeline(spec, device="cpu", dtype=None, **kwargs):
    """Load a text-to-image pipeline: `tiny`, `sd15-arch`, a local folder, a hub id or a diffusia folder."""
    from diffusia.models.loading import load_pipeline as _load

    return _load(spec, device=device, dtype=dtype, **kwargs)


__all__ = ["__version__", "load_pipeline"]
