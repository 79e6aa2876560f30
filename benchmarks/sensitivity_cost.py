"""Cost of `diffusia sensitivity` against how much its per-layer answers change with fewer evaluation inputs.

Every row is one `run_sensitivity` on the same model, recipe and calibration prompts (the CLI defaults: 8 prompts x
25 steps, w8a8, precisions w8a8,w8a8x2,w8,w4,fp16), without LPIPS images and layer timing, so its seconds are the
calibration pass plus the SIMULATED per-layer forwards. The rows differ only in the recorded U-Net inputs the SQNR
is measured on: `timesteps` (evenly spaced) x `samples` per timestep (evenly spread over prompts and guidance
branches; `all` = 2 x prompts). The first row is the reference; every other row is compared with it:
- Spearman rank correlation of the per-layer SQNR (only this layer quantized, at the recipe's precision), and the
  lowest one over the other simulated precisions;
- overlap of the ten most sensitive layers;
- mean and largest |dB| difference of the per-layer SQNRs over every simulated precision;
- the mixed-precision plan `search` picks under a budget (20 % of the FP32 U-Net): layers that get the reference
  plan's precision, and the plan's estimated SQNR judged on the reference run's per-layer SQNRs.

    python benchmarks/sensitivity_cost.py          # tiny: ~46 min on 2 cores (Zen 4)
Writes benchmarks/results/<class>/sensitivity_cost_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402

CONFIGS = "8x0,8x4,4x4,8x2,2x4"  # timesteps x samples per timestep (0: all); the first is the reference


def _additive_db(sens: dict, choices: dict[str, str]) -> float:
    """Estimated SQNR (dB) of a plan from `sens`' per-layer SQNRs (additive noise model, kept layers add none)."""
    rows = {r["name"]: r["sqnr_only_db_by_precision"] for r in sens["layers"]}
    noise = sum(10 ** (-rows[n][p] / 10) for n, p in choices.items() if p in rows[n])
    return -10 * math.log10(noise) if noise > 0 else float("inf")


def compare(ref: dict, sens: dict, budget_mb: float) -> dict:
    from scipy.stats import spearmanr

    from diffusia.analysis.search import search

    a = {r["name"]: r for r in ref["layers"]}
    b = {r["name"]: r for r in sens["layers"]}
    names = sorted(a)
    precisions = sorted(set(a[names[0]]["sqnr_only_db_by_precision"]))
    rho = {
        p: float(
            spearmanr(
                [a[n]["sqnr_only_db_by_precision"][p] for n in names],
                [b[n]["sqnr_only_db_by_precision"][p] for n in names],
            ).statistic
        )
        for p in precisions
    }
    diffs = [
        abs(a[n]["sqnr_only_db_by_precision"][p] - b[n]["sqnr_only_db_by_precision"][p])
        for n in names
        for p in precisions
    ]
    plan_ref, plan = search(ref, budget_mb=budget_mb), search(sens, budget_mb=budget_mb)
    same = sum(plan.choices[n] == plan_ref.choices[n] for n in plan_ref.choices)
    recipe_p = ref["layers"][0]["precision"]
    return dict(
        spearman=rho[recipe_p],
        spearman_min_other=min(v for p, v in rho.items() if p != recipe_p),
        top10_overlap=len({r["name"] for r in ref["layers"][:10]} & {r["name"] for r in sens["layers"][:10]}),
        mean_abs_db=sum(diffs) / len(diffs),
        max_abs_db=max(diffs),
        plan_same_layers=same,
        plan_layers=len(plan_ref.choices),
        plan_db_judged_by_reference=_additive_db(ref, plan.choices),
        reference_plan_db=_additive_db(ref, plan_ref.choices),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--calib-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--configs", default=CONFIGS, help="comma list of TIMESTEPSxSAMPLES (0 samples: all)")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    import torch

    from diffusia import load_pipeline
    from diffusia.analysis.sensitivity import DEFAULT_PRECISIONS, run_sensitivity
    from diffusia.config import get_preset
    from diffusia.prompts import load_prompts, take

    pipe = load_pipeline(args.model, progress=False)
    prompts = take(load_prompts("calibration", model=args.model), args.calib_size)
    load_start = os.getloadavg()[0]
    runs = []
    for cfg in args.configs.split(","):
        timesteps, samples = (int(x) for x in cfg.split("x"))
        torch.manual_seed(0)
        t0 = time.perf_counter()
        sens = run_sensitivity(
            pipe,
            get_preset("w8a8"),
            prompts,
            steps=args.steps,
            top=0,
            eval_timesteps=timesteps,
            eval_samples=samples or None,
            timing=False,
            progress=False,
        )
        runs.append((cfg, time.perf_counter() - t0, sens))
        print(f"{cfg}: {runs[-1][1]:.1f} s, {sens['calibration']['eval_samples']} samples", flush=True)
    ref = runs[0][2]
    budget_mb = round(0.2 * ref["unet"]["total_bytes"] / 2**20, 2)
    rows = []
    for cfg, seconds, sens in runs:
        cal = sens["calibration"]
        rows.append(
            dict(
                config=cfg,
                timesteps=len(cal["eval_timesteps"]),
                samples=cal["eval_samples"],
                seconds=round(seconds, 1),
                sqnr_all_db=sens["sqnr_all_db"],
                vs_reference=None if sens is ref else compare(ref, sens, budget_mb),
            )
        )
    res = result_header(
        model=args.model,
        calib_size=args.calib_size,
        steps=args.steps,
        precisions=list(DEFAULT_PRECISIONS),
        layers=len(ref["layers"]),
        budget_mb=budget_mb,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        load_avg_start=load_start,
        load_avg_end=os.getloadavg()[0],
        rows=rows,
    )
    lines = [
        f"# `diffusia sensitivity` cost against evaluation inputs ({args.model})",
        "",
        f"{res['cpu']} (class `{res['class']}`), {res['threads']} threads, torch {res['torch']}, {res['date']}; load "
        f"average {load_start:.2f} at the start, {res['load_avg_end']:.2f} at the end. One run per row, one process, "
        f"nothing else running. Recipe w8a8, {args.calib_size} calibration prompts x {args.steps} steps, "
        f"{res['layers']} layers x precisions {', '.join(DEFAULT_PRECISIONS)}; no LPIPS images, no layer timing. "
        f"SQNRs are SIMULATED (fake quantization). Plan: `search --budget-mb {budget_mb}` (20 % of the FP32 U-Net).",
        "",
        "| timesteps x samples | inputs | seconds | all-quantized dB | Spearman (w8a8) | min Spearman (others) | "
        "top-10 overlap | mean / max abs dB | plan: same layers | plan dB (by the reference) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["vs_reference"]
        per_t = int(r["config"].split("x")[1]) or "all"
        head = f"| {r['timesteps']} x {per_t} | {r['samples']} | {r['seconds']} | {r['sqnr_all_db']:.2f} |"
        if c is None:
            lines.append(head + " reference | | | | | |")
        else:
            lines.append(
                head + f" {c['spearman']:.3f} | {c['spearman_min_other']:.3f} | {c['top10_overlap']}/10 | "
                f"{c['mean_abs_db']:.2f} / {c['max_abs_db']:.2f} | {c['plan_same_layers']}/{c['plan_layers']} | "
                f"{c['plan_db_judged_by_reference']:.2f} (reference plan {c['reference_plan_db']:.2f}) |"
            )
    write_results(args.out / f"sensitivity_cost_{args.model}", res, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
