"""Calibration cost of `diffusia quantize` with its defaults (100 prompts x 25 DPM-Solver steps, guidance 7.5):
prompts batched per pipeline call (the default, `--calib-batch 4`) against one prompt per call, in one run.

    python benchmarks/calibration_time.py                 # tiny, ~3 min on 2 cores
    python benchmarks/calibration_time.py --model sd15-arch --calib-size 4 --calib-steps 8 --calib-resolution 256
Each variant is a fresh `diffusia quantize` process; the calibration seconds come from the folder's diffusia.json,
the wall time includes loading, calibration, validation and saving. Writes
benchmarks/results/<class>/calibration_time_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_class, results_dir, write_results  # noqa: E402


def run(model: str, batch: int, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"batch{batch}"
    cmd = [
        sys.executable,
        "-m",
        "diffusia.cli",
        "quantize",
        "--model",
        model,
        "--recipe",
        "w8a8",
        "--out",
        str(out),
        "--calib-size",
        str(args.calib_size),
        "--calib-steps",
        str(args.calib_steps),
        "--calib-batch",
        str(batch),
        *(["--calib-resolution", str(args.calib_resolution)] if args.calib_resolution else []),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    cal = json.loads((out / "diffusia.json").read_text())["calibration"]
    return {
        "batch": batch,
        "wall_s": round(wall, 1),
        "calibration_s": round(cal["seconds"], 1),
        "calibration_s_per_prompt": round(cal["seconds"] / cal["size"], 2),
        "unet_calls": cal["unet_calls"],
        "load_avg_end": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--calib-size", type=int, default=100)
    ap.add_argument("--calib-steps", type=int, default=25)
    ap.add_argument("--calib-resolution", type=int, default=None, help="pixels, square (default: the model's)")
    ap.add_argument("--batches", default="4,1")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    from diffusia.quant import cpu

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="diffusia-caltime-") as tmp:
        rows = [run(args.model, int(b), args, Path(tmp)) for b in args.batches.split(",")]
    res = {
        "model": args.model,
        "calib_size": args.calib_size,
        "calib_steps": args.calib_steps,
        "calib_resolution": args.calib_resolution,
        "rows": rows,
        "cpu": cpu.cpu_model(),
        "class": machine_class(),
        "load_avg_start": load_start,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    size = f"{args.calib_resolution}x{args.calib_resolution}" if args.calib_resolution else "the model's resolution"
    lines = [
        f"# Calibration cost: `diffusia quantize --model {args.model} --recipe w8a8`",
        "",
        f"{args.calib_size} prompts x {args.calib_steps} steps at {size}; {res['cpu']} (class `{res['class']}`), load "
        f"average {load_start:.2f} at start; {res['date']}. One run per row (a fresh process each).",
        "",
        "| prompts per call | wall s | calibration s | s per prompt | U-Net calls |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['batch']} | {r['wall_s']} | {r['calibration_s']} | {r['calibration_s_per_prompt']} | {r['unet_calls']} |"
        for r in rows
    ]
    stem = args.out / f"calibration_time_{args.model}{f'_{args.calib_resolution}' if args.calib_resolution else ''}"
    write_results(stem, res, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
