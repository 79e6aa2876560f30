"""What diffusia's runtime exports hold and cost: per preset and runtime (OpenVINO, ONNX Runtime), the bytes of the
U-Net graph's weights (.bin, or the .onnx with its data), the export check's relative L2 against diffusia's own
kernels (the figure `runtime.json` records) and the memory of a fresh process that loads the graph (OpenVINO:
compiled for the U-Net's own sample size) and runs it at batch 2 (once, or `--calls` times): its peak RSS growth,
and the anonymous memory it holds after the runs and the file pages it maps (weights are widened or kept narrow when
the runtime loads them). Nothing is timed.

    python benchmarks/runtime_exports.py [--model tiny|sd15-arch] [--presets w8,w4,fp16,w8a8] [--out DIR]
        [--arena kept,shrunk,off,unplanned,exact,exact-unplanned] [--calls N] [--attention per-head,whole]

`--arena`: how the ONNX Runtime sessions allocate (`diffusia.export.onnx.ARENA`; kept = ONNX Runtime's default,
diffusia's is `DEFAULT_ARENA`); one row each. `--calls`: runs of the loaded graph before its memory is read.
`--attention`: how the ONNX Runtime graphs trace float attention (per-head = diffusia's, `diffusia.export.head_slices`;
whole = as before it); one graph each.

Writes benchmarks/results/<class>/runtime_exports_<model>.{json,md}. Copied into a checkout of e827ca8 (before the
weight-only fixes) it gave the README's first "before" figures. Calibration: 2 prompts x 2 steps (the check
compares the graph with the same frozen U-Net, so the ranges only need to exist; sd15-arch has random weights).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402
from _whole_attention import attention_traced_whole  # noqa: E402

RUNTIMES = ("openvino", "onnxruntime")


def weight_bytes(folder: Path) -> int:
    """Bytes of the graph files that hold the weights: OpenVINO's .bin, ONNX's .onnx (and external data)."""
    return sum(
        p.stat().st_size for p in folder.iterdir() if p.suffix in (".bin", ".onnx", ".data") and "vae" not in p.name
    )


def loaded(graph: Path, feeds: Path, arena: str | None = None, calls: int = 1) -> dict:
    """Memory of a fresh process that loads `graph` (OpenVINO .xml: compiled for the shapes of `feeds`, .npz;
    .onnx: an ONNX Runtime session with that `arena`, default diffusia's) and runs it `calls` times, and
    OpenVINO's compiled FullyConnected nodes by weight precision."""
    out = subprocess.run(
        [sys.executable, __file__, "--load", str(graph), str(feeds), arena or "", str(calls)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_growth():
    """From now (the peak reset): a function giving this process's peak RSS growth, anonymous memory held and
    file pages mapped since, in MB."""
    from diffusia.eval.memory import reset_peak_rss, status_mb

    reset_peak_rss()
    base, base_anon, base_file = status_mb("VmRSS"), status_mb("RssAnon"), status_mb("RssFile")

    def since() -> dict:
        return {
            "peak_growth_mb": status_mb("VmHWM") - base,
            "held_mb": status_mb("RssAnon") - base_anon,
            "mapped_mb": status_mb("RssFile") - base_file,
        }

    return since


def _load_and_run(graph: str, feeds_path: str, arena: str, calls: str) -> None:
    import numpy as np
    import openvino as ov

    from diffusia.export.onnx import DEFAULT_ARENA, onnxruntime_run_options, onnxruntime_session
    from diffusia.export.openvino import compile_model

    feeds = dict(np.load(feeds_path))
    memory = memory_growth()
    linears = None
    if graph.endswith(".onnx"):
        arena = arena or DEFAULT_ARENA
        session = onnxruntime_session(graph, 2, arena)  # held while measured
        options = onnxruntime_run_options(arena)
        for _ in range(int(calls)):
            session.run(None, feeds, options)
    else:
        model = ov.Core().read_model(graph)
        model.reshape({name: value.shape for name, value in feeds.items()})
        compiled = compile_model(model, "f32", 2)
        del model  # what a deployed U-Net keeps: the compiled model
        for _ in range(int(calls)):
            compiled(feeds)
        linears = collections.Counter(
            op.get_rt_info()["runtimePrecision"].astype(str)
            for op in compiled.get_runtime_model().get_ops()
            if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"
        )
        linears = dict(linears.most_common())
    print(json.dumps({**memory(), "fully_connected": linears}))


ATTENTION = ("per-head", "whole")


def exported(unet, runtime: str, folder: Path, attention: str) -> dict:
    """`export_runtime`'s manifest; with `attention` whole, ONNX Runtime's float attention is traced whole."""
    from diffusia.runtime.artifact import export_runtime

    with attention_traced_whole() if attention == "whole" else contextlib.nullcontext():
        return export_runtime(unet, runtime, folder)


def measure(
    model: str, presets: list[str], runtimes: list[str], arenas: list[str], calls: int, attentions: list[str]
) -> dict:
    import numpy as np

    from diffusia import load_pipeline
    from diffusia.config import get_preset
    from diffusia.export.onnx import example_inputs, graph_feeds
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline

    rows = {}
    with tempfile.TemporaryDirectory(prefix="diffusia-exports-") as tmp:
        feeds = Path(tmp) / "feeds.npz"
        for preset in presets:
            pipe = load_pipeline(model, progress=False)
            if not feeds.is_file():
                np.savez(feeds, **graph_feeds(example_inputs(pipe.unet, batch=2)))
            quantize_pipeline(
                pipe,
                get_preset(preset),
                load_prompts("calibration", model),
                calib_size=2,
                steps=2,
                progress=False,
                validate=False,
            )
            for runtime in runtimes:
                for attention in attentions if runtime == "onnxruntime" else [None]:
                    folder = Path(tmp) / f"{preset}-{runtime}-{attention}"
                    manifest = exported(pipe.unet, runtime, folder, attention)
                    graph = folder / manifest["files"][0]
                    for arena in arenas if runtime == "onnxruntime" else [None]:
                        name = f"{preset} {runtime}" + (f", arena {arena}" if arena else "")
                        rows[name + (", attention traced whole" if attention == "whole" else "")] = {
                            "weights_mb": weight_bytes(folder) / 2**20,
                            "relative_l2_vs_diffusia": manifest["check"]["relative_l2_vs_diffusia"],
                            "loaded": loaded(graph, feeds, arena, calls),
                        }
                    shutil.rmtree(folder)
    return rows


def to_markdown(res: dict) -> str:
    def row(name: str, v: dict) -> str:
        c = v.get("loaded")
        mb = "- | - | -" if c is None else f"{c['peak_growth_mb']:.1f} | {c['held_mb']:.1f} | {c['mapped_mb']:.1f}"
        linears = ", ".join(f"{k} {n}" for k, n in ((c or {}).get("fully_connected") or {}).items()) or "-"
        return f"| {name} | {v['weights_mb']:.2f} | {v['relative_l2_vs_diffusia']:.2e} | {mb} | {linears} |"

    lines = [
        f"# Runtime exports of `{res['model']}`: weight bytes, the export check, loaded memory",
        "",
        f"{res['cpu']} (class `{res['class']}`), commit {res['commit']}, {res['date']}. Weights MB = 2^20 bytes "
        "of the files holding the weights (OpenVINO .bin; ONNX .onnx); rel-L2 = the export check against "
        "diffusia's kernels; peak MB = peak RSS growth of a fresh process loading the graph (OpenVINO: compiled for "
        "the U-Net's sample size, f32 float layers; ONNX Runtime: a CPU session allocating as its row's arena says "
        f"(`diffusia.export.onnx.ARENA`); 2 threads) and running it {res.get('calls', 1)} time(s) at batch 2, the pages of the "
        "weight file OpenVINO maps included; held MB = its anonymous memory (RssAnon) growth after the runs: what "
        "the loaded model holds; mapped MB = its file-backed resident pages (RssFile) growth: weight files the "
        "runtime maps, which the kernel can evict; FullyConnected = OpenVINO's compiled matrix-multiply nodes by "
        "weight precision (i4 / i8: kept narrow in memory).",
        "",
        "| preset, runtime | weights MB | rel-L2 vs diffusia | peak MB | held MB | mapped MB | FullyConnected |",
        "|---|---|---|---|---|---|---|",
        *[row(k, v) for k, v in res["rows"].items()],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--load"]:
        _load_and_run(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=("tiny", "sd15-arch"))
    ap.add_argument("--presets", default="w8,w4,fp16,w8a8")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument(
        "--arena",
        help="ONNX Runtime's memory arenas (diffusia.export.onnx.ARENA), comma-separated; default diffusia's",
    )
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument(
        "--attention", default="per-head", help="ONNX Runtime graphs' float attention: per-head (diffusia's), whole"
    )
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    from diffusia.export.onnx import ARENA, DEFAULT_ARENA

    arenas = args.arena.split(",") if args.arena else [DEFAULT_ARENA]
    if unknown := set(arenas) - set(ARENA):
        ap.error(f"--arena: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ARENA)}")
    attentions = args.attention.split(",")
    if unknown := set(attentions) - set(ATTENTION):
        ap.error(f"--attention: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ATTENTION)}")
    rows = measure(args.model, args.presets.split(","), args.runtimes.split(","), arenas, args.calls, attentions)
    res = {**result_header(model=args.model, commit=commit), "calls": args.calls, "rows": rows}
    write_results(args.out / f"runtime_exports_{args.model}", res, to_markdown(res))


if __name__ == "__main__":
    main()
