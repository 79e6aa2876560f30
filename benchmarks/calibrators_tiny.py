"""W8A8 one-step error of the `tiny` U-Net per activation calibrator (real INT8 kernels).

Records every U-Net call of DPM-Solver (25 steps, guidance 7.5) on --calib calibration prompts, calibrates a fresh
W8A8 copy of the U-Net on all of them with each calibrator setting, freezes it onto the real kernels, and reports
the relative L2 error of its noise prediction against FP32 on every --stride-th recorded call (both guidance
branches, all timesteps). This is the error PTQ starts from and that QAT's learnable step sizes (LSQ) work on.

    python benchmarks/calibrators_tiny.py      # ~4 min on 2 idle cores
Writes benchmarks/results/calibrators_tiny.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch

from diffusia import load_pipeline
from diffusia.config import get_preset
from diffusia.fileio import write_json, write_text
from diffusia.prompts import load_prompts, take
from diffusia.qat.data import DistillData
from diffusia.quant import api

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {  # label -> recipe changes from the w8a8 preset
    "percentile 99.9 (default)": {},
    "percentile 99.99": {"percentile": 99.99},
    "minmax": {"calibrator": "minmax"},
    "mse": {"calibrator": "mse"},
    "percentile 99.9, 4 timestep groups": {"timestep_groups": 4},
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=8, help="calibration prompts")
    ap.add_argument("--stride", type=int, default=7, help="evaluate every N-th recorded call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "calibrators_tiny"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    pipe = load_pipeline("tiny", progress=False)
    data, calls = DistillData.record(pipe, take(load_prompts("calibration", model="tiny"), args.calib), 25, 7.5,
                                     progress=False)
    idx = torch.arange(0, len(data), args.stride)
    x, t = data.samples[idx], data.timesteps[idx]
    ehs, target = data.ehs_table[data.ehs_index[idx]], data.targets[idx]

    def rel_l2(unet) -> float:
        with torch.no_grad():
            y = torch.cat([unet(x[i:i + 32], t[i:i + 32], encoder_hidden_states=ehs[i:i + 32]).sample
                           for i in range(0, len(x), 32)])
        return float((y - target).norm() / target.norm())

    rows = {}
    for label, changes in SETTINGS.items():
        unet = copy.deepcopy(pipe.unet)
        api.quantize(unet, get_preset("w8a8").replace(**changes))
        with api.calibrate(unet):
            for sample, step, e in calls:
                unet(sample, step, encoder_hidden_states=e)
        api.freeze(unet)
        rows[label] = {"changes": changes, "rel_l2": rel_l2(unet)}
        print(f"{label}: {100 * rows[label]['rel_l2']:.2f} %", flush=True)
    result = {"model": "tiny", "calib_prompts": args.calib, "calls_recorded": len(calls),
              "samples_evaluated": len(idx), "rows": rows, "seconds": round(time.time() - t0, 1),
              "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"}
    lines = ["# W8A8 one-step error on `tiny` per calibrator (real INT8 kernels)", "",
             f"Calibrated on every U-Net call of {args.calib} calibration prompts ({len(calls)} calls, DPM-Solver 25 "
             f"steps, guidance 7.5); relative L2 of the noise prediction against FP32 on {len(idx)} of the recorded "
             "inputs (all timesteps, both guidance branches).", "",
             "| calibrator | rel-L2 vs FP32 |", "|---|---|"]
    lines += [f"| {k} | {100 * v['rel_l2']:.2f} % |" for k, v in rows.items()]
    lines += ["", f"Machine: {result['machine']}; {result['seconds']:.0f} s.", ""]
    write_json(Path(args.out).with_suffix(".json"), result)
    write_text(Path(args.out).with_suffix(".md"), "\n".join(lines))
    return result


if __name__ == "__main__":
    main()
