"""Where OpenVINO spends a U-Net step: diffusia's exported graph against NNCF's INT8 model of the same U-Net, from
OpenVINO's own per-node profiling (PERF_COUNT), summed by node type and by kernel (exec type, e.g.
`brgconv_avx512_amx_I8`). Says which layers run on INT8 kernels, which stay float, and what the float parts cost.

    python benchmarks/openvino_profile.py                      # sd15-arch, 32x32 latent, batch 2, ~10 min
    python benchmarks/openvino_profile.py --model tiny
    python benchmarks/openvino_profile.py --preset w8a8x2 --no-nncf   # openvino_profile_sd15-arch_w8a8x2
    python benchmarks/openvino_profile.py --model tiny --preset w8a8,hybrid --no-nncf  # ..._tiny_w8a8-hybrid
    python benchmarks/openvino_profile.py --activations balanced      # openvino_profile_sd15-arch_balanced
    python benchmarks/openvino_profile.py --preset w8a8x2 --attention float,int8 --no-nncf  # ..._attention-float-int8
    python benchmarks/openvino_profile.py --activations balanced --attention int8 --nncf-precision f32,bf16
Per U-Net block (a resnet, an attention, a resampler: the nodes' names up to their first ONNX op, e.g.
`/unet/up_blocks.1/upsamplers.0/conv`, grouped), the report also lists where diffusia's rows spend the most more,
or less, than the fastest NNCF row of the run.
Writes benchmarks/results/<class>/openvino_profile_<model>[_<preset>].{json,md}. Same U-Net, inputs and
calibration as `backends.py` (4 seeded Gaussian calibration inputs for sd15-arch); diffusia's preset (default
w8a8) with the MSE calibrator, NNCF with its defaults and with `model_type=TRANSFORMER`. Profiling adds a little
overhead to every node, so the totals exceed the plain step times. All rows are compiled first and profiled
interleaved, in shuffled order per round (results before 2026-12-07 profiled one row after another, so a drift of
the machine's speed between rows showed as a difference of the graphs).
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import quartiles, result_header, results_dir, write_results  # noqa: E402


def inputs(model: str, latent: int, n_calib: int):
    from backends import make_inputs

    work = Path(tempfile.mkdtemp(prefix="diffusia-ovprof-"))
    make_inputs(model, latent, n_calib, work)
    data = torch.load(work / "inputs.pt")
    return work, data["timed"], data["calib"]


def profile(compiled: dict, feeds: dict, rounds: int, seed: int = 0) -> dict:
    """Profile the compiled models `compiled` (row -> model) interleaved: each round calls every row once, in a
    shuffled order, so a drift of the machine's speed falls on all rows alike. Per row: the median wall time, each
    node's median time, those summed by node type, kernel and module, and per round the ratio of the row's wall
    time to every other row's of the same round (`paired`)."""
    requests = {name: model.create_infer_request() for name, model in compiled.items()}
    for request in requests.values():
        request.infer(feeds)
    walls: dict = collections.defaultdict(list)
    nodes: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    kinds: dict = {}
    order = list(requests)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            requests[name].infer(feeds)
            walls[name].append(time.perf_counter() - t0)
            for info in requests[name].get_profiling_info():
                if info.status.name == "EXECUTED":
                    nodes[name][info.node_name].append(info.real_time.total_seconds() * 1e3)
                    kinds[name, info.node_name] = (info.node_type, info.exec_type)
    results = {}
    for name in requests:
        median = {node: statistics.median(ms) for node, ms in nodes[name].items()}
        by_type: dict = collections.defaultdict(float)
        by_exec: dict = collections.defaultdict(float)
        by_module: dict = collections.defaultdict(float)
        for node, ms in median.items():
            node_type, exec_type = kinds[name, node]
            by_type[node_type] += ms
            by_exec[f"{node_type} / {exec_type}"] += ms
            by_module[module_of(node)] += ms
        slowest = sorted(median, key=lambda n: -median[n])
        results[name] = {
            "wall_ms": statistics.median(walls[name]) * 1e3,
            "by_type_ms": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
            "by_exec_ms": dict(sorted(by_exec.items(), key=lambda kv: -kv[1])),
            "by_module_ms": dict(sorted(by_module.items())),
            "slowest_nodes": [
                {"name": n, "type": kinds[name, n][0], "exec": kinds[name, n][1], "ms": median[n]} for n in slowest[:60]
            ],
            "paired": {
                other: [a / b for a, b in zip(walls[name], walls[other], strict=True)]
                for other in requests
                if other != name
            },
        }
    return results


