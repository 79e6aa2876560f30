"""The U-Net on OpenVINO: one compiled model per timestep group and input shapes (compiled on first use: a static
shape lets OpenVINO plan its memory and kernels once), called once per denoising step.

The float layers compute in f32 by default, as in the check the export passed. OpenVINO's own default on CPUs with
BF16 units is bf16 for them (`precision=None`), which moved the micro test model's images about 3x further from
diffusia's kernels (tests/runtime); `precision="bf16"` is the opt-in. So is OpenVINO's dynamic quantization of the
weight-only layers' float inputs (`f32+dynamic`, `bf16+dynamic`: `diffusia.runtime.PRECISIONS`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusia.export.openvino import compile_model, require_openvino
from diffusia.quant import cpu
from diffusia.runtime import float_precision, is_dynamic
from diffusia.runtime.artifact import read_manifest
from diffusia.runtime.decoder import load_decoder
from diffusia.runtime.unet import RuntimeUNet

log = logging.getLogger(__name__)


class OpenVINOUNet(RuntimeUNet):
    runtime = "openvino"

    def __init__(
        self, folder: str | Path, config: Any, precision: str | None = "f32", threads: int | None = None
    ) -> None:
        manifest = read_manifest(folder)
        if is_dynamic(precision) and manifest.get("weight_only_layers") == 0:
            log.warning(
                "runtime precision %s: this U-Net has no weight-only (w8/w4) layers for OpenVINO to quantize the "
                "inputs of; running %s",
                precision,
                float_precision(precision),
            )
            precision = float_precision(precision)
        elif is_dynamic(precision) and not cpu.has_vnni():
            log.warning(  # measured with the CPU capped to AVX2 (README, "Step time of the weight-only recipes")
                "runtime precision %s on a CPU without VNNI: OpenVINO may leave the weight-only layers' inputs float "
                "(it did with the CPU capped to AVX2), computing as %s does",
                precision,
                float_precision(precision),
            )
        super().__init__(config, manifest["timestep_groups"], manifest["num_train_timesteps"])
        self.folder, self.manifest, self.precision, self.threads = Path(folder), manifest, precision, threads
        self._models = [require_openvino().Core().read_model(str(self.folder / f)) for f in manifest["files"]]
        self._requests: dict[tuple, Any] = {}
        # the VAE decoder exported beside it (runtime.decoder), if any
        self.decoder = load_decoder(self.folder, manifest.get("vae_decoder"), float_precision(precision), threads)

    def _request(self, group: int, shapes: dict[str, tuple]):
        key = (group, tuple(shapes.items()))
        if key not in self._requests:
            model = self._models[group].clone()
            model.reshape(shapes)
            compiled = compile_model(
                model, float_precision(self.precision), self.threads, dynamic_quantization=is_dynamic(self.precision)
            )
            self._requests[key] = compiled.create_infer_request()
        return self._requests[key]

    def _infer(self, feeds: dict[str, np.ndarray], group: int) -> torch.Tensor:
        request = self._request(group, {k: v.shape for k, v in feeds.items()})
        request.infer(feeds)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
