"""What diffusia's runtime exports of `tiny` hold and compute: per preset and runtime (OpenVINO, ONNX Runtime), the
bytes of the U-Net graph's weights (.bin, or the .onnx with its data) and the export check's relative L2 against
diffusia's own kernels (the figure `runtime.json` records). Nothing is timed.

    python benchmarks/runtime_exports.py [--presets w8,w4,fp16,w8a8] [--out DIR]

Writes benchmarks/results/<class>/runtime_exports_tiny.{json,md}. Copied into a checkout of e827ca8 (before the
weight-only fixes) it gives the README's "before" figures. Calibration: 2 prompts x 2 steps (the check compares the
graph with the same frozen U-Net, so the ranges only need to exist).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402

RUNTIMES = ("openvino", "onnxruntime")


def weight_bytes(folder: Path) -> int:
    """Bytes of the graph files that hold the weights: OpenVINO's .bin, ONNX's .onnx (and external data)."""
    return sum(
        p.stat().st_size for p in folder.iterdir() if p.suffix in (".bin", ".onnx", ".data") and "vae" not in p.name
    )


def measure(presets: list[str]) -> dict:
    from diffusia import load_pipeline
    from diffusia.config import get_preset
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.runtime.artifact import export_runtime

    rows = {}
    with tempfile.TemporaryDirectory(prefix="diffusia-exports-") as tmp:
        for preset in presets:
            pipe = load_pipeline("tiny", progress=False)
            quantize_pipeline(
                pipe, get_preset(preset), load_prompts("tiny"), calib_size=2, steps=2, progress=False, validate=False
            )
            for runtime in RUNTIMES:
                folder = Path(tmp) / f"{preset}-{runtime}"
                manifest = export_runtime(pipe.unet, runtime, folder)
                rows[f"{preset} {runtime}"] = {
                    "weights_mb": weight_bytes(folder) / 2**20,
                    "relative_l2_vs_diffusia": manifest["check"]["relative_l2_vs_diffusia"],
                }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="w8,w4,fp16,w8a8")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {**result_header(model="tiny", commit=commit), "rows": measure(args.presets.split(","))}
    lines = [
        "# Runtime exports of `tiny`: weight bytes and the export check",
        "",
        f"{res['cpu']} (class `{res['class']}`), commit {commit}, {res['date']}. MB = 2^20 bytes of the files holding "
        "the weights (OpenVINO .bin; ONNX .onnx); rel-L2 = the export check against diffusia's kernels.",
        "",
        "| preset, runtime | weights MB | rel-L2 vs diffusia |",
        "|---|---|---|",
        *[f"| {k} | {v['weights_mb']:.2f} | {v['relative_l2_vs_diffusia']:.2e} |" for k, v in res["rows"].items()],
    ]
    write_results(args.out / "runtime_exports_tiny", res, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
