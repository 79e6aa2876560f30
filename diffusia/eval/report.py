"""results.json and report.md (tables I-IV of the reference study, per-category quality, notes) and the
image grid (rows: variants, columns: prompts)."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from diffusia import versions
from diffusia.fileio import atomic_path, write_json, write_text

PACKAGES = (
    "diffusia",
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "numpy",
    "scipy",
    "pillow",
    "matplotlib",
    "lpips",
    "efficientnet-lite-pytorch",
)
MB = 2**20


def package_versions() -> dict[str, str]:
    return versions.package_versions(PACKAGES)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and version, memory, load: what the latency numbers depend on."""
    import torch

    try:
        from diffusia.quant.cpu import cpu_model

        cpu = cpu_model()
    except ImportError:
        cpu = platform.processor() or platform.machine()
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except (OSError, ValueError, AttributeError):
        pass
    return info


def _loads(loads: list) -> str:
    """ "1.2 before, 1.9 after" from [[1m, 5m, 15m] before, [...] after]."""
    parts = [f"{x[0]:.2f} {when}" for x, when in zip(loads, ("before", "after")) if x]
    return ", ".join(parts)


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones, so results.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, int):
        return str(x)
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000" from round-off


def _text_encoders_median(comp: dict) -> float | None:
    """Per-image text-encoding time: the text encoder's, plus SDXL's second encoder's."""
    medians = [
        comp[k]["median"] for k in ("text_encoder", "text_encoder_2") if comp.get(k, {}).get("median") is not None
    ]
    return sum(medians) if medians else None


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1000:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ]


