"""Where a weight-only U-Net's step goes on ONNX Runtime: its profiler's kernel time per operator type, for the
graph diffusia ships (`runtime.artifact.export_runtime`), the same graph with its weight-only convolutions widened
at load (the experiment of `_onnxruntime_convs.py`), the graph with ONNX Runtime's QDQ fusions off (its linears
then dequantize their weights on every call into a float MatMul instead of running as MatMulNBits), and the graph
with every weight pair folded at load (`session.disable_quant_qdq`: float32 weights throughout). One session per
variant, in one process, at the U-Net's own sample size (or `--latent`), batch 2; after a warm-up call each, the
variants are called in turn for `--rounds` rounds (idle sessions do not spin) and each gets the median over its
calls. Kernel time with spinning off is not wall time: on sd15-arch the fusions-off variant profiled 16 % faster
and ran 9 % slower in `backends.py` (README, "Weight-only layers on ONNX Runtime").

    python benchmarks/onnxruntime_profile.py [--model tiny] [--preset w8] [--rounds 9] [--latent 32] [--out DIR]

Writes benchmarks/results/<class>/onnxruntime_profile_<model>_<preset>.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _onnxruntime_convs import widen_weight_only_convs  # noqa: E402
from _results import result_header, results_dir, write_results  # noqa: E402

VARIANTS = {
    "as shipped": "the graph diffusia's ONNX Runtime runtime loads",
    "convolutions widened": "weight-only convolutions widened at load (experiment)",
    "linears dequantized per call": "ONNX Runtime's QDQ fusions off (no MatMulNBits: DequantizeLinear + MatMul)",
    "all weights folded": "every weight pair folded at load (session.disable_quant_qdq)",
}


def _session(path: Path, variant: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")  # as the runtime's sessions
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle sessions leave the cores free
    if variant == "all weights folded":
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / f"profile-{list(VARIANTS).index(variant)}")
    disabled = ["QDQSelectorActionTransformer"] if variant == "linears dequantized per call" else None
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _kernel_ms(session) -> list[collections.Counter]:
    """Per profiled call, its kernel milliseconds by operator type (ONNX Runtime's node events)."""
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    starts = [e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    calls: list[collections.Counter] = [collections.Counter() for _ in starts]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and starts and e["ts"] >= starts[0]:
            calls[max(i for i, t in enumerate(starts) if t <= e["ts"])][e["args"]["op_name"]] += e["dur"] / 1e3
    return calls


def profile(graphs: dict[str, Path], feeds: dict, rounds: int) -> dict:
    """Each variant's session of its graph, warmed up, then called once per round in turn; per variant the median
    over the rounds of its kernel ms per operator type and of their sum."""
    sessions = {name: _session(path, name) for name, path in graphs.items()}
    for session in sessions.values():
        session.run(None, feeds)
    for _ in range(rounds):
        for session in sessions.values():
            session.run(None, feeds)
    out = {}
    for name, session in sessions.items():
        timed = _kernel_ms(session)[1:]  # after the warm-up call
        ops = sorted({op for c in timed for op in c})
        out[name] = {
            "total_ms": statistics.median(sum(c.values()) for c in timed),
            "by_op_ms": {op: statistics.median(c[op] for c in timed) for op in ops},
            "calls": len(timed),
        }
    return out


def measure(model: str, preset: str, rounds: int, latent: int | None) -> dict:
    import onnx

    from diffusia import load_pipeline
    from diffusia.config import get_preset
    from diffusia.export.onnx import example_inputs, graph_feeds
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.runtime.artifact import export_runtime

    pipe = load_pipeline(model, progress=False)
    feeds = graph_feeds(example_inputs(pipe.unet, batch=2, max_side=latent))
    quantize_pipeline(
        pipe, get_preset(preset), load_prompts("calibration", model), calib_size=2, steps=2, progress=False
    )
    with tempfile.TemporaryDirectory(prefix="diffusia-ort-profile-") as tmp:
        folder = Path(tmp) / "onnxruntime"
        manifest = export_runtime(pipe.unet, "onnxruntime", folder, check=False)
        del pipe  # three sessions of sd15-arch take most of the memory
        gc.collect()
        shipped = folder / manifest["files"][0]
        graph = onnx.load(str(shipped))
        widened_n = widen_weight_only_convs(graph)
        widened = Path(tmp) / "widened.onnx"
        onnx.save(graph, str(widened))
        rows = profile({v: widened if v == "convolutions widened" else shipped for v in VARIANTS}, feeds, rounds)
    return {"sample": list(feeds["sample"].shape), "widened_convolutions": widened_n, "rows": rows}


def to_markdown(res: dict) -> str:
    rows = res["rows"]
    ops = sorted(
        {op for r in rows.values() for op in r["by_op_ms"]}, key=lambda op: -rows["as shipped"]["by_op_ms"].get(op, 0)
    )
    shown = [op for op in ops if max(r["by_op_ms"].get(op, 0) for r in rows.values()) >= 0.5]
    head = " | ".join(rows)
    lines = [
        f"# ONNX Runtime kernel time of `{res['model']}` `{res['preset']}`, by operator type",
        "",
        f"{res['cpu']} (class `{res['class']}`), commit {res['commit']}, {res['date']}; onnxruntime "
        f"{res['onnxruntime']}; sample {res['sample']}, 2 threads; median of {rows['as shipped']['calls']} rounds "
        "(the variants called in turn after a warm-up each), ms of kernel time per call (the profiler's node events; not wall time). Variants: "
        + "; ".join(f"*{k}* = {v}" for k, v in VARIANTS.items())
        + f". Convolutions widened: {res['widened_convolutions']}.",
        "",
        f"| operator | {head} |",
        "|---|" + "---|" * len(rows),
        *[f"| {op} | " + " | ".join(f"{r['by_op_ms'].get(op, 0):.2f}" for r in rows.values()) + " |" for op in shown],
        "| **all kernels** | " + " | ".join(f"**{r['total_ms']:.2f}**" for r in rows.values()) + " |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    import onnxruntime

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=("tiny", "sd15-arch"))
    ap.add_argument("--preset", default="w8")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--latent", type=int, help="cap the latent sides (sd15-arch: 32, as backends.py; default: own)")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {
        **result_header(model=args.model, preset=args.preset, commit=commit, onnxruntime=onnxruntime.__version__),
        **measure(args.model, args.preset, args.rounds, args.latent),
    }
    write_results(args.out / f"onnxruntime_profile_{args.model}_{args.preset}", res, to_markdown(res))


if __name__ == "__main__":
    main()
