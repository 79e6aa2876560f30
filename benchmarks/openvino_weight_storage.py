"""What diffusia's OpenVINO graph settings cost a step: the graph as exported (`narrow_weights`: int4 codes stored as
int4, fp16 values as fp16 behind a Convert; compiled with dynamic quantization off) against the same graph with
those constants widened back (int4 -> int8, fp16 -> f32), and against OpenVINO's CPU default of quantizing the
inputs of MatMuls with compressed weights dynamically. One process, the rows interleaved in shuffled order per
round, each timed on its second call; ratios to the exported graph paired per round.

    python benchmarks/openvino_weight_storage.py                  # sd15-arch 32x32, W8A8-MSE balanced, int8 attention
    python benchmarks/openvino_weight_storage.py --preset w4 --activations auto --attention float
Writes benchmarks/results/<class>/openvino_weight_storage_<model>_<preset>.{json,md}. Same U-Net, inputs and
calibration as `backends.py` (4 seeded Gaussian calibration inputs); rel-L2 against diffusia's PyTorch kernels.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402


def widened(model):
    """`model` with every int4 constant stored as int8 and every fp16 constant behind a Convert as float32."""
    import openvino as ov
    from openvino import opset13 as ops

    from diffusia.export.openvino import int4_values

    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i4:
            op.output(0).replace(ops.constant(int4_values(op)).output(0))
        elif op.get_type_name() == "Convert" and op.input_value(0).get_element_type() == ov.Type.f16:
            source = op.input_value(0).get_node()
            if source.get_type_name() == "Constant":
                op.output(0).replace(ops.constant(source.get_data().astype(np.float32)).output(0))
    model.validate_nodes_and_infer_types()
    return model


def count_types(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant" and int(np.prod(list(op.get_output_shape(0)))) >= 1024:
            key = op.get_element_type().get_type_name()
            counts[key] = counts.get(key, 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15-arch", choices=("sd15-arch", "tiny"))
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--preset", default="w8a8", help="diffusia's preset, its calibrator set to mse")
    ap.add_argument("--activations", default="balanced")
    ap.add_argument("--attention", default="int8")
    ap.add_argument("--precision", default="f32", choices=("f32", "bf16"), help="OpenVINO's float layers")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import openvino as ov
    from backends import load_unet
    from openvino_profile import inputs

    from diffusia.config import get_preset
    from diffusia.export import compare
    from diffusia.export.openvino import compile_model
    from diffusia.quant import api
    from diffusia.runtime.artifact import export_runtime

    latent = 16 if args.model == "tiny" else args.latent
    work, timed, calib = inputs(args.model, latent, 4)
    feeds = dict(zip(("sample", "timestep", "encoder_hidden_states"), (t.numpy() for t in timed)))
    unet = load_unet(args.model, work)
    recipe = get_preset(args.preset).replace(calibrator="mse", activations=args.activations, attention=args.attention)
    api.quantize(unet, recipe)
    if api.observers(unet):  # weight-only presets calibrate nothing
        with torch.no_grad(), api.calibrate(unet):
            for x in calib:
                unet(*x)
    api.freeze(unet)
    with torch.no_grad():
        ref = unet(*timed).sample.numpy()
    manifest = export_runtime(unet, "openvino", work / "ov", check=False)
    xml = str(work / "ov" / manifest["files"][0])
    del unet

    def model(widen: bool):
        m = ov.Core().read_model(xml)
        m.reshape({k: v.shape for k, v in feeds.items()})
        return widened(m) if widen else m

    rows = {
        "exported (narrow weights, dynamic quantization off)": (False, False),
        "weights widened (int8, f32), dynamic quantization off": (True, False),
        "exported, dynamic quantization on (OpenVINO's default)": (False, True),
    }
    compiled, types, errors = {}, {}, {}
    for name, (widen, dynamic) in rows.items():
        m = model(widen)
        types[name] = count_types(m)
        compiled[name] = compile_model(m, args.precision, args.threads, dynamic).create_infer_request()
        compiled[name].infer(feeds)
        errors[name] = compare.relative_l2(compiled[name].get_output_tensor(0).data.copy(), ref)
    times: dict[str, list[float]] = {n: [] for n in rows}
    order = list(rows)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            compiled[name].infer(feeds)
            t0 = time.perf_counter()
            compiled[name].infer(feeds)
            times[name].append(time.perf_counter() - t0)
    base = next(iter(rows))
    result = {
        **result_header(
            model=args.model,
            latent=latent,
            threads=args.threads,
            rounds=args.rounds,
            recipe=recipe.to_dict(),
            precision=args.precision,
            openvino=ov.__version__,
        ),
        "rows": {
            name: {
                "ms": [t * 1e3 for t in times[name]],
                "median_ms": statistics.median(times[name]) * 1e3,
                "ratio": statistics.median(a / b for a, b in zip(times[name], times[base])),
                "ratio_iqr": _iqr([a / b for a, b in zip(times[name], times[base])]),
                "relative_l2_vs_diffusia": errors[name],
                "constant_types": types[name],
            }
            for name in rows
        },
    }
    write_results(args.out / f"openvino_weight_storage_{args.model}_{args.preset}", result, render(result))


def _iqr(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def render(r: dict) -> str:
    caps = ", ".join(f"`{k}={v}`" for k, v in r["isa_caps"].items())
    rec = r["recipe"]
    lines = [
        f"# OpenVINO weight storage and dynamic quantization: {r['model']}, latent {r['latent']}, batch 2",
        "",
        f"{r['cpu']} (class `{r['class']}`{', capped: ' + caps if caps else ''}), {r['threads']} threads, openvino "
        f"{r['openvino']}, {r['date']}. diffusia `{rec.get('name')}` (calibrator {rec.get('calibrator')}, "
        f"activations {rec.get('activations')}, attention {rec.get('attention')}), float layers in {r['precision']}. "
        f"{r['rounds']} interleaved rounds in one process; ratio = median (IQR) of the per-round ratios to the "
        "exported graph.",
        "",
        "| graph | step ms (median) | vs exported | rel-L2 vs diffusia | weight constants by type |",
        "|---|---|---|---|---|",
    ]
    for name, row in r["rows"].items():
        lo, hi = row["ratio_iqr"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(row["constant_types"].items()))
        lines.append(
            f"| {name} | {row['median_ms']:.1f} | {row['ratio']:.3f}x ({lo:.3f}-{hi:.3f}) | "
            f"{row['relative_l2_vs_diffusia']:.2%} | {kinds} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
