"""A U-Net that runs on another runtime, in place of `pipe.unet` inside an unchanged diffusers pipeline: the text
encoder, scheduler and VAE stay PyTorch; each denoising step is one call into the runtime."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from diffusia.errors import DiffusiaError
from diffusia.export.onnx import ADDED_INPUTS, takes_added_cond


class RuntimeUNet(nn.Module):
    """What the Stable Diffusion pipelines use of a `UNet2DConditionModel`: `config`, `dtype`, `device` and
    `forward(sample, timestep, encoder_hidden_states, ..., added_cond_kwargs, return_dict)` (SDXL's `text_embeds`
    and `time_ids` are graph inputs of SDXL U-Nets). Subclasses implement `_infer`."""

    runtime = "?"

    def __init__(self, config: Any, timestep_groups: int = 1, num_train_timesteps: int = 1000) -> None:
        super().__init__()
        self.config = config
        self.timestep_groups, self.num_train_timesteps = timestep_groups, num_train_timesteps
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # gives .device/.dtype to the pipeline
        if takes_added_cond(config):  # SDXL's pipeline checks its time ids against the added embedding's width
            width = config.projection_class_embeddings_input_dim
            self.add_embedding = SimpleNamespace(linear_1=SimpleNamespace(in_features=width))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _apply(self, fn, recurse: bool = True):
        if not self._anchor.is_meta:
            probe = fn(self._anchor)
            if probe.device.type != "cpu" or probe.dtype != torch.float32:
                raise DiffusiaError(
                    f"a U-Net on {self.runtime} runs in float32 on the CPU: load the pipeline with "
                    "--runtime torch to move or cast it"
                )
        return super()._apply(fn, recurse)

    def group_of(self, t: torch.Tensor) -> int:
        g = int(float(t.reshape(-1)[0]) * self.timestep_groups // self.num_train_timesteps)
        return min(max(g, 0), self.timestep_groups - 1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Any,
        encoder_hidden_states: torch.Tensor,
        timestep_cond: Any = None,
        attention_mask: Any = None,
        cross_attention_kwargs: Any = None,
        added_cond_kwargs: Any = None,
        return_dict: bool = True,
        **unused: Any,
    ):
        if timestep_cond is not None or attention_mask is not None:
            raise DiffusiaError(
                f"the {self.runtime} U-Net takes sample, timestep, text embeddings and SDXL's added conditioning "
                "only (no timestep_cond or attention mask): use --runtime torch"
            )
        added = self._added(added_cond_kwargs, sample.shape[0])
        t = torch.as_tensor(timestep).reshape(-1)
        if t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise DiffusiaError(
                    f"the {self.runtime} U-Net takes integer timesteps and the scheduler gave "
                    f"{t[0].item()}: use DPM-Solver/DDIM/PNDM or --runtime torch"
                )
        t = t.to(torch.int64).expand(sample.shape[0]).contiguous()
        text = encoder_hidden_states.float().contiguous()
        out = self._run(sample.float().contiguous(), t, text, self.group_of(t), added)
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)

    def _added(self, added_cond_kwargs: Any, batch: int) -> dict[str, torch.Tensor] | None:
        """SDXL's added conditioning as graph feeds (float32, one row per sample), None for SD 1.x/2.x U-Nets."""
        if not takes_added_cond(self.config):
            if added_cond_kwargs:
                raise DiffusiaError(
                    f"the {self.runtime} graph of this U-Net takes no SDXL conditioning (added_cond_kwargs): "
                    "use --runtime torch"
                )
            return None
        given = dict(added_cond_kwargs or {})
        if set(given) != set(ADDED_INPUTS):
            raise DiffusiaError(
                f"the {self.runtime} SDXL U-Net takes added_cond_kwargs with exactly {' and '.join(ADDED_INPUTS)} "
                f"(got {sorted(given) or 'none'}): use --runtime torch"
            )
        return {k: torch.as_tensor(given[k]).float().expand(batch, -1).contiguous() for k in ADDED_INPUTS}

    def _run(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        group: int,
        added: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The runtime's output for one call; `added` holds SDXL's `text_embeds` and `time_ids` (else None)."""
        feeds = {"sample": sample, "timestep": timestep, "encoder_hidden_states": text, **(added or {})}
        return self._infer({k: v.numpy() for k, v in feeds.items()}, group)

    def _infer(self, feeds: dict[str, np.ndarray], group: int) -> torch.Tensor:
        """The output of timestep group `group`'s graph for the graph inputs `feeds`."""
        raise NotImplementedError
