"""W8A8 output error of the whole SD v1.5 U-Net (random weights) per activation/weight range and calibrator.

diffusia's real path (default policy, quantize -> calibrate -> freeze, oneDNN kernels) on a 32x32 latent, batch 2:
calibrated on 5 seeded Gaussian inputs at timesteps 950..20, error = rel-L2 against FP32 on a sixth input.
Schemes: 8-bit activations with 7-bit weights (the default without VNNI), 7-bit activations with 8-bit weights,
and 8-bit with 8-bit weights (saturates on CPUs without VNNI). `channels_last` repeats one scheme with the U-Net in
channels-last memory layout: the same math in another float rounding order, a measure of how much this random
network amplifies tiny perturbations. Errors only: timings are in backends.py.

    python benchmarks/w8a8_schemes.py          # ~10 min on 2 cores
Writes benchmarks/results/<class>/w8a8_schemes.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import torch
from _results import isa_caps, results_dir  # noqa: E402  (benchmarks/ is on sys.path when run)
from diffusers import UNet2DConditionModel

from diffusia.config import get_preset
from diffusia.fileio import write_json, write_text
from diffusia.models.architectures import SD15_UNET
from diffusia.quant import api, cpu
from diffusia.quant.modules import QModuleMixin

RESULTS = results_dir()


def _quantized_in(block: str) -> str:
    """A rule pattern for the layers the policy quantizes inside `block` (a regular expression)."""
    kinds = (
        r"(resnets\.\d+\.(conv1|conv2|conv_shortcut)|(down|up)samplers\.0\.conv"
        r"|proj_in|proj_out|to_[qkv]|to_out\.0|ff\.net\.(0\.proj|2))"
    )
    return f"re:{block}\\..*{kinds}$"


# name, recipe changes, weight_qmax override (None: the CPU's rule), channels_last
SCHEMES = [
    ("a8w7 percentile (default)", {}, None, False),
    ("a8w7 minmax", {"calibrator": "minmax"}, None, False),
    ("a8w7 mse", {"calibrator": "mse"}, None, False),
    ("a7w8 percentile", {"activations": "uint7"}, None, False),
    ("a7w8 minmax", {"activations": "uint7", "calibrator": "minmax"}, None, False),
    ("a8w8 minmax (saturating without VNNI)", {"calibrator": "minmax"}, 127, False),
    ("a8w7 minmax, channels_last", {"calibrator": "minmax"}, None, True),
    ("a8w7 mse, ff.net.2 in FP16 (rule)", {"calibrator": "mse", "rules": [("*ff.net.2", "fp16")]}, None, False),
    (
        "preset w8a8x2: a8w7 mse, full-resolution blocks a7+7 w8 minmax",
        {"calibrator": "mse", "full_res_weights": "w8a8x2"},
        None,
        False,
    ),
    (
        "a8w7 mse, full-resolution convolutions only a7+7 w8 minmax",
        {
            "calibrator": "mse",
            "rules": [("re:(down_blocks\\.0|up_blocks\\.3)\\..*(conv\\d?|conv_shortcut|proj_in|proj_out)", "w8a8x2")],
        },
        None,
        False,
    ),
    (
        "a8w7 mse, every convolution a7+7 w8 minmax",
        {
            "calibrator": "mse",
            "rules": [
                ("*resnets.*.conv?", "w8a8x2"),
                ("*conv_shortcut", "w8a8x2"),
                ("*samplers.*.conv", "w8a8x2"),
                ("*.proj_in", "w8a8x2"),
                ("*.proj_out", "w8a8x2"),
            ],
        },
        None,
        False,
    ),
    ("a7+7 w8 minmax everywhere (w8a8x2 on every layer)", {"weights": "w8a8x2"}, None, False),
    # where one digit is worth spending without VNNI (the AVX2 class's <= 3 % question; errors only)
    ("a8w7 mse, 2 timestep groups", {"calibrator": "mse", "timestep_groups": 2}, None, False),
    (
        "a8w7 mse, first down block a7+7 w8 minmax",
        {"calibrator": "mse", "rules": [(_quantized_in("down_blocks\\.0"), "w8a8x2")]},
        None,
        False,
    ),
    (
        "a8w7 mse, last up block a7+7 w8 minmax",
        {"calibrator": "mse", "rules": [(_quantized_in("up_blocks\\.3"), "w8a8x2")]},
        None,
        False,
    ),
    ("a8w7 mse, every ff.net.2 a7+7 w8 minmax", {"calibrator": "mse", "rules": [("*ff.net.2", "w8a8x2")]}, None, False),
    (
        "a8w7 mse, last up block's convolutions a7+7 w8 minmax",
        {
            "calibrator": "mse",
            "rules": [(r"re:up_blocks\.3\..*(resnets\.\d+\.(conv1|conv2|conv_shortcut)|proj_in|proj_out)$", "w8a8x2")],
        },
        None,
        False,
    ),
    (
        "a8w7 mse, last up block's attention and feed-forward a7+7 w8 minmax",
        {"calibrator": "mse", "rules": [(r"re:up_blocks\.3\..*(to_[qkv]|to_out\.0|ff\.net\.(0\.proj|2))$", "w8a8x2")]},
        None,
        False,
    ),
]
PROFILED = "a8w7 minmax"  # the scheme whose per-layer activation error is estimated


def layer_kind(name: str) -> str:
    """ "...transformer_blocks.0.ff.net.0.proj" -> "ff.net.0.proj", "...attn1.to_out.0" -> "to_out.0", else the last part."""
    if ".ff." in name:
        return name[name.index(".ff.") + 1 :]
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def profile_hooks(q) -> tuple[dict, list]:
    """Mean square of every W8A8 layer's input during calibration (forward pre-hooks)."""
    power: dict[str, list[float]] = {}

    def hook(name):
        def h(module, args):
            p = power.setdefault(name, [0.0, 0])
            p[0] += float(args[0].double().square().sum())
            p[1] += args[0].numel()

        return h

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in api.qmodules(q).items() if m.precision == "w8a8"]
    return power, handles


