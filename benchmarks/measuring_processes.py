"""What `eval` measures in a child of `diffusia.eval.zygote` against a fresh `python -m diffusia.eval.worker`: the
same variant's baseline, peak memory and latency both ways, and the seconds each measurement takes.

    python benchmarks/measuring_processes.py                 # tiny, FP32 and W8A8, 5 rounds, ~4 min
    python benchmarks/measuring_processes.py --rounds 3 --steps 4

Each round measures every variant both ways, the way that goes first alternating between rounds; a measurement is
`diffusia.eval.memory.run_isolated` on a task as `eval` writes it (load, `--runs` timed generations of `--steps`
steps after a warm-up, peak RSS growth over the post-import baseline). Writes
benchmarks/results/<class>/measuring_processes_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402

WAYS = ("zygote", "fresh")
FIELDS = ("baseline_mb", "peak_mb", "peak_load_mb", "latency_s", "wall_s")


def measure(task: dict[str, Any], way: str, work: Path) -> dict[str, float]:
    from diffusia.eval import zygote
    from diffusia.eval.memory import run_isolated

    t0 = time.perf_counter()
    with mock.patch.object(zygote, "run_worker", zygote.run_fresh) if way == "fresh" else contextlib.nullcontext():
        res = run_isolated(task, workdir=work)
    wall = time.perf_counter() - t0
    m = res["memory"]
    return {
        "baseline_mb": m["baseline_mb"],
        "peak_mb": m["peak_mb"],
        "peak_load_mb": m["peak_load_mb"],
        "latency_s": res["latency"]["end_to_end"]["median"],
        "wall_s": wall,
    }


def variants(model: str, work: Path, calib_size: int) -> dict[str, Path]:
    from diffusia import load_pipeline
    from diffusia.config import get_preset
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline

    pipe = load_pipeline(model, progress=False)
    pipe.save_pretrained(work / "fp32", safe_serialization=True)
    quantize_pipeline(pipe, get_preset("w8a8"), load_prompts("calibration", model), calib_size=calib_size, steps=8)
    save_quantized_pipeline(pipe, work / "w8a8", base_model=model)
    return {"fp32": work / "fp32", "w8a8": work / "w8a8"}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# Measuring processes: a zygote's child against a fresh process ({res['model']})",
        "",
        f"{res['rounds']} rounds, each variant measured both ways per round (the first way alternating); "
        f"{res['runs']} timed generation(s) of {res['steps']} steps per measurement, {res['threads']} thread(s). "
        f"Machine: {res['cpu']} (class `{res['class']}`), {res['date']}. Median (min-max) over the rounds.",
        "",
        "| variant | way | baseline MB | peak MB | peak after load MB | s/image | s per measurement |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ways in res["variants"].items():
        for way in WAYS:
            cells = [
                f"{s['median']:,.{d}f} ({s['min']:,.{d}f}-{s['max']:,.{d}f})"
                for s, d in ((ways[way][f], 1 if f.endswith("mb") else 3) for f in FIELDS)
            ]
            lines.append(f"| {name} | {way} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-size", type=int, default=4)
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    from diffusia.eval.images import Job

    with tempfile.TemporaryDirectory(prefix="diffusia-measuring-") as tmp:
        work = Path(tmp)
        folders = variants(args.model, work, args.calib_size)
        raw: dict[str, dict[str, list[dict[str, float]]]] = {v: {w: [] for w in WAYS} for v in folders}
        for r in range(args.rounds):
            for name, folder in folders.items():
                task = {
                    "name": name,
                    "folder": str(folder),
                    "device": "cpu",
                    "steps": args.steps,
                    "guidance": 7.5,
                    "seed": 42,
                    "threads": args.threads,
                    "runs": args.runs,
                    "warmup": 1,
                    "jobs": [Job(0, "a red bag", "bags", 42).to_dict()],
                    "images_dir": None,
                }
                for way in WAYS if r % 2 == 0 else WAYS[::-1]:
                    raw[name][way].append(measure(task, way, work / "tasks"))
                    print(name, way, raw[name][way][-1], flush=True)
    res = {
        **result_header(model=args.model),
        **{k: getattr(args, k) for k in ("rounds", "runs", "steps", "threads")},
        "raw": raw,
        "variants": {
            name: {way: {f: summary([m[f] for m in ms]) for f in FIELDS} for way, ms in ways.items()}
            for name, ways in raw.items()
        },
    }
    write_results(args.out / f"measuring_processes_{args.model}", res, to_markdown(res))


if __name__ == "__main__":
    main()
