"""The VAE decoder on OpenVINO, beside the U-Net of `--runtime openvino`.

At 512x512 (SD v1.5's VAE, AMD Zen 4, `benchmarks/pipeline_parts.py`) OpenVINO decodes in 0.77x PyTorch's time in
f32 and 0.40x in bf16, so an OpenVINO runtime folder carries the decoder too: converted from the pipeline's own VAE
when the U-Net is exported (`vae_decoder.xml`, checked against PyTorch's decode), compiled per latent shape on first
use, in the U-Net's float precision. `vae.encode` and the text encoder stay PyTorch (the text encoder would gain
0.04 s per call). Converting and checking SD's decoder adds about 15 s to an export on 2 cores: done once, at
export, and not whenever a pipeline loads."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffusia.errors import DiffusiaError

DECODER = "vae_decoder.xml"
CHECK_LATENT = 16  # latent side of the export check (a 64x64 decode takes 15.6 s of PyTorch on 2 Zen 4 cores)


class _Decode(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, return_dict=False)[0]


def _latents(vae: nn.Module, side: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, vae.config.latent_channels, side, side, generator=gen)


def export_decoder(vae: nn.Module, folder: Path, tolerance: float = 1e-3) -> dict[str, Any]:
    """Write `folder/vae_decoder.xml` (+ .bin, f32 weights) from the float `vae`; its decode of a seeded latent
    must match PyTorch's within `tolerance` relative L2, else an error. Returns {"file", "relative_l2"}."""
    from diffusia.export.openvino import compile_model, require_openvino

    ov = require_openvino()
    module = _Decode(vae).eval()
    latents = _latents(vae, CHECK_LATENT)
    with torch.no_grad():
        model = ov.convert_model(module, example_input=latents)
        expected = module(latents)
    got = torch.from_numpy(compile_model(model, "f32").create_infer_request().infer([latents.numpy()])[0])
    err = float((got - expected).norm() / expected.norm())
    if not (math.isfinite(err) and err <= tolerance):
        raise DiffusiaError(f"OpenVINO's VAE decoder differs from PyTorch's by {err:.2%} relative L2: report it")
    ov.save_model(model, str(folder / DECODER), compress_to_fp16=False)
    return {"file": DECODER, "relative_l2": err}


class OpenVINODecoder:
    """`vae.decode` on an OpenVINO graph: one compiled model per latent shape."""

    def __init__(self, path: str | Path, precision: str | None = "f32", threads: int | None = None) -> None:
        from diffusia.export.openvino import require_openvino

        self.model = require_openvino().Core().read_model(str(path))
        self.precision, self.threads = precision, threads
        self._requests: dict[tuple, Any] = {}

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        from diffusia.export.openvino import compile_model

        shape = tuple(latents.shape)
        if shape not in self._requests:
            model = self.model.clone()
            model.reshape({0: shape})
            self._requests[shape] = compile_model(model, self.precision, self.threads).create_infer_request()
        request = self._requests[shape]
        request.infer([latents.detach().float().cpu().numpy()])
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    def install(self, vae: nn.Module) -> None:
        """Make `vae.decode` (what the pipelines call) run on this graph; everything else of `vae` is unchanged, and
        with VAE tiling or slicing on (`--vae-tiling`, `--vae-slicing`: less memory) PyTorch decodes as asked."""
        from diffusers.models.autoencoders.vae import DecoderOutput

        torch_decode = vae.decode

        def decode(z: torch.Tensor, return_dict: bool = True, generator=None):
            if getattr(vae, "use_tiling", False) or (getattr(vae, "use_slicing", False) and z.shape[0] > 1):
                return torch_decode(z, return_dict=return_dict)
            if str(z.device) != "cpu":
                raise DiffusiaError("the OpenVINO VAE decoder runs on the CPU: load the pipeline on --device cpu")
            sample = self(z).to(z.dtype)
            return DecoderOutput(sample=sample) if return_dict else (sample,)

        vae.decode = decode
        vae.diffusia_decoder = "openvino"
