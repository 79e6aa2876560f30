"""What OpenVINO's compiled-model cache (`CACHE_DIR`) would save a diffusia runtime folder at load time: for one
exported U-Net graph, fresh processes that read it, compile it for the U-Net's own sample size (batch 2, the
runtime's settings: latency hint, f32 float layers, no dynamic quantization) and run it: without a cache, then twice
with a cache of each `CACHE_MODE` (the first load writes the cache, the second reads it). Per load: seconds to
read, compile and run the first call, the median of 3 more calls, and memory as `runtime_exports.py` measures it
(peak RSS growth, anonymous memory held, file pages mapped); per cache, its MB on disk.

    python benchmarks/openvino_cache.py [--model tiny|sd15-arch] [--preset w8a8] [--out DIR]

Writes benchmarks/results/<class>/openvino_cache_<model>_<preset>.{json,md}. One run; timings of one load each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402

# (row, cache mode or None for no cache, the cache's folder name)
LOADS = (
    ("no cache", None, None),
    ("OPTIMIZE_SPEED cache, first load (writes it)", "OPTIMIZE_SPEED", "speed"),
    ("OPTIMIZE_SPEED cache, second load (reads it)", "OPTIMIZE_SPEED", "speed"),
    ("OPTIMIZE_SIZE cache, first load (writes it)", "OPTIMIZE_SIZE", "size"),
    ("OPTIMIZE_SIZE cache, second load (reads it)", "OPTIMIZE_SIZE", "size"),
)


def _load_and_run(graph: str, feeds_path: str, cache_dir: str, mode: str) -> None:
    import numpy as np
    import openvino as ov
    from runtime_exports import memory_growth

    from diffusia.export.openvino import compile_model

    feeds = dict(np.load(feeds_path))
    memory = memory_growth()
    cache = {"CACHE_DIR": cache_dir, "CACHE_MODE": mode} if mode != "-" else {}
    t0 = time.perf_counter()
    model = ov.Core().read_model(graph)
    model.reshape({name: value.shape for name, value in feeds.items()})
    t1 = time.perf_counter()
    compiled = compile_model(model, "f32", 2, properties=cache)  # the runtime's settings, and the cache
    del model
    t2 = time.perf_counter()
    compiled(feeds)
    t3 = time.perf_counter()
    calls = []
    for _ in range(3):
        s = time.perf_counter()
        compiled(feeds)
        calls.append(time.perf_counter() - s)
    result = {"read_s": t1 - t0, "compile_s": t2 - t1, "first_call_s": t3 - t2, "call_s": sorted(calls)[1]}
    print(json.dumps({**result, **memory()}))


def load(graph: Path, feeds: Path, cache_dir: Path, mode: str | None) -> dict:
    """One load of `graph` in a fresh process (`mode` None: no cache), with the MB of `cache_dir` after it."""
    cmd = [sys.executable, __file__, "--load", str(graph), str(feeds), str(cache_dir), mode or "-"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "cache_mb": _folder_mb(cache_dir)}


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20 if folder.is_dir() else 0.0


def measure(model: str, preset: str) -> dict:
    import numpy as np

    from diffusia import load_pipeline
    from diffusia.config import get_preset
    from diffusia.export.onnx import example_inputs, graph_feeds
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.runtime.artifact import export_runtime

    with tempfile.TemporaryDirectory(prefix="diffusia-ov-cache-") as tmp:
        feeds, folder = Path(tmp) / "feeds.npz", Path(tmp) / "openvino"
        pipe = load_pipeline(model, progress=False)
        np.savez(feeds, **graph_feeds(example_inputs(pipe.unet, batch=2)))
        calibration = load_prompts("calibration", model)
        quantize_pipeline(pipe, get_preset(preset), calibration, calib_size=2, steps=2, progress=False, validate=False)
        graph = folder / export_runtime(pipe.unet, "openvino", folder, check=False)["files"][0]
        del pipe
        rows = {name: load(graph, feeds, Path(tmp) / f"cache-{cache}", mode) for name, mode, cache in LOADS}
        graph_mb = (graph.stat().st_size + graph.with_suffix(".bin").stat().st_size) / 2**20
    return {"graph_mb": graph_mb, "rows": rows}


def to_markdown(res: dict) -> str:
    lines = [
        f"# OpenVINO's compiled-model cache on diffusia's `{res['preset']}` graph of `{res['model']}`",
        "",
        f"{res['cpu']} (class `{res['class']}`), commit {res['commit']}, {res['date']}. Graph {res['graph_mb']:.0f} MB "
        "(.xml + .bin). Each row is a fresh process: read the graph, compile it for the U-Net's sample size at batch 2 "
        "(latency hint, 2 threads, f32 float layers), run it once, then 3 more calls (median); MB as in "
        "`runtime_exports.py` (peak RSS growth; anonymous memory held and file pages mapped after the calls).",
        "",
        "| load | read s | compile s | first call s | call s | peak MB | held MB | mapped MB | cache MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        lines.append(
            f"| {name} | {r['read_s']:.2f} | {r['compile_s']:.2f} | {r['first_call_s']:.2f} | {r['call_s']:.2f} | "
            f"{r['peak_growth_mb']:,.0f} | {r['held_mb']:,.0f} | {r['mapped_mb']:,.0f} | {r['cache_mb']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--load"]:
        _load_and_run(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=("tiny", "sd15-arch"))
    ap.add_argument("--preset", default="w8a8")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {**result_header(model=args.model, preset=args.preset, commit=commit), **measure(args.model, args.preset)}
    write_results(args.out / f"openvino_cache_{args.model}_{args.preset}", res, to_markdown(res))


if __name__ == "__main__":
    main()