def render_markdown(res: dict[str, Any]) -> str:
    """The report: configuration, tables I-IV, per-category quality, grid and notes."""
    cfg, variants, mach = res["config"], res["variants"], res["machine"]
    names = list(variants)
    lines = [
        f"# Evaluation: {cfg['model_label']}",
        "",
        f"{cfg['num']} images per variant ({len({j['prompt'] for j in res['jobs']})} distinct prompts from `{cfg['prompts']}`, "
        f"seeds {cfg['seed_range'][0]}-{cfg['seed_range'][1]}), DPM-Solver multistep {cfg['steps']} steps, "
        f"guidance {cfg['guidance']}, batch 1, device `{cfg['device']}`. "
        f"Machine: {mach['cpu_model']}, {mach['cpu_cores']} cores, torch {mach['torch']} with "
        f"{cfg['threads']} threads" + (f", load average {mach['loadavg'][0]}" if mach.get("loadavg") else "") + ".",
        "",
    ]
    graphs = any("runtime_graph_mb" in variants[n]["size"] for n in names)
    lines += ["## I. Model size", "", "Bytes on disk of each variant's folder; MB = 2^20 bytes."]
    if graphs:
        lines[-1] += (
            " U-Net graph MB: the exported graph the U-Net ran on its runtime (every timestep group; it is saved "
            "in the folder beside the PyTorch weights, so Pipeline MB counts both; - where it was exported at load)."
        )
    lines += [""]
    rows = []
    for n in names:
        s = variants[n]["size"]
        graph = [_f(s["runtime_graph_mb"], 2) if "runtime_graph_mb" in s else "-"] if graphs else []
        rows.append(
            [
                n,
                _f(s["unet_mb"], 2),
                _pct(s.get("unet_change_pct")),
                *graph,
                _f(s["pipeline_mb"], 2),
                _pct(s.get("pipeline_change_pct")),
            ]
        )
    graph_head = ["U-Net graph MB"] if graphs else []
    lines += _table(["Variant", "U-Net MB", "vs FP32", *graph_head, "Pipeline MB", "vs FP32"], rows)

    budget = cfg["budget_mb"]
    lines += [
        "## II. Peak memory",
        "",
        f"Growth of the {'CUDA allocation' if cfg['device'].startswith('cuda') else 'resident set (VmHWM)'} "
        "of a fresh process per variant over its baseline after imports"
        f"{'' if cfg['device'].startswith('cuda') else ', the imported libraries wholly resident'}; "
        f"budget {_f(budget, 0)} MB.",
        "",
    ]
    rows = []
    for n in names:
        m = variants[n].get("memory", {})
        rows.append([n, _f(m.get("peak_load_mb"), 1), _f(m.get("peak_mb"), 1), _f(m.get("percent_of_budget"), 1)])
    lines += _table(["Variant", "Peak after load MB", "Peak MB (load + generation)", "% of budget"], rows)

    lat0 = next((variants[n]["latency"] for n in names if variants[n].get("latency")), None) or {}
    loads = lat0.get("load_average") or []
    lines += [
        "## III. Latency and throughput",
        "",
        f"Seconds per image end to end (text encoding, {cfg['steps']} denoising steps, VAE decode) at batch 1: "
        f"median and interquartile range (q1-q3) of {cfg['runs']} timed runs per variant after "
        f"{cfg['warmup']} warm-up, the variants interleaved round by round in one process, device "
        f"synchronised; U-Net step = one U-Net forward (both guidance branches); threads {cfg['threads']}"
        + (f"; load average {_loads(loads)}" if loads else "")
        + ". A difference inside the interquartile "
        "ranges is not a measured speedup.",
        "",
    ]
    rows = []
    for n in names:
        lat = variants[n].get("latency")
        if not lat:
            rows.append([n] + ["-"] * 7)
            continue
        e, u, comp = lat["end_to_end"], lat["unet_step"], lat["components_per_image"]
        iqr = "-" if "-" in (_f(e.get("q1")), _f(e.get("q3"))) else f"{_f(e['q1'])}-{_f(e['q3'])}"
        rows.append(
            [
                n,
                _f(e.get("median")),
                iqr,
                str(e["n"]),
                _ms(u.get("median")),
                _ms(_text_encoders_median(comp)),
                _ms(comp.get("vae_decode", {}).get("median")),
                _f(lat["images_per_hour"], 0),
            ]
        )
    lines += _table(
        [
            "Variant",
            "s/image (median)",
            "IQR s",
            "n",
            "U-Net step ms (median)",
            "Text enc. ms/image",
            "VAE decode ms",
            "Images/hour",
        ],
        rows,
    )

    q = res.get("quality")
    if q:
        fd = q.get("fd_name")
        lines += [
            "## IV. Quality vs FP32",
            "",
            f"Each image against the FP32 image of the same prompt and seed (8-bit PNGs), mean over "
            f"{q['images']} images; PSNR capped at {q['psnr_cap_db']:.0f} dB for identical images."
            + (
                f" {fd}: Frechet distance on {'InceptionV3 pool3' if fd == 'FID' else 'EfficientNet-Lite0'} "
                "features" + ("" if fd == "FID" else ", not comparable with published FID") + "."
                if fd
                else ""
            ),
            "",
        ]
        header = ["Variant", "SSIM ↑", "LPIPS ↓", "PSNR dB ↑"]
        if fd:
            header.append(f"{fd} vs FP32 ↓")
            if "real_images" in q:
                header.append(f"{fd} vs {res.get('real_set', 'real images')} ↓")
        rows = []
        for n, row in q["variants"].items():
            o = row["overall"]
            r = [n, _f(o["ssim"]["mean"], 4), _f(o.get("lpips", {}).get("mean"), 4), _f(o["psnr"]["mean"], 2)]
            if fd:
                r.append(_f(row.get("fd_vs_reference"), 3))
                if "real_images" in q:
                    r.append(_f(row.get("fd_vs_real"), 3))
            rows.append(r)
        lines += _table(header, rows)
        lines += ["### Quality per prompt category", ""]
        rows = []
        for n, row in q["variants"].items():
            for cat, m in row["per_category"].items():
                rows.append(
                    [
                        n,
                        cat,
                        str(m["ssim"]["n"]),
                        _f(m["ssim"]["mean"], 4),
                        _f(m.get("lpips", {}).get("mean"), 4),
                        _f(m["psnr"]["mean"], 2),
                    ]
                )
        lines += _table(["Variant", "Category", "n", "SSIM ↑", "LPIPS ↓", "PSNR dB ↑"], rows)
    if res.get("grid"):
        lines += [
            "## Images",
            "",
            f"Rows: variants; columns: prompts (seed {cfg['seed']}).",
            "",
            f"![grid]({res['grid']})",
            "",
        ]
    if res.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in res["notes"]], ""]
    lines += [f"Packages: {', '.join(f'{k} {v}' for k, v in res['packages'].items())}.", ""]
    return "\n".join(lines)


def save_grid(rows: dict[str, np.ndarray], titles: list[str], path: str | Path) -> Path:
    """A PNG grid: one row per variant (label on the left), one column per prompt (title on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, cols = list(rows), len(titles)
    fig, axes = plt.subplots(len(names), cols, figsize=(1.4 * cols + 0.6, 1.4 * len(names) + 0.5), squeeze=False)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(np.clip(rows[name][c], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c] if len(titles[c]) <= 28 else titles[c][:26] + "…", fontsize=6)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(res: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write results.json and report.md atomically into `out`."""
    out = Path(out)
    safe = json_safe(res)
    write_json(out / "results.json", safe)
    write_text(out / "report.md", render_markdown(safe))
    return out / "results.json", out / "report.md"
