"""diffusia: quantize the U-Net of Stable-Diffusion-class pipelines for edge hardware."""

from __future__ import annotations

__version__ = "0.1.0"  # importing diffusia changes no process state: the CLI's set-up is diffusia.cli.setup_process


def load_pipeline(spec, device="cpu", dtype=None, **kwargs):
    """Load a text-to-image pipeline: `tiny`, `sd15-arch`, a local folder, a hub id or a diffusia folder."""
    from diffusia.models.loading import load_pipeline as _load

    return _load(spec, device=device, dtype=dtype, **kwargs)


_VERBS = ("quantize", "calibrate", "freeze", "dequantize", "summary", "save")


def __getattr__(name):  # the verbs import torch and diffusers: only when first used
    if name in _VERBS:
        from diffusia import verbs

        return getattr(verbs, name)
    raise AttributeError(f"module 'diffusia' has no attribute {name!r}")


def _register_with_diffusers() -> None:
    """`quant_method: "diffusia"` for diffusers' from_pretrained, registered when diffusers loads its quantizers."""
    from diffusia.integrations import install

    install()


_register_with_diffusers()

__all__ = ["__version__", "load_pipeline", *_VERBS]
