"""What the analyses consume from evaluation runs: one `VariantResult` per variant of a results.json.

The loader is tolerant about field names (the evaluation harness may nest metrics or name them with units) and
never invents a number: a missing field is None and the analyses skip it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffusia.errors import DiffusiaError
from diffusia.fileio import read_json_file

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"

# field -> accepted keys (first found wins), looked up in the variant dict and in its nested metric dicts
_ALIASES: dict[str, tuple[str, ...]] = {
    "size_mb": ("size_mb", "unet_size_mb", "unet_mb", "unet_size", "size"),
    "pipeline_size_mb": ("pipeline_size_mb", "pipeline_mb", "pipeline_size"),
    "peak_mb": ("peak_mb", "peak_memory_mb", "peak_rss_mb", "peak_mem_mb", "peak_memory"),
    "latency_s": ("latency_s", "latency_s_per_image", "seconds_per_image", "s_per_image", "latency"),
    "throughput": ("throughput", "throughput_images_per_s", "images_per_s", "throughput_img_s"),
    "lpips": ("lpips", "lpips_vs_fp32", "lpips_alex"),
    "ssim": ("ssim", "ssim_vs_fp32"),
    "psnr": ("psnr", "psnr_db", "psnr_vs_fp32"),
    "fd": ("fd", "frechet", "frechet_distance", "fid", "fd_vs_fp32", "fd_effnet", "fd_inception"),
    "precision": ("precision", "weights", "recipe_name"),
    "device": ("device",),
}
_NESTED = ("metrics", "quality", "speed", "memory", "size", "perf", "performance", "recipe")


@dataclass
class VariantResult:
    """One evaluated variant. Numbers are None when the run did not measure them; `simulated` marks fake-quant
    (float) results whose speed, memory and size say nothing about the real kernels."""

    name: str
    size_mb: float | None = None
    peak_mb: float | None = None
    latency_s: float | None = None  # median s/image
    lpips: float | None = None
    ssim: float | None = None
    fd: float | None = None
    simulated: bool = False
    note: str = ""
    psnr: float | None = None
    throughput: float | None = None
    pipeline_size_mb: float | None = None
    precision: str | None = None
    device: str | None = None
    run: str | None = None  # source results.json
    latency_q1_s: float | None = None  # interquartile range of the latency runs, where measured
    latency_q3_s: float | None = None

    @property
    def label(self) -> str:
        return f"{self.name} (SIMULATED)" if self.simulated else self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, Mapping):  # e.g. {"mean": 0.1, "std": ...} or {"value": ...}
        for k in ("mean", "value", "median"):
            if k in v:
                return _num(v[k])
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None  # NaN -> None


def _lookup(d: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    for nest in _NESTED:
        sub = d.get(nest)
        if isinstance(sub, Mapping):
            for k in keys:
                if k in sub and sub[k] is not None:
                    return sub[k]
    return None


def variant_from_dict(
    d: Mapping[str, Any], name: str | None = None, run: str | None = None, defaults: Mapping[str, Any] | None = None
) -> VariantResult:
    """A VariantResult from one variant record (aliases and nesting tolerated)."""
    defaults = defaults or {}
    nm = name or d.get("name") or d.get("variant") or d.get("label")
    if not nm:
        raise DiffusiaError(f"a variant in {run or 'results'} has no name")
    values: dict[str, Any] = {}
    for f, keys in _ALIASES.items():
        v = _lookup(d, keys)
        if f in ("precision", "device"):
            values[f] = v if isinstance(v, str) else (None if v is None else str(v))
        else:
            values[f] = _num(v)
    if values["device"] is None and isinstance(defaults.get("device"), str):
        values["device"] = defaults["device"]
    mode = str(d.get("mode", "")).lower()
    simulated = bool(d.get("simulated", False)) or mode in ("fake", "simulated")
    note = d.get("note") or ""
    return VariantResult(name=str(nm), simulated=simulated, note=str(note), run=run, **values)


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def is_harness_results(data: Any) -> bool:
    """True for the results.json of `diffusia.eval.harness.evaluate` (config + variants by name + quality)."""
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("config"), Mapping)
        and isinstance(data.get("variants"), Mapping)
        and all(isinstance(v, Mapping) and "size" in v for v in data["variants"].values())
    )


def from_harness(data: Mapping[str, Any], run: str | None = None) -> list[VariantResult]:
    """VariantResults from the evaluation harness' results.json: U-Net MB on disk, peak memory of a fresh
    process, median end-to-end s/image with its quartiles, and mean SSIM / LPIPS / PSNR / Frechet distance vs the FP32 images."""
    cfg, machine = data.get("config", {}), data.get("machine") or {}
    device = str(cfg.get("device") or "")
    if device.startswith("cpu") and machine.get("cpu_model"):
        device = f"{device} ({machine['cpu_model']}, {cfg.get('threads') or machine.get('torch_threads')} threads)"
    elif machine.get("cuda"):
        device = f"{device} ({machine['cuda']})"
    quality = _dig(data, "quality", "variants") or {}
    out = []
    for name, v in data["variants"].items():
        q = quality.get(name) or {}
        kind = v.get("kind")
        precision = {"fp32": "fp32", "dtype": v.get("dtype"), "storage": name, "preset": name}.get(kind)
        iph = _num(_dig(v, "latency", "images_per_hour"))
        out.append(
            VariantResult(
                name=str(name),
                size_mb=_num(_dig(v, "size", "unet_mb")),
                peak_mb=_num(_dig(v, "memory", "peak_mb")),
                latency_s=_num(_dig(v, "latency", "end_to_end", "median") or _dig(v, "latency", "end_to_end", "mean")),
                latency_q1_s=_num(_dig(v, "latency", "end_to_end", "q1")),
                latency_q3_s=_num(_dig(v, "latency", "end_to_end", "q3")),
                lpips=_num(_dig(q, "overall", "lpips")),
                ssim=_num(_dig(q, "overall", "ssim")),
                fd=_num(q.get("fd_vs_reference")),
                simulated=bool(v.get("simulated", False)),
                note=str(v.get("description") or ""),
                psnr=_num(_dig(q, "overall", "psnr")),
                throughput=None if iph is None else iph / 3600.0,
                pipeline_size_mb=_num(_dig(v, "size", "pipeline_mb")),
                precision=precision,
                device=device or None,
                run=run,
            )
        )
    return out


def load_results(path: str | Path) -> list[VariantResult]:
    """Variants of one evaluation run: a results.json file or the folder holding it.

    Reads the evaluation harness' format (`from_harness`); otherwise accepts {"variants": [...]} /
    {"variants": {name: {...}}} / {"results": ...} / a bare list of flat or nested records."""
    p, data = read_json_file(path, RESULTS_FILE, "run the evaluation first (or pass the run folder)")
    if is_harness_results(data):
        out = from_harness(data, run=str(p.parent))
        if not out:
            raise DiffusiaError(f"{p} lists no variants")
        return out
    defaults: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for k in ("device", "machine", "hardware"):
            if isinstance(data.get(k), str):
                defaults["device"] = data[k]
                break
        records = data.get("variants", data.get("results"))
    else:
        records = data
    run = str(p.parent)
    if isinstance(records, Mapping):
        out = [variant_from_dict(v, name=k, run=run, defaults=defaults) for k, v in records.items()]
    elif isinstance(records, list):
        out = [variant_from_dict(v, run=run, defaults=defaults) for v in records]
    else:
        raise DiffusiaError(f"{p} has no list of variants (expected a 'variants' list or mapping)")
    if not out:
        raise DiffusiaError(f"{p} lists no variants")
    return out


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """results.json files: each path is a file, a run folder, or a folder searched recursively."""
    found: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_file():
            found.append(p)
        elif (p / RESULTS_FILE).is_file():
            found.append(p / RESULTS_FILE)
        elif p.is_dir():
            hits = sorted(p.rglob(RESULTS_FILE))
            if not hits:
                raise DiffusiaError(f"no {RESULTS_FILE} under {p}")
            found.extend(hits)
        else:
            raise DiffusiaError(f"{p} does not exist: pass evaluation run folders or results.json files")
    return list(dict.fromkeys(found))


def load_many(paths: Iterable[str | Path]) -> list[VariantResult]:
    """Variants of several runs; names that repeat across runs are prefixed with the run folder name."""
    runs = [load_results(f) for f in find_results(paths)]
    variants = [v for run in runs for v in run]
    counts: dict[str, int] = {}
    for v in variants:
        counts[v.name] = counts.get(v.name, 0) + 1
    if len(runs) > 1:
        for v in variants:
            if counts[v.name] > 1 and v.run:
                v.name = f"{Path(v.run).name}/{v.name}"
    return variants
