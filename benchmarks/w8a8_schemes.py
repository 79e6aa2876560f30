"""W8A8 output error of the whole SD v1.5 U-Net (random weights) per activation/weight range and calibrator.

diffusia's real path (default policy, quantize -> calibrate -> freeze, oneDNN kernels) on a 32x32 latent, batch 2:
calibrated on 5 seeded Gaussian inputs at timesteps 950..20, error = rel-L2 against FP32 on a sixth input.
Schemes: the default on CPUs without VNNI, each layer's own split of the int16 pair-sum budget between activation
and weight levels (`balanced`, chosen at calibration from the layer's weight and activation errors); 8-bit
activations with 7-bit weights everywhere; 7-bit activations with 8-bit weights; and 8-bit with 8-bit weights
(saturates on CPUs without VNNI). `channels_last` repeats one scheme with the U-Net in
channels-last memory layout: the same math in another float rounding order, a measure of how much this random
network amplifies tiny perturbations. Errors only: timings are in backends.py.

    python benchmarks/w8a8_schemes.py          # ~10 min on 2 cores
Writes benchmarks/results/w8a8_schemes.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from collections import Counter
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from diffusia.config import get_preset
from diffusia.fileio import write_json, write_text
from diffusia.models.architectures import SD15_UNET
from diffusia.quant import api, cpu
from diffusia.quant.modules import QModuleMixin

RESULTS = Path(__file__).resolve().parent / "results"
# name, recipe changes, weight_qmax override (None: the CPU's rule), channels_last
SCHEMES = [
    ("balanced per layer, percentile (default)", {}, None, False),
    ("balanced per layer, minmax", {"calibrator": "minmax"}, None, False),
    ("balanced per layer, mse", {"calibrator": "mse"}, None, False),
    ("a8w7 percentile", {"activations": "uint8"}, None, False),
    ("a8w7 minmax", {"activations": "uint8", "calibrator": "minmax"}, None, False),
    ("a8w7 mse", {"activations": "uint8", "calibrator": "mse"}, None, False),
    ("a7w8 percentile", {"activations": "uint7"}, None, False),
    ("a7w8 minmax", {"activations": "uint7", "calibrator": "minmax"}, None, False),
    ("a8w8 minmax (saturating without VNNI)", {"activations": "uint8", "calibrator": "minmax"}, 127, False),
    ("a8w7 minmax, channels_last", {"activations": "uint8", "calibrator": "minmax"}, None, True),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def run(latent: int) -> list[dict]:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(2, 4, latent, latent, generator=g), t, torch.randn(2, 77, 768, generator=g))
             for t in (950, 700, 450, 200, 20)]
    test = (torch.randn(2, 4, latent, latent, generator=g), 600, torch.randn(2, 77, 768, generator=g))
    with torch.no_grad():
        ref = unet(*test).sample
    rows, outputs = [], {}
    for name, changes, wqmax, channels_last in SCHEMES:
        q = copy.deepcopy(unet)
        api.quantize(q, dataclasses.replace(get_preset("w8a8"), **changes))
        if wqmax is not None:
            for m in q.modules():
                if isinstance(m, QModuleMixin) and m.precision == "w8a8":
                    m.settings = dataclasses.replace(m.settings, weight_qmax=wqmax)
        with api.calibrate(q):
            for c in calib:
                q(*c)
        api.freeze(q)
        if channels_last:
            q = q.to(memory_format=torch.channels_last)
        with torch.no_grad():
            y = q(*test).sample
        outputs[name] = y
        splits = Counter(f"0..{m.settings.act_qmax} / +-{m.settings.weight_qmax}" for m in q.modules()
                         if isinstance(m, QModuleMixin) and m.precision == "w8a8")
        row = {"scheme": name, "splits": dict(splits.most_common()), "rel_l2_vs_fp32": rel(y, ref)}
        if channels_last:
            row["rel_l2_vs_nchw_same_scheme"] = rel(y, outputs["a8w7 minmax"])
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "w8a8_schemes"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.latent)
    res = {"model": "sd15-arch (random weights)", "latent": args.latent, "batch": 2, "cpu": cpu.cpu_model(),
           "saturation_risk": cpu.saturation_risk(), "torch": torch.__version__, "rows": rows}
    write_json(args.out + ".json", res)
    lines = [f"# W8A8 schemes on the SD v1.5 U-Net (random weights), latent {args.latent}x{args.latent}, batch 2", "",
             f"{res['cpu']}, saturation risk (no VNNI): {res['saturation_risk']}, torch {res['torch']}. "
             "Calibrated on 5 Gaussian inputs, error on a sixth. Errors only.", "",
             "| scheme | activation levels / weight max (layers) | rel-L2 vs FP32 | vs the NCHW run |", "|---|---|---|---|"]
    for r in rows:
        other = r.get("rel_l2_vs_nchw_same_scheme")
        splits = ", ".join(f"{k} ({n})" if len(r["splits"]) > 1 else k for k, n in r["splits"].items())
        lines.append(f"| {r['scheme']} | {splits} | {r['rel_l2_vs_fp32']:.2%} | "
                     f"{'-' if other is None else f'{other:.2%}'} |")
    write_text(args.out + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
