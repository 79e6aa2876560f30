"""LSQ (learned step size quantization) for QAT: learnable activation step sizes of the layers with quantized
activations (one or two digits), and the module that holds them with the U-Net so data-parallel training
synchronises both."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusia.quant import qmath


def _lsq_quant(x: Tensor, s: Tensor, zp: Tensor, qmax: int) -> Tensor:
    """Quantize-dequantize onto the grid of step s with a straight-through round (LSQ gradient to s and x)."""
    q = x / s + zp
    q = torch.clamp(q + (torch.round(q) - q).detach(), 0, qmax)
    return (q - zp) * s


class LearnableActScales(nn.Module):
    """LSQ-style learnable activation step sizes of the layers with quantized activations (zero points fixed at
    their calibrated values).

    A forward pre-hook quantizes each such input onto the grid of exp(log_scale) with a straight-through round, so
    the step size gets the LSQ gradient; a two-digit layer (`w8a8x2`) adds its residual's digit, whose step derives
    from the same scale. The layer's own fake quantization then re-quantizes onto the same grid (its scale buffer is
    kept equal by `sync_buffers`), which changes nothing but passes the gradient through."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        from diffusia.quant import api

        self.layers = {n: m for n, m in api.qmodules(unet).items() if m.spec.act_digits}
        self.log_scale = nn.ParameterDict(
            {
                self._key(n): nn.Parameter(m.act_scale.detach().clone().clamp_min(1e-12).log())
                for n, m in self.layers.items()
            }
        )
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.layers.items()]
        self.sync_buffers()

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def _hook(self, name: str):
        def pre(module: nn.Module, args: tuple) -> tuple | None:
            if module.mode != "fake":
                return None
            x, g, qmax = args[0], module.group, module.settings.act_qmax
            s = self.log_scale[self._key(name)][g].exp()
            y = _lsq_quant(x, s, module.act_zero_point[g].to(x.dtype), qmax)
            if module.spec.act_digits == 2:
                s2, zp2 = qmath.residual_qparams(1.0, qmax)  # the residual's step, relative to s
                y = y + _lsq_quant(x - y, s * s2, torch.tensor(zp2, dtype=x.dtype, device=x.device), qmax)
            return (y,) + tuple(args[1:])

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

    def forward(
        self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor, added_cond_kwargs: dict | None = None
    ) -> Tensor:
        kwargs = {} if added_cond_kwargs is None else {"added_cond_kwargs": added_cond_kwargs}
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False, **kwargs)[0]
