"""diffusia's PyTorch path, measured: what channels-last and SDPA attention buy on its INT8 U-Net, and where a step
spends its time (oneDNN INT8 calls, activation quantization, attention, norms, kept float layers, layout copies,
Python between ops), so the gap to OpenVINO's compiled graph has numbers.

    python benchmarks/torch_path.py                     # sd15-arch, 32x32 latent, batch 2, ~10 min
    python benchmarks/torch_path.py --model tiny
Writes benchmarks/results/<class>/torch_path_<model>.{json,md}.

Protocol. One process: the U-Net of `backends.py` (same seeded weights, timed input and 4 calibration inputs),
quantized with `--preset` (MSE calibrator) and frozen once. The variants change only the input's memory format
(and the kept float convolutions' weights) or the attention processor of the same U-Net; they are timed
interleaved, one call of each per round for `--rounds` rounds after a warm-up round, median and interquartile
range reported. Then one call per variant under torch.profiler: self time per operator, summed by category; what
the operators do not account for is Python and module dispatch between them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_class, results_dir, write_results  # noqa: E402

# operator name fragment -> category (first match wins)
CATEGORIES = [
    (("qconv", "qlinear"), "INT8 conv/linear (oneDNN)"),
    (("quantize_per_tensor", "dequantize", "clamp_", "set_"), "activation quantization"),
    (("scaled_dot_product", "flash_attention", "softmax", "bmm", "baddbmm"), "attention"),
    (("group_norm", "layer_norm"), "norms"),
    (("mkldnn_convolution", "convolution", "addmm", "::mm", "linear"), "float conv/linear (kept layers)"),
    (("contiguous", "copy_", "clone", "to_dense", "permute", "reshape", "view", "transpose"), "layout and copies"),
]
OTHER = "elementwise and other ops"


def category(op: str) -> str:
    return next((name for keys, name in CATEGORIES if any(k in op for k in keys)), OTHER)


def build(model: str, preset: str, work: Path):
    from backends import load_unet, make_inputs

    from diffusia.config import get_preset
    from diffusia.quant import api

    make_inputs(model, 32 if model == "sd15-arch" else 16, 4, work)
    data = torch.load(work / "inputs.pt")
    unet = load_unet(model, work)
    api.quantize(unet, get_preset(preset).replace(calibrator="mse"))
    with torch.no_grad(), api.calibrate(unet):
        for x in data["calib"]:
            unet(*x)
    api.freeze(unet)
    return unet, data["timed"]


def channels_last(unet, on: bool) -> None:
    """The kept float convolutions' weights in channels-last (or back); diffusia's INT8 convolutions follow
    their input's layout by themselves."""
    fmt = torch.channels_last if on else torch.contiguous_format
    for m in unet.modules():
        if type(m) is torch.nn.Conv2d:
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)


def variants(unet, timed):
    """name -> (set-up, input) of each variant of the same frozen U-Net."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    sample, t, text = timed
    sample_cl = sample.contiguous(memory_format=torch.channels_last)

    def setup(cl: bool, sdpa: bool):
        def apply() -> None:
            channels_last(unet, cl)
            unet.set_attn_processor(AttnProcessor2_0() if sdpa else AttnProcessor())

        return apply

    return {
        "as shipped (NCHW, SDPA attention)": (setup(False, True), (sample, t, text)),
        "channels-last input and float convs": (setup(True, True), (sample_cl, t, text)),
        "classic attention (no SDPA)": (setup(False, False), (sample, t, text)),
    }


def time_interleaved(unet, cases: dict, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        for r in range(rounds + 1):
            for name, (apply, x) in cases.items():
                apply()
                t0 = time.perf_counter()
                unet(*x)
                if r:  # round 0 warms every variant up
                    times[name].append(time.perf_counter() - t0)
    return times


def profile(unet, apply, x) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    apply()
    with torch.no_grad():
        unet(*x)
        for _ in range(2):  # the first profiled call pays the profiler's own start-up: keep the second
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                unet(*x)
                wall = time.perf_counter() - t0
    by_cat: dict[str, float] = {}
    for e in prof.key_averages():
        by_cat[category(e.key)] = by_cat.get(category(e.key), 0.0) + e.self_cpu_time_total / 1e6
    ops = sum(by_cat.values())
    by_cat["Python and dispatch between ops"] = max(wall - ops, 0.0)
    return {"wall_s": wall, "seconds": by_cat}


def iqr(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15-arch", choices=("sd15-arch", "tiny"))
    ap.add_argument("--preset", default="w8a8")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    import os

    from diffusia.quant import cpu

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="diffusia-torchpath-") as tmp:
        unet, timed = build(args.model, args.preset, Path(tmp))
    cases = variants(unet, timed)
    times = time_interleaved(unet, cases, args.rounds)
    profiles = {name: profile(unet, apply, x) for name, (apply, x) in cases.items()}
    base = statistics.median(times[next(iter(cases))])
    rows = []
    for name, ts in times.items():
        lo, hi = iqr(ts)
        med = statistics.median(ts)
        rows.append({"variant": name, "median_s": med, "iqr_s": [lo, hi], "vs_shipped": med / base, "runs_s": ts})
    res = {
        "model": args.model,
        "preset": f"{args.preset} (MSE calibrator)",
        "rows": rows,
        "profiles": profiles,
        "cpu": cpu.cpu_model(),
        "class": machine_class(),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg()[0],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    latent = 32 if args.model == "sd15-arch" else 16
    lines = [
        f"# diffusia's PyTorch path: {args.model}, {latent}x{latent} latent, batch 2, {res['preset']}",
        "",
        f"{res['cpu']} (class `{res['class']}`), {args.threads} threads, torch {torch.__version__}, load average "
        f"{load_start:.2f} at start, {res['load_avg_end']:.2f} at end; {res['date']}. Variants of the same frozen "
        f"U-Net timed interleaved, {args.rounds} rounds after a warm-up round.",
        "",
        "| variant | step ms (median) | IQR ms | vs as shipped |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['median_s'] * 1e3:,.0f} | {r['iqr_s'][0] * 1e3:,.0f}-{r['iqr_s'][1] * 1e3:,.0f} | "
        f"{r['vs_shipped']:.2f} |"
        for r in rows
    ]
    cats = [name for _, name in CATEGORIES] + [OTHER, "Python and dispatch between ops"]
    names = list(profiles)
    lines += [
        "",
        "Where one profiled step spends its time (operator self time, ms; the profiler adds a little to each op):",
        "",
        "| category | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(f"{profiles[n]['seconds'].get(c, 0) * 1e3:,.0f}" for n in names) + " |")
    lines.append("| **profiled step** | " + " | ".join(f"{profiles[n]['wall_s'] * 1e3:,.0f}" for n in names) + " |")
    stem = args.out / f"torch_path_{args.model}"
    write_results(stem, res, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