def module_of(node: str) -> str:
    """The U-Net module an OpenVINO node comes from: its exported name up to the first ONNX op (a capitalised
    segment), e.g. `/unet/up_blocks.1/upsamplers.0/conv/Conv/WithoutBiases` -> `/unet/up_blocks.1/upsamplers.0/conv`.
    Fused nodes carry one of their ops' names, so a module's time is approximate at its edges."""
    parts = node.split("/")
    for i, part in enumerate(parts[1:], 1):
        if part[:1].isupper():
            return "/".join(parts[:i]) or node
    return node


OUTSIDE = "(nodes named outside the U-Net's modules)"


def block_of(module: str) -> str:
    """The U-Net block a module belongs to: a resnet, attention (transformer) or resampler of a down/up/mid block,
    e.g. `/unet/up_blocks.3/attentions.2`, or a top-level module (`/unet/conv_in`). Nodes that OpenVINO named
    after no module (a fused `VariadicSplit_123`, `MVN_45`) go to one bucket, OUTSIDE."""
    parts = module.split("/")
    if len(parts) < 3 or parts[1] != "unet":
        return OUTSIDE
    depth = 4 if parts[2].startswith(("down_blocks.", "up_blocks.", "mid_block")) and len(parts) >= 4 else 3
    return "/".join(parts[:depth])


