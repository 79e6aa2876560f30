"""Pareto fronts of quality (LPIPS, SSIM, Frechet distance vs FP32) against cost (size, latency, peak memory)
over the variants of many evaluation runs; scatter plots with the front highlighted and a Markdown table.

Simulated (fake-quant) variants never enter a latency, throughput or peak-memory front: their speed and memory
are those of the float model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusia.analysis.results import VariantResult
from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)

QUALITY: tuple[tuple[str, str], ...] = (("lpips", "min"), ("ssim", "max"), ("fd", "min"))
COSTS: tuple[tuple[str, str], ...] = (("size_mb", "min"), ("latency_s", "min"), ("peak_mb", "min"))
MEASURED_ONLY = frozenset({"latency_s", "throughput", "peak_mb"})  # simulated variants are never on these fronts
LABELS = {
    "lpips": "LPIPS vs FP32 (lower better)",
    "ssim": "SSIM vs FP32 (higher better)",
    "fd": "Frechet distance (lower better)",
    "size_mb": "U-Net size (MB)",
    "latency_s": "latency (s/image)",
    "peak_mb": "peak memory (MB)",
    "throughput": "throughput (images/s)",
    "psnr": "PSNR (dB)",
}


def _get(p: Any, key: str) -> Any:
    return p.get(key) if isinstance(p, dict) else getattr(p, key, None)


def _eligible(p: Any, objectives: Sequence[tuple[str, str]]) -> bool:
    if any(_get(p, k) is None for k, _ in objectives):
        return False
    return not (_get(p, "simulated") and any(k in MEASURED_ONLY for k, _ in objectives))


def dominates(a: Any, b: Any, objectives: Sequence[tuple[str, str]]) -> bool:
    """a is no worse than b in every objective and better in at least one."""
    better = False
    for k, sense in objectives:
        x, y = float(_get(a, k)), float(_get(b, k))
        if sense == "max":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def pareto_front(
    points: Sequence[Any], objectives: Sequence[tuple[str, str]] = (("lpips", "min"), ("size_mb", "min"))
) -> list[Any]:
    """The non-dominated points (input order) for `objectives` [(attribute, "min" | "max")].

    Points (VariantResult or dicts) missing an objective are skipped; simulated points are skipped when an
    objective is latency, throughput or peak memory. Points with identical values are all kept."""
    for k, sense in objectives:
        if sense not in ("min", "max"):
            raise ValueError(f"objective {k!r}: sense must be 'min' or 'max', got {sense!r}")
    pool = [p for p in points if _eligible(p, objectives)]
    return [p for p in pool if not any(dominates(q, p, objectives) for q in pool if q is not p)]


def all_fronts(variants: Sequence[VariantResult]) -> dict[str, list[str]]:
    """Variant names on each (quality x cost) front with data, keyed `cost:quality`, plus `all` (every quality
    and cost objective some measured variant has; variants missing one of them are not on it)."""
    fronts: dict[str, list[str]] = {}
    for c, cs in COSTS:
        for q, qs in QUALITY:
            if any(_eligible(v, [(c, cs), (q, qs)]) for v in variants):
                fronts[f"{c}:{q}"] = [v.name for v in pareto_front(variants, [(c, cs), (q, qs)])]
    measured = [v for v in variants if not v.simulated]
    objs = [(k, s) for k, s in QUALITY + COSTS if any(_get(v, k) is not None for v in measured)]
    if objs:
        fronts["all"] = [v.name for v in pareto_front(variants, objs)]
    return fronts


def _fmt(x: float | None, d: int = 3) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def to_markdown(variants: Sequence[VariantResult], fronts: dict[str, list[str]]) -> str:
    """A table of every variant with its numbers and the fronts it is on."""
    lines = [
        "# Pareto fronts: quality vs size, latency, peak memory",
        "",
        "Quality is measured against the FP32 pipeline's images. SIMULATED variants (fake quantization) are "
        "never on a latency or peak-memory front.",
        "",
        "| variant | simulated | size MB | peak MB | latency s/img | LPIPS | SSIM | FD | fronts |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v in variants:
        on = [k.replace(":", " x ") for k, names in fronts.items() if v.name in names]
        lines.append(
            f"| {v.name} | {'yes' if v.simulated else 'no'} | {_fmt(v.size_mb, 1)} | {_fmt(v.peak_mb, 0)} | "
            f"{_fmt(v.latency_s)} | {_fmt(v.lpips, 4)} | {_fmt(v.ssim, 4)} | {_fmt(v.fd, 2)} | "
            f"{', '.join(on) or '-'} |"
        )
    lines += ["", "## Fronts", ""]
    for k, names in fronts.items():
        lines.append(f"- **{k.replace(':', ' x ')}**: {', '.join(names) or '(none)'}")
    return "\n".join(lines) + "\n"


def plot_fronts(variants: Sequence[VariantResult], out_dir: str | Path) -> list[Path]:
    """One PNG per cost (size, latency, peak memory): a panel per quality metric with data; the front in red,
    joined by a step line, simulated variants hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffusia.fileio import atomic_path

    written = []
    for c, cs in COSTS:
        panels = [
            (q, qs) for q, qs in QUALITY if any(_get(v, c) is not None and _get(v, q) is not None for v in variants)
        ]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
        for ax, (q, qs) in zip(axes[0], panels):
            pts = [v for v in variants if _get(v, c) is not None and _get(v, q) is not None]
            front = pareto_front(pts, [(c, cs), (q, qs)])
            ids = {id(v) for v in front}
            for v in pts:
                on, sim = id(v) in ids, v.simulated
                ax.scatter(
                    _get(v, c),
                    _get(v, q),
                    s=60 if on else 30,
                    zorder=3,
                    facecolors="none" if sim else ("tab:red" if on else "tab:blue"),
                    edgecolors="tab:red" if on else ("gray" if sim else "tab:blue"),
                    marker="s" if sim else "o",
                )
                ax.annotate(
                    v.label if sim else v.name,
                    (_get(v, c), _get(v, q)),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
            if len(front) > 1:
                f = sorted(front, key=lambda v: _get(v, c))
                ax.step(
                    [_get(v, c) for v in f],
                    [_get(v, q) for v in f],
                    where="post",
                    color="tab:red",
                    lw=1,
                    alpha=0.7,
                    zorder=2,
                )
            ax.set_xlabel(LABELS[c])
            ax.set_ylabel(LABELS[q])
            ax.grid(alpha=0.3)
        note = " (simulated variants excluded from the front)" if c in MEASURED_ONLY else ""
        fig.suptitle(f"Pareto front: quality vs {LABELS[c]}{note}", fontsize=10)
        fig.tight_layout()
        path = Path(out_dir) / f"pareto_{c}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def write_pareto(variants: Sequence[VariantResult], out_dir: str | Path) -> dict[str, Any]:
    """pareto.json, pareto.md and the PNGs in `out_dir`; returns the JSON dict."""
    from diffusia.fileio import write_json, write_text

    if not variants:
        raise DiffusiaError("no variants to analyse: pass evaluation run folders with --results")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fronts = all_fronts(variants)
    pngs = plot_fronts(variants, out)
    data = {
        "format": "diffusia.pareto",
        "version": 1,
        "fronts": fronts,
        "variants": [v.to_dict() for v in variants],
        "plots": [p.name for p in pngs],
        "note": "simulated variants are never on latency, throughput or peak-memory fronts",
    }
    write_json(out / "pareto.json", data)
    write_text(out / "pareto.md", to_markdown(variants, fronts))
    return data
