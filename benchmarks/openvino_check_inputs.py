"""Whether the OpenVINO export check's disagreement comes from its input: diffusia's quantized sd15-arch U-Net,
calibrated along sampler trajectories as `generation_runtimes.py` does, exported to OpenVINO (unchecked), then
OpenVINO's output against diffusia's kernels (relative L2) on the check's own seeded Gaussian input and on U-Net
inputs recorded along a sampler trajectory of another prompt, and each of the two against the FP32 U-Net; with how
far diffusia's and the FP32 U-Net's own outputs move when the sample moves by 1e-6 of its RMS (`tie_noise`).
Errors only, no timing.

    python benchmarks/openvino_check_inputs.py --attention int8 --activations balanced   # ~10 min
Writes benchmarks/results/<class>/openvino_check_inputs_<variant>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="w8a8")
    ap.add_argument("--calibrator", default="mse")
    ap.add_argument("--activations", default="auto")
    ap.add_argument("--attention", default="float")
    ap.add_argument("--calib-size", type=int, default=2)
    ap.add_argument("--calib-steps", type=int, default=8)
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    torch.set_num_threads(2)

    from diffusia import load_pipeline
    from diffusia.calib.forward_loop import record_unet_inputs
    from diffusia.config import get_preset
    from diffusia.export import compare
    from diffusia.export import onnx as qdq
    from diffusia.export.openvino import compile_model
    from diffusia.prompts import Prompt, load_prompts, take
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.runtime.artifact import export_runtime

    t0 = time.perf_counter()
    pipe = load_pipeline("sd15-arch", progress=False)
    recipe = get_preset(args.preset).replace(
        calibrator=args.calibrator, activations=args.activations, attention=args.attention
    )
    prompts = take(load_prompts("calibration", "sd15-arch"), args.calib_size)
    float_unet = copy.deepcopy(pipe.unet).eval()
    quantize_pipeline(
        pipe, recipe, prompts, calib_size=args.calib_size, steps=args.calib_steps, progress=False, validate=False
    )
    recorded = record_unet_inputs(
        pipe, [Prompt("a photo of a red sneaker on a white background")], steps=4, seed=42, progress=False
    )
    cases = {"check input (seeded Gaussian, 64x64, t=500)": qdq.example_inputs(pipe.unet, 2, 1, timestep=500)}
    for i in (0, len(recorded) // 2, len(recorded) - 1):
        call = recorded[i]
        t = int(torch.as_tensor(call.timestep).reshape(-1)[0])
        x = (
            call.sample.float(),
            torch.full((call.sample.shape[0],), t, dtype=torch.int64),
            call.encoder_hidden_states.float(),
        )
        cases[f"recorded sampler call {i} (t={t})"] = x
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_runtime(pipe.unet, "openvino", Path(tmp) / "ov", check=False)
        model = compile_model(Path(tmp) / "ov" / "unet-g0.xml", "f32")
        for name, x in cases.items():
            with torch.no_grad():
                ref = qdq.run_unet(pipe.unet, x).numpy()
                fp32 = qdq.run_unet(float_unet, x).numpy()
            out = model(qdq.graph_feeds(x))[0]
            rows.append(
                {
                    "input": name,
                    "relative_l2_vs_diffusia": compare.relative_l2(out, ref),
                    "openvino_vs_fp32": compare.relative_l2(out, fp32),
                    "diffusia_vs_fp32": compare.relative_l2(ref, fp32),
                    "diffusia_tie_noise": qdq.tie_noise(pipe.unet, x),
                    "fp32_tie_noise": qdq.tie_noise(float_unet, x),
                }
            )
            print(rows[-1], flush=True)
    res = {
        **result_header(
            model="sd15-arch",
            preset=args.preset,
            calibrator=args.calibrator,
            activations=args.activations,
            attention=args.attention,
            calib_size=args.calib_size,
            calib_steps=args.calib_steps,
        ),
        "rows": rows,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    lines = [
        "# OpenVINO against diffusia's kernels, by input: sd15-arch (random weights)",
        "",
        f"`{args.preset}`, calibrator {args.calibrator}, activations {args.activations}, attention {args.attention}; "
        f"calibrated on {args.calib_size} prompts x {args.calib_steps} steps at 512x512. {res['cpu']} (class "
        f"`{res['class']}`), {res['date']}, {res['total_s']:.0f} s.",
        "",
        "| input | rel-L2 OpenVINO vs diffusia | OpenVINO vs FP32 | diffusia vs FP32 | diffusia, sample moved by 1e-6 "
        "| FP32, sample moved by 1e-6 |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['input']} | {r['relative_l2_vs_diffusia']:.2%} | {r['openvino_vs_fp32']:.2%} | "
            f"{r['diffusia_vs_fp32']:.2%} | {r['diffusia_tie_noise']:.2%} | {r['fp32_tie_noise']:.1e} |"
            for r in rows
        ],
        "",
    ]
    variant = f"{args.preset}_{args.calibrator}_{args.activations}_attn-{args.attention}"
    write_results(args.out / f"openvino_check_inputs_{variant}", res, "\n".join(lines))


if __name__ == "__main__":
    main()
