"""The U-Net on ONNX Runtime (CPU execution provider): one session per timestep group, called once per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusia.errors import DiffusiaError
from diffusia.runtime.artifact import read_manifest
from diffusia.runtime.unet import RuntimeUNet

INSTALL = "pip install onnxruntime==1.32.0"


class ONNXRuntimeUNet(RuntimeUNet):
    runtime = "onnxruntime"

    def __init__(self, folder: str | Path, config: Any, threads: int | None = None, arena: str | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise DiffusiaError(f"the onnxruntime runtime is not installed: {INSTALL}") from None
        from diffusia.export.onnx import DEFAULT_ARENA, onnxruntime_run_options, onnxruntime_session

        manifest = read_manifest(folder)
        super().__init__(config, manifest["timestep_groups"], manifest["num_train_timesteps"])
        self.folder, self.manifest = Path(folder), manifest
        threads, arena = int(threads or torch.get_num_threads()), arena or DEFAULT_ARENA
        self._sessions = [onnxruntime_session(self.folder / f, threads, arena) for f in manifest["files"]]
        self._run_options = onnxruntime_run_options(arena)

    def _infer(self, feeds: dict[str, np.ndarray], group: int) -> torch.Tensor:
        return torch.from_numpy(self._sessions[group].run(None, feeds, self._run_options)[0])
