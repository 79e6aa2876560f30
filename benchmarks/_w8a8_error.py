"""What the error-only W8A8 experiments share (`bias_correction.py`, `smooth_quant.py`): `backends.py`'s U-Net,
timed input and 4 calibration inputs, and the rel-L2 against FP32 of a W8A8-MSE U-Net frozen to diffusia's kernels
after an experiment's step."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch


def setup(model: str, latent: int):
    """(float U-Net, timed input, calibration inputs, FP32 output on the timed input)."""
    from backends import load_unet, make_inputs

    work = Path(tempfile.mkdtemp(prefix="diffusia-w8a8-error-"))
    make_inputs(model, latent, 4, work)
    data = torch.load(work / "inputs.pt")
    base = load_unet(model, work)
    with torch.no_grad():
        reference = base(*data["timed"]).sample
    return base, data["timed"], data["calib"], reference


def frozen_error(base, recipe, calib, timed, reference, before=None, after_calibration=None) -> float:
    """rel-L2 vs FP32 of a copy of `base` W8A8-quantized with `recipe`, calibrated on `calib` and frozen;
    `before(unet)` runs on the float copy first, `after_calibration(unet)` between calibration and freezing."""
    from backends import rel_l2

    from diffusia.quant import api

    unet = copy.deepcopy(base)
    if before is not None:
        before(unet)
    api.quantize(unet, recipe)
    with torch.no_grad(), api.calibrate(unet):
        for x in calib:
            unet(*x)
    if after_calibration is not None:
        after_calibration(unet)
    api.freeze(unet)
    with torch.no_grad():
        return rel_l2(unet(*timed).sample, reference)
