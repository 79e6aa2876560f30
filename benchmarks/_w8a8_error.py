"""What the error-only W8A8 experiments share (`bias_correction.py`, `smooth_quant.py`): their options,
`backends.py`'s U-Net, timed input and 4 calibration inputs, the rel-L2 against FP32 of a W8A8-MSE U-Net frozen to
diffusia's kernels after an experiment's step, and the report's header."""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from _results import result_header, results_dir, write_results


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every experiment takes: the model and W8A8-MSE's activations and attention."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15-arch", choices=("sd15-arch", "tiny"))
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--activations", default="balanced")
    ap.add_argument("--attention", default="int8")
    ap.add_argument("--out", type=Path, default=results_dir())
    return ap


def setup(args):
    """(W8A8-MSE recipe, float U-Net, timed input, calibration inputs, FP32 output on the timed input)."""
    from backends import load_unet, make_inputs

    from diffusia.config import get_preset

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="diffusia-w8a8-error-"))
    make_inputs(args.model, latent_of(args), 4, work)
    data = torch.load(work / "inputs.pt")
    base = load_unet(args.model, work)
    with torch.no_grad():
        reference = base(*data["timed"]).sample
    recipe = get_preset("w8a8").replace(calibrator="mse", activations=args.activations, attention=args.attention)
    return recipe, base, data["timed"], data["calib"], reference


def latent_of(args) -> int:
    return 16 if args.model == "tiny" else args.latent


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


def write(args, stem: str, title: str, rows: dict, table: list[str], note: str = "") -> None:
    """OUT/<stem>_<model>.{json,md}: `rows`, and `table` (Markdown rows) under the run's header."""
    settings = f"activations {args.activations}, attention {args.attention}"
    latent = latent_of(args)
    res = {**result_header(model=args.model, latent=latent, recipe=f"w8a8, mse, {settings}"), "rows": rows}
    lines = [
        f"# {title}: {args.model}, latent {latent}x{latent}, batch 2",
        "",
        f"{res['cpu']} (class `{res['class']}`), {res['date']}. W8A8-MSE ({settings}) calibrated on `backends.py`'s "
        "4 calibration inputs, frozen to diffusia's kernels; rel-L2 against FP32 on its timed input." + note,
        "",
        *table,
    ]
    write_results(args.out / f"{stem}_{args.model}", res, "\n".join(lines) + "\n")
