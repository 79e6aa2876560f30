"""What OpenVINO gets from NNCF and from diffusia: the FakeQuantize nodes of each IR (what feeds them, what they
feed) and the precisions of the compiled Convolution/FullyConnected nodes. Nothing is timed; it explains the step
times of benchmarks/backends.py. Writes benchmarks/results/<class>/openvino_graphs_<model>.{json,md}.

    python benchmarks/openvino_graphs.py [--model tiny|sd15-arch] [--rows nncf_int8,diffusia_w8a8_mse_ov]

Each row is built by the backends.py builder of that name, on the same calibration inputs, in this process.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backends as bb  # noqa: E402
from _results import result_header, results_dir, write_results  # noqa: E402

LAYERS = ("Convolution", "FullyConnected", "FullyConnectedQuantizedLegacy")


def fake_quantizes(model) -> dict:
    """Counts of the activation FakeQuantize nodes of an IR by producer and by consumer type (weights apart)."""
    fed_by, feeding, weights = collections.Counter(), collections.Counter(), 0
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        src = op.input_value(0).get_node().get_type_name()
        if src == "Constant":
            weights += 1
            continue
        fed_by[src] += 1
        for target in op.output(0).get_target_inputs():
            feeding[target.get_node().get_type_name()] += 1
    return {
        "activations": sum(fed_by.values()),
        "weights": weights,
        "fed_by": dict(fed_by.most_common()),
        "feeding": dict(feeding.most_common()),
    }


def compiled_layers(xml: Path, threads: int) -> dict:
    """Compiled Convolution/FullyConnected nodes counted by (type, input precision, output precision)."""
    from diffusia.export.openvino import compile_model

    runtime = compile_model(str(xml), "f32", threads).get_runtime_model()
    counts = collections.Counter()
    for op in runtime.get_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str)
        if kind in LAYERS:
            counts[f"{kind} {rt['runtimePrecision'].astype(str)} -> {rt['outputPrecisions'].astype(str)}"] += 1
    return dict(counts.most_common())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=("tiny", "sd15-arch"))
    ap.add_argument("--latent", type=int, default=None, help="latent size (default: 16 tiny, 32 sd15-arch)")
    ap.add_argument("--rows", default="nncf_int8,diffusia_w8a8_mse_ov")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    import openvino as ov
    from _backends_peers import BACKENDS, Ctx

    torch.set_num_threads(args.threads)
    latent = args.latent or (16 if args.model == "tiny" else 32)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="diffusia-ovgraphs-") as tmp:
        work = Path(tmp)
        bb.make_inputs(args.model, latent, 4, work)
        calib = torch.load(work / "inputs.pt")["calib"]
        for name in args.rows.split(","):
            out = work / name
            out.mkdir()
            ctx = Ctx(calib=calib, out=out, cache=work, threads=args.threads, calibrator="preset")
            with torch.no_grad():
                built = BACKENDS[name][0](bb.load_unet(args.model, work), ctx)
            xml = next(p for p in built.files if p.suffix == ".xml")
            rows[name] = {
                "fake_quantize": fake_quantizes(ov.Core().read_model(str(xml))),
                "compiled": compiled_layers(xml, args.threads),
            }
    res = {**result_header(model=args.model, latent=latent, openvino=ov.get_version()), "rows": rows}
    lines = [
        f"# FakeQuantize placement and compiled precisions: {args.model}, latent {latent}",
        "",
        f"Class `{res['class']}`, openvino {res['openvino'].split('-')[0]}, {res['date']}. 4 calibration inputs, "
        "the builders of benchmarks/backends.py; compiled with f32 float layers.",
        "",
    ]
    for name, row in rows.items():
        fq = row["fake_quantize"]
        lines += [
            f"## {name}: {fq['activations']} activation FakeQuantize nodes ({fq['weights']} on weights)",
            "",
            "- fed by: " + ", ".join(f"{k} {v}" for k, v in fq["fed_by"].items()),
            "- feeding: " + ", ".join(f"{k} {v}" for k, v in fq["feeding"].items()),
            "",
            "| compiled node (input -> output precision) | count |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in row["compiled"].items()],
            "",
        ]
    write_results(args.out / f"openvino_graphs_{args.model}", res, "\n".join(lines))


if __name__ == "__main__":
    main()
