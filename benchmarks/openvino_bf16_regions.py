"""Where the error of OpenVINO's bf16 float layers comes from: diffusia's quantized U-Net on OpenVINO with
`INFERENCE_PRECISION_HINT bf16`, keeping one region of the graph in f32 at a time, against all-f32 and all-bf16.

    python benchmarks/openvino_bf16_regions.py                    # sd15-arch, w8a8 (MSE calibrator), ~10 min
    python benchmarks/openvino_bf16_regions.py --preset w8a8x2    # adds the second digits' input paths
    python benchmarks/openvino_bf16_regions.py --activations balanced --attention int8   # ..._w8a8_balanced_attn8
Writes benchmarks/results/<class>/openvino_bf16_regions_<model>_<preset>[_<activations>][_attn8].{json,md}.

A region is kept in f32 by marking its nodes `precise` (OpenVINO's keep-the-original-precision attribute) and
round-tripping the model through `ov.save_model`, after which the CPU plugin honours it; each row counts the nodes
that then executed on f32 and on bf16 kernels (PERF_COUNT), so a mark that took no effect shows. Same U-Net, inputs
and calibration as `backends.py` (4 seeded Gaussian calibration inputs); rel-L2 against the FP32 eager output; step
= median of `--calls` calls after a warm-up, all rows in one process, one after another.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402

ELEMENTWISE = {"Add", "Multiply", "Subtract", "Divide", "Sqrt", "Swish", "Gelu"}


def _weight_source(op):
    """Where a Convolution/MatMul's second input comes from, through converts, reshapes and QDQ/dequantization."""
    src = op.input_value(1).get_node()
    while src.get_type_name() in ("Convert", "Reshape", "Transpose", "FakeQuantize", "Multiply", "Subtract"):
        src = src.input_value(0).get_node()
    return src


def _float_weighted(op) -> bool:
    """A Convolution/MatMul whose weight is a float constant: a layer diffusia keeps in float."""
    src = _weight_source(op)
    return src.get_type_name() == "Constant" and not src.get_element_type().is_integral()


def _weighted(op) -> bool:
    """A MatMul/Convolution whose weight is a constant (float or int8): a layer, not an attention matmul."""
    return _weight_source(op).get_type_name() == "Constant"


def _second_digit_inputs(model) -> set:
    """The nodes that compute a `w8a8x2` layer's input and its residual (x - x1) back to the producing
    Convolution/MatMul/attention, inclusive: the path whose precision the second digit needs."""
    marked, stack = set(), []
    for op in model.get_ordered_ops():
        feeds_fq = any(
            t.get_node().get_type_name() == "FakeQuantize" for o in op.outputs() for t in o.get_target_inputs()
        )
        if op.get_type_name() == "Subtract" and feeds_fq:
            stack += [op, *(t.get_node() for o in op.outputs() for t in o.get_target_inputs())]
    while stack:
        node = stack.pop()
        if node in marked or node.get_type_name() in ("Parameter", "Constant"):
            continue
        marked.add(node)
        if node.get_type_name() not in ("Convolution", "MatMul", "ScaledDotProductAttention"):
            stack += [v.get_node() for v in node.input_values()]
    return marked


REGIONS: dict[str, Callable] = {
    "float layers (kept Conv2d/Linear)": lambda m: {
        op for op in m.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul") and _float_weighted(op)
    },
    "attention (SDPA, or int8 attention's softmax and matmuls)": lambda m: {
        op
        for op in m.get_ordered_ops()
        if op.get_type_name() in ("ScaledDotProductAttention", "Softmax")
        or (op.get_type_name() == "MatMul" and not _weighted(op))
    },
    "norms (MVN)": lambda m: {op for op in m.get_ordered_ops() if op.get_type_name() == "MVN"},
    "additions": lambda m: {op for op in m.get_ordered_ops() if op.get_type_name() == "Add"},
    "elementwise": lambda m: {op for op in m.get_ordered_ops() if op.get_type_name() in ELEMENTWISE},
}


