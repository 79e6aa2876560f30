"""LSQ (learned step size quantization) for QAT: learnable activation step sizes of the W8A8 layers, and the
module that holds them with the U-Net so data-parallel training synchronises both."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LearnableActScales(nn.Module):
    """LSQ-style learnable activation step sizes of the W8A8 layers (zero points fixed at their calibrated values).

    A forward pre-hook quantizes each W8A8 input onto the grid of exp(log_scale) with a straight-through round, so
    the step size gets the LSQ gradient; the layer's own fake quantization then re-quantizes onto the same grid
    (its scale buffer is kept equal by `sync_buffers`), which changes nothing but passes the gradient through."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        from diffusia.quant import api

        self.layers = {n: m for n, m in api.qmodules(unet).items() if m.precision == "w8a8"}
        self.log_scale = nn.ParameterDict(
            {self._key(n): nn.Parameter(m.act_scale.detach().clone().clamp_min(1e-12).log()) for n, m in self.layers.items()})
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.layers.items()]
        self.sync_buffers()

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def _hook(self, name: str):
        def pre(module: nn.Module, args: tuple) -> tuple | None:
            if module.mode != "fake":
                return None
            x, g = args[0], module.group
            s = self.log_scale[self._key(name)][g].exp()
            zp = module.act_zero_point[g].to(x.dtype)
            q = x / s + zp
            q = torch.clamp(q + (torch.round(q) - q).detach(), 0, module.settings.act_qmax)
            return ((q - zp) * s,) + tuple(args[1:])
        return pre

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Copy the learned step sizes into the layers' act_scale / act_range buffers (used by freeze)."""
        for n, m in self.layers.items():
            s = self.log_scale[self._key(n)].detach().exp().to(m.act_scale)
            zp = m.act_zero_point.to(s)
            m.act_scale.copy_(s)
            m.act_range.copy_(torch.stack([-zp * s, (m.settings.act_qmax - zp) * s], dim=1))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class QATModel(nn.Module):
    """The U-Net and the optional learnable scales in one module, so DDP synchronises both."""

    def __init__(self, unet: nn.Module, lsq: LearnableActScales | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.lsq = lsq

    def forward(self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
