"""Sensitivity results on disk and on the page: JSON (atomic), a ranked Markdown table, a bar plot by layer type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusia.analysis.sensitivity import FORMAT, VERSION
from diffusia.errors import DiffusiaError


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def to_markdown(sens: dict[str, Any]) -> str:
    """sensitivity.md: summary, ranked per-layer table and per-type table, all labelled SIMULATED."""
    cal, im = sens["calibration"], sens["images"]
    alt = [p for p in sens["precisions"]]
    lines = [
        f"# Layer sensitivity (SIMULATED) - {sens.get('model')}, recipe `{sens['recipe']['name']}`",
        "",
        f"**{sens['note']}.**",
        "",
        f"- calibration: {cal['size']} prompts x {cal['steps']} steps, {cal['unet_calls']} U-Net calls; SQNR over "
        f"{cal['eval_samples']} recorded inputs at {len(cal['eval_timesteps'])} timesteps",
        f"- all {len(sens['layers'])} layers quantized: SQNR {sens['sqnr_all_db']:.2f} dB (simulated); sum of the "
        f"per-layer noises predicts {sens['sqnr_all_additive_estimate_db']:.2f} dB",
    ]
    if im.get("lpips_all") is not None:
        lines.append(
            f"- image LPIPS vs FP32, all quantized (simulated): {im['lpips_all']:.4f} over "
            f"{len(im['prompts'])} prompt(s), {im['steps']} steps"
            + (f" (images upsampled to {im['upsampled_to']} px for LPIPS)" if im.get("upsampled_to") else "")
        )
    lines += [
        "",
        "## Layers, most sensitive first (simulated)",
        "",
        "| rank | layer | type | precision | params | SQNR only (dB) | SQNR all but (dB) | gain (dB) | "
        "LPIPS only | " + " | ".join(f"SQNR {p}" for p in alt) + " |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(alt),
    ]
    for r in sens["layers"]:
        by_p = r["sqnr_only_db_by_precision"]
        lines.append(
            f"| {r['rank']} | `{r['name']}` | {r['type']} | {r['precision']} | {r['params']} | "
            f"{r['sqnr_only_db']:.2f} | {r['sqnr_all_but_db']:.2f} | {r['gain_db']:+.2f} | "
            f"{_f(r['lpips_only'], 4)} | " + " | ".join(_f(by_p.get(p)) for p in alt) + " |"
        )
    lines += [
        "",
        "## By layer type (simulated)",
        "",
        "| type | layers | params | mean SQNR only (dB) | min SQNR only (dB) | mean gain (dB) | noise share | "
        "most sensitive |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind, a in sens["by_type"].items():
        lines.append(
            f"| {kind} | {a['layers']} | {a['params']} | {a['mean_sqnr_only_db']:.2f} | "
            f"{a['min_sqnr_only_db']:.2f} | {a['mean_gain_db']:+.2f} | {100 * a['noise_share']:.1f}% | "
            f"`{a['most_sensitive']}` |"
        )
    lines += [
        "",
        "SQNR only: only this layer fake-quantized; SQNR all but: every other layer fake-quantized; "
        "gain: SQNR all but minus SQNR all quantized; noise share: the type's part of the summed per-layer "
        "noise powers.",
    ]
    if sens.get("timing"):
        t = sens["timing"]
        lines.append(
            f"Per-layer latencies in sensitivity.json are MEASURED ({t['reps']} reps, {t['threads']} "
            f"threads, {t['device']}); FP32 image: {t['image_s_fp32']:.3f} s."
        )
    return "\n".join(lines) + "\n"


def plot_by_type(sens: dict[str, Any], path: str | Path) -> None:
    """Bar plot by layer type: mean / min SQNR with only that layer quantized, and share of the noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffusia.fileio import atomic_path

    kinds = list(sens["by_type"])
    a = [sens["by_type"][k] for k in kinds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(kinds) + 2.2), sharey=True)
    y = range(len(kinds))
    ax1.barh([i + 0.2 for i in y], [x["mean_sqnr_only_db"] for x in a], height=0.4, label="mean")
    ax1.barh([i - 0.2 for i in y], [x["min_sqnr_only_db"] for x in a], height=0.4, label="min (most sensitive)")
    ax1.set_yticks(list(y), [f"{k} ({x['layers']})" for k, x in zip(kinds, a)])
    ax1.invert_yaxis()
    ax1.set_xlabel("SQNR, only this layer quantized (dB, higher = less sensitive)")
    ax1.legend(fontsize=8)
    ax2.barh(list(y), [100 * x["noise_share"] for x in a], color="tab:red")
    ax2.set_xlabel("share of summed per-layer noise (%)")
    fig.suptitle(
        f"SIMULATED sensitivity by layer type - {sens.get('model')}, recipe {sens['recipe']['name']}, "
        f"all quantized {sens['sqnr_all_db']:.1f} dB",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_sensitivity(sens: dict[str, Any], out_dir: str | Path) -> Path:
    """Write sensitivity.json, sensitivity.md and sensitivity_by_type.png into `out_dir`."""
    from diffusia.fileio import write_json, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sensitivity.json", sens)
    write_text(out / "sensitivity.md", to_markdown(sens))
    plot_by_type(sens, out / "sensitivity_by_type.png")
    return out


def load_sensitivity(path: str | Path) -> dict[str, Any]:
    """Read sensitivity.json (a file or the folder holding it)."""
    from diffusia.fileio import read_json_file

    p, data = read_json_file(path, "sensitivity.json", "run `diffusia sensitivity --out DIR` first")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise DiffusiaError(f"{p} is not a diffusia sensitivity file (format {FORMAT!r} version {VERSION})")
    return data
