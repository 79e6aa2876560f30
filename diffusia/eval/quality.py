"""Quality of each variant against the FP32 images of the same prompt and seed: per-image SSIM, LPIPS, PSNR,
aggregated overall and per prompt category, and Frechet distances (to FP32, and to real images if given)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from diffusia.eval.metrics import frechet_distance, lpips_distance, psnr, ssim
from diffusia.eval.metrics.lpips import MIN_SIZE as LPIPS_MIN_SIZE

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; capped so that means stay finite
METRICS = ("ssim", "lpips", "psnr")


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) [0,1] numpy -> (N,3,H,W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2)))


def pairwise(reference: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray | None]:
    """Per-image SSIM, LPIPS (None below 31 px) and PSNR (capped at 100 dB) of `images` vs `reference`."""
    if reference.shape != images.shape:
        raise ValueError(f"image sets differ in shape: {reference.shape} vs {images.shape}")
    x, y = to_tensor(reference), to_tensor(images)
    out: dict[str, np.ndarray | None] = {
        "ssim": ssim(x, y).numpy(),
        "psnr": psnr(x, y, cap_db=PSNR_CAP_DB).numpy(),
        "lpips": None,
    }
    if min(x.shape[-2:]) >= LPIPS_MIN_SIZE:
        out["lpips"] = lpips_distance(x, y).double().numpy()
    return out


def _summary(values: np.ndarray) -> dict[str, float | int]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def aggregate(per_image: dict[str, np.ndarray | None], categories: list[str]) -> dict[str, Any]:
    """Mean/std/n of each metric overall and per category (categories in first-seen order)."""
    overall = {m: _summary(v) for m, v in per_image.items() if v is not None}
    cats = np.asarray(categories)
    per_category: dict[str, dict[str, Any]] = {}
    for cat in dict.fromkeys(categories):
        mask = cats == cat
        per_category[cat] = {m: _summary(np.asarray(v)[mask]) for m, v in per_image.items() if v is not None}
    return {"overall": overall, "per_category": per_category}


class FeatureCache:
    """Frechet features of named image sets, extracted once."""

    def __init__(self, extractor: Callable[[torch.Tensor], np.ndarray]):
        self.extractor = extractor
        self._feats: dict[str, np.ndarray] = {}

    def get(self, key: str, images: np.ndarray) -> np.ndarray:
        if key not in self._feats:
            self._feats[key] = self.extractor(to_tensor(images))
        return self._feats[key]


def evaluate_quality(
    images: dict[str, np.ndarray],
    categories: list[str],
    reference: str = "fp32",
    real: np.ndarray | None = None,
    feature_net: str | tuple[str, Callable[[torch.Tensor], np.ndarray]] | None = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quality of every image set vs `images[reference]`; Frechet distances when `feature_net` is not None
    (a `get_feature_extractor` preference, or a (name, images -> features) pair).

    Returns {"fd_name", "variants": {name: {"overall", "per_category", "fd_vs_reference", "fd_vs_real"}}, "notes"}.
    """
    ref = images[reference]
    notes: list[str] = []
    if min(ref.shape[1:3]) < LPIPS_MIN_SIZE:
        notes.append(
            f"LPIPS not computed: images are {ref.shape[1]}x{ref.shape[2]}, LPIPS-alex needs >= "
            f"{LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE}."
        )
    fd_name, cache = None, None
    if feature_net is not None and len(ref) >= 2:
        from diffusia.eval.metrics import get_feature_extractor

        fd_name, extractor = get_feature_extractor(feature_net) if isinstance(feature_net, str) else feature_net
        cache = FeatureCache(extractor)
    elif feature_net is not None:
        notes.append("Frechet distances not computed: they need at least 2 images per set.")
    out: dict[str, Any] = {
        "reference": reference,
        "fd_name": fd_name,
        "variants": {},
        "notes": notes,
        "psnr_cap_db": PSNR_CAP_DB,
        "images": int(len(ref)),
    }
    for name, imgs in images.items():
        if progress:
            progress(name)
        row = aggregate(pairwise(ref, imgs), categories)
        if cache is not None:
            row["fd_vs_reference"] = frechet_distance(cache.get(reference, ref), cache.get(name, imgs))
            if real is not None:
                row["fd_vs_real"] = frechet_distance(cache.get("__real__", real), cache.get(name, imgs))
        out["variants"][name] = row
    if cache is not None and real is not None:
        out["real_images"] = int(len(real))
    return out
