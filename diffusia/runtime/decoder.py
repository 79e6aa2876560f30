"""The VAE decoder on OpenVINO, beside the U-Net of `--runtime openvino`.

At 512x512 (SD v1.5's VAE, AMD Zen 4, `benchmarks/pipeline_parts.py`) OpenVINO decodes in 0.77x PyTorch's time in
f32 and 0.40x in bf16, so an OpenVINO runtime folder carries the decoder too: `vae.decoder` converted from the
pipeline's own VAE when the U-Net is exported (`vae_decoder.xml`, checked against PyTorch's decoder), compiled per
latent shape on first use, in the U-Net's float precision. Installed as `vae.decoder`, it is what diffusers' plain,
sliced (`--vae-slicing`) and tiled (`--vae-tiling`) decodes call, and PyTorch's decoder weights are freed (198 MB for
SD's VAE). `vae.encode`, `post_quant_conv` and the text encoder stay PyTorch (the text encoder would gain 0.04 s per
call). Converting and checking SD's decoder adds about 15 s to an export on 2 cores: done once, at export, and not
whenever a pipeline loads."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)

DECODER = "vae_decoder.xml"
GRAPH = "vae.decoder"  # what the graph computes: the decoder after `post_quant_conv` (manifest key "graph")
CHECK_LATENT = 16  # latent side of the export check (a 64x64 decode takes 15.6 s of PyTorch on 2 Zen 4 cores)


class _Decoder(nn.Module):
    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)


def _latents(vae: nn.Module, side: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, vae.config.latent_channels, side, side, generator=gen)


def export_decoder(vae: nn.Module, folder: Path, tolerance: float = 1e-3) -> dict[str, Any]:
    """Write `folder/vae_decoder.xml` (+ .bin, f32 weights) from the float `vae`'s decoder; its output for a seeded
    latent must match PyTorch's within `tolerance` relative L2, else an error. Returns {"file", "graph",
    "relative_l2"}."""
    from diffusia.export.openvino import compile_model, require_openvino

    ov = require_openvino()
    module = _Decoder(vae.decoder).eval()
    latents = _latents(vae, CHECK_LATENT)
    with torch.no_grad():
        model = ov.convert_model(module, example_input=latents)
        expected = module(latents)
    got = torch.from_numpy(compile_model(model, "f32").create_infer_request().infer([latents.numpy()])[0])
    err = float((got - expected).norm() / expected.norm())
    if not (math.isfinite(err) and err <= tolerance):
        raise DiffusiaError(f"OpenVINO's VAE decoder differs from PyTorch's by {err:.2%} relative L2: report it")
    ov.save_model(model, str(folder / DECODER), compress_to_fp16=False)
    return {"file": DECODER, "graph": GRAPH, "relative_l2": err}


def load_decoder(folder: Path, entry: dict | None, precision: str | None, threads: int | None):
    """The decoder a manifest's `vae_decoder` entry names, or None: none exported, or a graph of an earlier layout
    (the whole `vae.decode`, written by diffusia before 2026-12-06), which PyTorch's decoder replaces (a warning)."""
    if not entry:
        return None
    if entry.get("graph") != GRAPH:
        log.warning(
            "%s: its VAE decoder graph predates diffusia's decoder layout, so PyTorch decodes; re-export "
            "the folder to decode on OpenVINO",
            folder,
        )
        return None
    return OpenVINODecoder(folder / entry["file"], precision, threads)


def _refuse_state_dict(module, prefix, keep_vars) -> None:
    raise DiffusiaError(
        "the VAE decoder runs on OpenVINO and has no PyTorch weights to save: save the pipeline loaded without "
        "--runtime openvino"
    )


class OpenVINODecoder(nn.Module):
    """`vae.decoder` as an OpenVINO graph: one compiled model per latent shape, no parameters."""

    def __init__(self, path: str | Path, precision: str | None = "f32", threads: int | None = None) -> None:
        from diffusia.export.openvino import require_openvino

        super().__init__()
        self.model = require_openvino().Core().read_model(str(path))
        self.precision, self.threads = precision, threads
        self._requests: dict[tuple, Any] = {}
        self.register_state_dict_pre_hook(_refuse_state_dict)  # a VAE saved now would lack its decoder

    def forward(self, latents: torch.Tensor, latent_embeds: torch.Tensor | None = None) -> torch.Tensor:
        from diffusia.export.openvino import compile_model

        if latent_embeds is not None:
            raise DiffusiaError("the OpenVINO VAE decoder takes no latent embeddings: use --runtime torch")
        if str(latents.device) != "cpu":
            raise DiffusiaError("the OpenVINO VAE decoder runs on the CPU: load the pipeline on --device cpu")
        shape = tuple(latents.shape)
        if shape not in self._requests:
            model = self.model.clone()
            model.reshape({0: shape})
            self._requests[shape] = compile_model(model, self.precision, self.threads).create_infer_request()
        request = self._requests[shape]
        request.infer([latents.detach().float().numpy()])
        return torch.from_numpy(request.get_output_tensor(0).data.copy()).to(latents.dtype)

    def install(self, vae: nn.Module) -> None:
        """Make this graph `vae.decoder`, what diffusers' decodes call (plain, sliced and tiled); PyTorch's decoder
        and its weights go."""
        vae.decoder = self
        vae.diffusia_decoder = "openvino"