def block_differences(results: dict, nncf_row: str, top: int) -> list[str]:
    """Markdown: per diffusia row, the U-Net blocks whose time differs most from `nncf_row`'s (both directions).
    Blocks, not modules: a node fused across a module's edge (an activation quantizer) is named after one of them,
    differently in the two graphs, but stays inside its block."""

    def by_block(modules: dict) -> dict:
        blocks: dict = collections.defaultdict(float)
        for module, ms in modules.items():
            blocks[block_of(module)] += ms
        return blocks

    lines = []
    theirs = by_block(results[nncf_row]["by_module_ms"])
    for name, r in results.items():
        if not name.startswith("diffusia"):
            continue
        ours = by_block(r["by_module_ms"])
        diff = {b: ours.get(b, 0.0) - theirs.get(b, 0.0) for b in set(ours) | set(theirs)}
        ranked = sorted(diff, key=lambda b: (-abs(diff[b]), b))[:top]
        total = sum(ours.values()) - sum(theirs.values())
        ratios = r.get("paired", {}).get(nncf_row, [])
        q1, median, q3 = quartiles(ratios) if len(ratios) > 1 else (0.0, 0.0, 0.0)
        paired = f"; wall time per round {median:.3f}x theirs (IQR {q1:.3f}-{q3:.3f})" if len(ratios) > 1 else ""
        lines += [
            f"### {name} against {nncf_row}: {total:+.1f} ms over all nodes{paired}",
            "",
            "| block | diffusia ms | NNCF ms | difference |",
            "|---|---|---|---|",
        ]
        lines += [f"| `{b}` | {ours.get(b, 0):.2f} | {theirs.get(b, 0):.2f} | {diff[b]:+.2f} |" for b in ranked]
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15-arch", choices=("sd15-arch", "tiny"))
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=11, help="profiled calls per row, interleaved")
    ap.add_argument("--preset", default="w8a8", help="diffusia's presets, comma list (calibrator set to mse)")
    ap.add_argument("--activations", default="auto", help="diffusia's activation signedness (auto, int8, balanced)")
    ap.add_argument("--attention", default="float", help="diffusia's attention: float, int8 or both (float,int8)")
    ap.add_argument("--no-nncf", action="store_true", help="profile diffusia's graph only")
    ap.add_argument("--nncf-precision", default="f32", help="NNCF's float layers: f32, bf16 or both (f32,bf16)")
    ap.add_argument("--top", type=int, default=25, help="blocks listed per diffusia row")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import nncf
    import openvino as ov
    from backends import load_unet

    from diffusia.config import get_preset
    from diffusia.export.onnx import export_unet
    from diffusia.quant import api
    from diffusia.runtime.artifact import export_runtime

    latent = 16 if args.model == "tiny" else args.latent
    work, timed, calib = inputs(args.model, latent, 4)
    feeds = dict(zip(("sample", "timestep", "encoder_hidden_states"), (t.numpy() for t in timed)))
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": args.threads,
        "PERF_COUNT": True,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    ours = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}  # as diffusia.export.openvino.compile_model compiles its graphs
    core = ov.Core()
    compiled = {}
    unet = load_unet(args.model, work)
    fp32 = ov.convert_model(str(export_unet(unet, work / "fp32.onnx", dynamic=True, float_ok=True)))
    fp32.reshape({k: v.shape for k, v in feeds.items()})
    if not args.no_nncf:
        data = nncf.Dataset([dict(zip(feeds, (t.numpy() for t in x))) for x in calib])
        for name, kwargs in (("nncf_int8", {}), ("nncf_int8_transformer", {"model_type": nncf.ModelType.TRANSFORMER})):
            nncf_model = nncf.quantize(fp32, data, subset_size=len(calib), **kwargs)
            for precision in args.nncf_precision.split(","):
                row = name + ("" if precision == "f32" else f"_{precision}")
                compiled[row] = core.compile_model(nncf_model, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})
            del nncf_model
    del fp32
    act_suffix = "" if args.activations == "auto" else f"_{args.activations}"
    variants = [(p, a) for p in args.preset.split(",") for a in args.attention.split(",")]
    for i, (preset, attention) in enumerate(variants):
        if i:
            unet = load_unet(args.model, work)  # each variant from the float U-Net
        recipe = get_preset(preset).replace(calibrator="mse", activations=args.activations, attention=attention)
        api.quantize(unet, recipe)
        with torch.no_grad(), api.calibrate(unet):
            for x in calib:
                unet(*x)
        api.freeze(unet)
        manifest = export_runtime(unet, "openvino", work / f"diffusia-{preset}-{attention}", check=False)
        model = core.read_model(str(work / f"diffusia-{preset}-{attention}" / manifest["files"][0]))
        model.reshape({k: v.shape for k, v in feeds.items()})
        suffix = act_suffix + ("" if attention == "float" else "_attn8")
        for precision in ("f32", "bf16"):
            compiled[f"diffusia_{preset}_mse{suffix}_{precision}"] = core.compile_model(
                model, "CPU", {**config, **ours, "INFERENCE_PRECISION_HINT": precision}
            )
        del unet, model
    results = profile(compiled, feeds, args.rounds)
    header = dict(
        model=args.model,
        latent=latent,
        threads=args.threads,
        rounds=args.rounds,
        openvino=ov.__version__,
        nncf=nncf.__version__,
    )
    res = {**result_header(**header), "rows": results}
    lines = [
        f"# OpenVINO profile of one U-Net step: {args.model}, latent {latent}x{latent}, batch 2",
        "",
        f"{res['cpu']} (class `{res['class']}`), {args.threads} threads, openvino {res['openvino']}, nncf "
        f"{res['nncf']}, {res['date']}. All rows compiled in one process, then profiled in {args.rounds} rounds, "
        "each calling every row once in a shuffled order; per node the median over the rounds. Float parts in the "
        "precision the row names (NNCF: f32 unless the row says bf16)."
        + (
            " Instruction sets capped: " + ", ".join(f"`{k}={v}`" for k, v in res["isa_caps"].items()) + "."
            if res["isa_caps"]
            else ""
        ),
        "",
    ]
    for name, r in results.items():
        lines += [f"## {name}: {r['wall_ms']:.0f} ms wall", "", "| node type / kernel | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in list(r["by_exec_ms"].items())[:15]]
        lines.append("")
    nncf_rows = [n for n in results if n.startswith("nncf")]
    if nncf_rows:
        fastest = min(nncf_rows, key=lambda n: results[n]["wall_ms"])
        lines += ["## Per block, against the fastest NNCF row", ""]
        lines += block_differences(results, fastest, args.top)
    attn = "" if args.attention == "float" else "_attention-" + args.attention.replace(",", "-")
    nncf_suffix = (
        "" if args.no_nncf or args.nncf_precision == "f32" else "_nncf-" + args.nncf_precision.replace(",", "-")
    )
    stem = (
        args.out
        / f"openvino_profile_{args.model}{'' if args.preset == 'w8a8' else '_' + args.preset.replace(',', '-')}"
        f"{act_suffix}{attn}{nncf_suffix}"
    )
    write_results(stem, res, "\n".join(lines))


if __name__ == "__main__":
    main()
