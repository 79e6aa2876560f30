"""Find where a model first produces NaN/Inf: a forward with a hook on every module, naming the first one (in
execution order) whose output is non-finite."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from diffusia.errors import DiffusiaError


class _NonFinite(Exception):
    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module = name, module


def _tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, Mapping):
        for o in obj.values():
            yield from _tensors(o)
    elif hasattr(obj, "to_tuple"):  # diffusers BaseOutput
        yield from _tensors(obj.to_tuple())


def _finite(obj: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _tensors(obj) if t.is_floating_point())


def check_finite(model: nn.Module, *inputs: Any, **kwargs: Any) -> Any:
    """Run a forward; raise DiffusiaError naming the first module (in execution order) whose output is
    non-finite. Returns the model output when everything is finite."""
    if not _finite((inputs, kwargs)):
        raise DiffusiaError("an input to the model is already non-finite (NaN/Inf)")

    def hook(name: str):
        def _h(module: nn.Module, args: Any, output: Any) -> None:
            if not _finite(output):
                raise _NonFinite(name, module)

        return _h

    handles = [m.register_forward_hook(hook(n or "<model>")) for n, m in model.named_modules()]
    try:
        with torch.no_grad():
            return model(*inputs, **kwargs)
    except _NonFinite as e:
        raise DiffusiaError(
            f"first non-finite output (NaN/Inf) from module {e.name!r} ({type(e.module).__name__})"
        ) from None
    finally:
        for h in handles:
            h.remove()