def run_row(core, model, precision: str, feeds: dict, calls: int, threads: int) -> tuple[list[float], object, dict]:
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": precision,
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,  # as diffusia.export.openvino.compile_model: weight-only stays so
    }
    request = core.compile_model(model, "CPU", config).create_infer_request()
    request.infer(feeds)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        request.infer(feeds)
        times.append(time.perf_counter() - t0)
    out = torch.from_numpy(request.get_output_tensor(0).data.copy())
    profiled = core.compile_model(model, "CPU", {**config, "PERF_COUNT": True}).create_infer_request()
    profiled.infer(feeds)
    kernels = {"f32": 0, "bf16": 0}
    for info in profiled.get_profiling_info():
        if info.status.name == "EXECUTED":
            for p in kernels:
                kernels[p] += info.exec_type.lower().endswith(p)
    return times, out, kernels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15-arch", choices=("sd15-arch", "tiny"))
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--preset", default="w8a8", help="diffusia's preset (its calibrator set to mse)")
    ap.add_argument("--activations", default="auto", help="diffusia's activation signedness (auto, int8, balanced)")
    ap.add_argument("--attention", default="float", help="diffusia's attention: float or int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import openvino as ov
    from backends import load_unet, make_inputs

    from diffusia.config import get_preset
    from diffusia.quant import api
    from diffusia.runtime.artifact import export_runtime

    latent = 16 if args.model == "tiny" else args.latent
    work = Path(tempfile.mkdtemp(prefix="diffusia-bf16-regions-"))
    make_inputs(args.model, latent, 4, work)
    data = torch.load(work / "inputs.pt")
    timed, calib = data["timed"], data["calib"]
    feeds = dict(zip(("sample", "timestep", "encoder_hidden_states"), (t.numpy() for t in timed)))
    unet = load_unet(args.model, work)
    with torch.no_grad():
        reference = unet(*timed).sample
        recipe = get_preset(args.preset).replace(calibrator="mse", activations=args.activations)
        api.quantize(unet, recipe.replace(attention=args.attention))
        with api.calibrate(unet):
            for x in calib:
                unet(*x)
    api.freeze(unet)
    manifest = export_runtime(unet, "openvino", work / "diffusia", check=False)
    del unet
    core = ov.Core()

    def read():
        model = core.read_model(str(work / "diffusia" / manifest["files"][0]))
        model.reshape({k: v.shape for k, v in feeds.items()})
        return model

    regions = dict(REGIONS)
    if _second_digit_inputs(read()):  # a preset with w8a8x2 layers
        regions["second digits' inputs"] = _second_digit_inputs
    plan = [("all f32", "f32", None), ("all bf16", "bf16", None)]
    plan += [(f"bf16, {name} in f32", "bf16", pick) for name, pick in regions.items()]
    rows = []
    for label, precision, pick in plan:
        model, marked = read(), 0
        if pick is not None:
            for op in pick(model):
                op.get_rt_info()["precise_0"] = ""
                marked += 1
            path = work / "marked.xml"
            ov.save_model(model, str(path), compress_to_fp16=False)
            model = core.read_model(str(path))
        times, out, kernels = run_row(core, model, precision, feeds, args.calls, args.threads)
        rel = float((out - reference).norm() / reference.norm())
        rows.append(
            {
                "row": label,
                "marked": marked,
                "ms": statistics.median(times) * 1e3,
                "ms_min": min(times) * 1e3,
                "ms_max": max(times) * 1e3,
                "rel_l2": rel,
                "executed_f32": kernels["f32"],
                "executed_bf16": kernels["bf16"],
            }
        )
        print(f"{label}: {rows[-1]['ms']:.0f} ms, {rel:.2%}", flush=True)
    variant = args.preset + ("" if args.activations == "auto" else f"_{args.activations}")
    variant += "" if args.attention == "float" else "_attn8"
    header = dict(model=args.model, latent=latent, preset=variant, threads=args.threads, openvino=ov.__version__)
    res = {**result_header(**header), "rows": rows}
    lines = [
        f"# bf16 float layers on OpenVINO, region by region: {args.model}, diffusia `{variant}` (MSE calibrator)",
        "",
        f"{res['cpu']} (class `{res['class']}`), {args.threads} threads, openvino {res['openvino']}, {res['date']}; "
        f"latent {latent}x{latent}, batch 2. Step = median of {args.calls} calls (min-max); rel-L2 vs FP32 eager; "
        "executed kernels from one profiled call.",
        "",
        "| row | nodes marked | step ms | rel-L2 | kernels f32 / bf16 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['marked']} | {r['ms']:.0f} ({r['ms_min']:.0f}-{r['ms_max']:.0f}) | "
            f"{r['rel_l2']:.2%} | {r['executed_f32']} / {r['executed_bf16']} |"
        )
    write_results(args.out / f"openvino_bf16_regions_{args.model}_{variant}", res, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