def activation_errors(q, power: dict) -> list[dict]:
    """Per layer kind: the estimated relative rounding error of its input activations (step / sqrt(12) over the
    input's RMS, the step being the calibrated range over the levels) and of its weights (measured)."""
    from diffusia.quant import qmath

    kinds: dict[str, list[tuple[float, float]]] = {}
    for n, m in api.qmodules(q).items():
        if n not in power:
            continue
        lo, hi = (float(v) for v in m.act_range[0])
        rms = (power[n][0] / power[n][1]) ** 0.5
        act = (max(hi, 0) - min(lo, 0)) / m.settings.act_qmax / 12**0.5 / rms
        w = m.weight.detach()
        wq = qmath.dequantize_weight_int8(*qmath.quantize_weight_int8(w, m.settings.weight_qmax))
        kinds.setdefault(layer_kind(n), []).append((act, float((wq - w).norm() / w.norm())))
    rows = [
        {
            "kind": k,
            "layers": len(v),
            "act_error": sum(a for a, _ in v) / len(v),
            "weight_error": sum(w for _, w in v) / len(v),
        }
        for k, v in kinds.items()
    ]
    return sorted(rows, key=lambda r: -r["act_error"])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def run(latent: int, only: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    g = torch.Generator().manual_seed(1)
    calib = [
        (torch.randn(2, 4, latent, latent, generator=g), t, torch.randn(2, 77, 768, generator=g))
        for t in (950, 700, 450, 200, 20)
    ]
    test = (torch.randn(2, 4, latent, latent, generator=g), 600, torch.randn(2, 77, 768, generator=g))
    with torch.no_grad():
        ref = unet(*test).sample
    rows, outputs, profile = [], {}, []
    for name, changes, wqmax, channels_last in SCHEMES:
        if only and not any(o in name for o in only):
            continue
        q = copy.deepcopy(unet)
        api.quantize(q, dataclasses.replace(get_preset("w8a8"), **changes))
        if wqmax is not None:
            for m in q.modules():
                if isinstance(m, QModuleMixin) and m.precision == "w8a8":
                    m.settings = dataclasses.replace(m.settings, weight_qmax=wqmax)
        power, handles = profile_hooks(q) if name == PROFILED else ({}, [])
        with api.calibrate(q):
            for c in calib:
                q(*c)
        for h in handles:
            h.remove()
        if power:
            profile = activation_errors(q, power)
        api.freeze(q)
        if channels_last:
            q = q.to(memory_format=torch.channels_last)
        with torch.no_grad():
            y = q(*test).sample
        outputs[name] = y
        m = next(m for m in q.modules() if isinstance(m, QModuleMixin) and m.spec.act_digits)
        row = {
            "scheme": name,
            "act_qmax": m.settings.act_qmax,
            "weight_qmax": m.settings.weight_qmax,
            "act_digits": m.spec.act_digits,
            "rel_l2_vs_fp32": rel(y, ref),
        }
        if channels_last and "a8w7 minmax" in outputs:
            row["rel_l2_vs_nchw_same_scheme"] = rel(y, outputs["a8w7 minmax"])
        rows.append(row)
        print(row, flush=True)
    return rows, profile


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "w8a8_schemes"))
    ap.add_argument("--only", help="comma list: run the schemes whose names contain one of these")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, profile = run(args.latent, args.only.split(",") if args.only else None)
    res = {
        "model": "sd15-arch (random weights)",
        "latent": args.latent,
        "batch": 2,
        "cpu": cpu.cpu_model(),
        "saturation_risk": not cpu.has_vnni(cpu.detected_features()),
        "int8_layout": cpu.host_class(),  # the class diffusia lays the INT8 weights out for ($DIFFUSIA_CPU)
        "isa_caps": isa_caps(),
        "torch": torch.__version__,
        "rows": rows,
        "error_sources": profile,
    }
    write_json(args.out + ".json", res)
    caps = f", capped by {res['isa_caps']}" if res["isa_caps"] else ""
    lines = [
        f"# W8A8 schemes on the SD v1.5 U-Net (random weights), latent {args.latent}x{args.latent}, batch 2",
        "",
        f"{res['cpu']}, saturation risk (no VNNI): {res['saturation_risk']}, INT8 layout `{res['int8_layout']}`"
        f"{caps}, torch {res['torch']}. "
        "Calibrated on 5 Gaussian inputs, error on a sixth. Errors only.",
        "",
        "| scheme | act levels | weight max | rel-L2 vs FP32 | vs the NCHW run |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        other = r.get("rel_l2_vs_nchw_same_scheme")
        digits = " x2" if r.get("act_digits", 1) == 2 else ""
        lines.append(
            f"| {r['scheme']} | 0..{r['act_qmax']}{digits} | +-{r['weight_qmax']} | {r['rel_l2_vs_fp32']:.2%} | "
            f"{'-' if other is None else f'{other:.2%}'} |"
        )
    lines += (
        []
        if not profile
        else [
            "",
            f"## Where the error comes from ({PROFILED})",
            "",
            "Per kind of layer: the estimated relative rounding error of its input activations (quantization step "
            "/ sqrt(12) over the RMS of the calibration inputs) and the measured relative error of its weights.",
            "",
            "| layer kind | layers | activations | weights |",
            "|---|---|---|---|",
        ]
    )
    lines += [f"| {r['kind']} | {r['layers']} | {r['act_error']:.2%} | {r['weight_error']:.2%} |" for r in profile]
    write_text(args.out + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
