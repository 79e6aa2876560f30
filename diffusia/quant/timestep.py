"""Timestep-aware activation ranges: the current timestep group, shared by a U-Net's quantized modules.

`quantize()` attaches a `TimestepState` to the U-Net and a forward pre-hook that reads the `timestep`
argument, so a pipeline needs no change; `set_timestep(model, t)` sets it by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from diffusia.errors import DiffusiaError

_STATE_ATTR = "_diffusia_timestep_state"
_HOOK_ATTR = "_diffusia_timestep_hook"


class TimestepState:
    """Maps a timestep in [0, num_train_timesteps) to one of `groups` equal-width groups."""

    def __init__(self, groups: int = 1, num_train_timesteps: int = 1000) -> None:
        self.groups = int(groups)
        self.num_train_timesteps = int(num_train_timesteps)
        self.group = 0

    def group_of(self, t: Any) -> int:
        if isinstance(t, torch.Tensor):
            if t.numel() == 0:
                raise DiffusiaError("timestep tensor is empty")
            t = t.reshape(-1)[0].item()  # one timestep per call in diffusion sampling
        g = int(float(t) * self.groups // self.num_train_timesteps)
        return min(max(g, 0), self.groups - 1)

    def set(self, t: Any) -> int:
        self.group = self.group_of(t)
        return self.group


def get_state(model: nn.Module) -> TimestepState | None:
    return getattr(model, _STATE_ATTR, None)


def attach(model: nn.Module, state: TimestepState) -> None:
    """Attach `state` to `model` and a pre-hook that sets it from the forward's `timestep` argument."""
    setattr(model, _STATE_ATTR, state)
    old = getattr(model, _HOOK_ATTR, None)
    if old is not None:
        old.remove()

    def _hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        if t is not None:
            state.set(t)

    setattr(model, _HOOK_ATTR, model.register_forward_pre_hook(_hook, with_kwargs=True))


def detach(model: nn.Module) -> None:
    """Remove what `attach` added (the state and its pre-hook)."""
    hook = getattr(model, _HOOK_ATTR, None)
    if hook is not None:
        hook.remove()
    for attr in (_HOOK_ATTR, _STATE_ATTR):
        if hasattr(model, attr):
            delattr(model, attr)


def set_timestep(model: nn.Module, t: Any) -> int:
    """Select the activation-range group for timestep `t` on a quantized model; returns the group index."""
    state = get_state(model)
    if state is None:
        raise DiffusiaError("model has no quantized layers: call diffusia.quant.api.quantize(model, recipe) first")
    return state.set(t)


@contextlib.contextmanager
def timestep(model: nn.Module, t: Any) -> Iterator[int]:
    """Context manager form of set_timestep; restores the previous group on exit."""
    state = get_state(model)
    prev = state.group if state is not None else 0
    try:
        yield set_timestep(model, t)
    finally:
        if state is not None:
            state.group = prev
