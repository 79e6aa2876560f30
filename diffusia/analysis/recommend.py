"""Pick the best MEASURED variant for a device profile and explain the choice with the measured numbers; a
device-class report (phone, laptop GPU, workstation) including when quantization does not pay.

Every sentence is built from the results: nothing about a variant is asserted that its numbers do not show.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from diffusia.analysis.results import VariantResult

log = logging.getLogger(__name__)

# metric -> (sense, label); the first metric that every candidate has ranks quality
QUALITY_ORDER: tuple[tuple[str, str, str], ...] = (
    ("lpips", "min", "LPIPS vs FP32"),
    ("ssim", "max", "SSIM vs FP32"),
    ("fd", "min", "Frechet distance"),
)


@dataclass(frozen=True)
class DeviceClass:
    name: str
    memory_mb: tuple[float, float]  # (low, high) end of the budget

    def budgets(self) -> list[float]:
        lo, hi = self.memory_mb
        return [lo] if lo == hi else [lo, hi]


DEVICE_CLASSES = (
    DeviceClass("phone-class (2-4 GB)", (2048.0, 4096.0)),
    DeviceClass("laptop GPU (4-8 GB)", (4096.0, 8192.0)),
    DeviceClass("workstation (24 GB)", (24576.0, 24576.0)),
)


@dataclass
class Recommendation:
    """The chosen variant (None when nothing fits), the paragraph that explains it, and why others lost."""

    variant: VariantResult | None
    reason: str
    memory_mb: float
    latency_s: float | None = None
    metric: str | None = None
    candidates: list[str] = field(default_factory=list)  # fit the memory and the latency
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        return None if self.variant is None else self.variant.name


def _mb(x: float | None) -> str:
    return "?" if x is None else (f"{x / 1024:.2f} GB" if x >= 1024 else f"{x:.1f} MB")


def _s(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g} s/image"


def _q(v: VariantResult) -> str:
    parts = []
    for k, _, label in QUALITY_ORDER:
        x = getattr(v, k)
        if x is not None:
            parts.append(f"{label} {x:.4g}")
    return ", ".join(parts) if parts else "no quality measurement"


def compare_latency(a: VariantResult, b: VariantResult) -> str | None:
    """ "faster" / "slower" if a's latency differs from b's beyond the runs' spread (interquartile ranges apart),
    "same" if the ranges overlap, "unknown" where a spread was not measured (too few runs), None without a
    latency: a speedup is never claimed from single figures."""
    if a.latency_s is None or b.latency_s is None:
        return None
    if None in (a.latency_q1_s, a.latency_q3_s, b.latency_q1_s, b.latency_q3_s):
        return "unknown"
    if a.latency_q3_s < b.latency_q1_s:
        return "faster"
    return "slower" if a.latency_q1_s > b.latency_q3_s else "same"


def _iqr(v: VariantResult) -> str:
    return "" if v.latency_q1_s is None else f", IQR {v.latency_q1_s:.3g}-{v.latency_q3_s:.3g}"


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def _metric(vs: Sequence[VariantResult]) -> tuple[str, str, str] | None:
    for k, sense, label in QUALITY_ORDER:
        if vs and all(getattr(v, k) is not None for v in vs):
            return k, sense, label
    return None


def _rank_key(metric: tuple[str, str, str] | None):
    def key(v: VariantResult) -> tuple:
        q = 0.0 if metric is None else float(getattr(v, metric[0])) * (1 if metric[1] == "min" else -1)
        return (
            q,
            v.size_mb if v.size_mb is not None else float("inf"),
            v.latency_s if v.latency_s is not None else float("inf"),
            v.name,
        )

    return key


def recommend(
    results: Sequence[VariantResult], memory_mb: float, latency_s: float | None = None, quality_tolerance: float = 0.0
) -> Recommendation:
    """Best measured variant whose peak memory fits `memory_mb` and whose latency meets `latency_s`.

    Best = best quality (LPIPS, else SSIM, else Frechet distance - the first all candidates have); variants within
    `quality_tolerance` of the best count as tied and the smaller, then faster, one wins. Simulated variants and
    variants without a peak-memory (or, with a latency limit, latency) measurement are not eligible."""
    rejected: dict[str, str] = {}
    measured = []
    for v in results:
        if v.simulated:
            rejected[v.name] = "simulated (fake quantization): speed and memory not measured on real kernels"
        elif v.peak_mb is None:
            rejected[v.name] = "peak memory not measured"
        elif latency_s is not None and v.latency_s is None:
            rejected[v.name] = "latency not measured"
        else:
            measured.append(v)
    fits = [v for v in measured if v.peak_mb <= memory_mb]
    for v in measured:
        if v.peak_mb > memory_mb:
            rejected[v.name] = f"peak memory {_mb(v.peak_mb)} > {_mb(memory_mb)}"
    ok = [v for v in fits if latency_s is None or v.latency_s <= latency_s]
    for v in fits:
        if latency_s is not None and v.latency_s > latency_s:
            rejected[v.name] = f"latency {_s(v.latency_s)} > {_s(latency_s)}"
    limit = f"{_mb(memory_mb)} of memory" + (f" and {_s(latency_s)}" if latency_s is not None else "")
    n_sim = sum(v.simulated for v in results)
    sim_note = f" {n_sim} simulated variant(s) were not considered." if n_sim else ""
    if not measured:
        return Recommendation(
            None,
            f"No variant can be recommended for {limit}: none of the {len(results)} "
            f"variant(s) has a measured peak memory{' and latency' if latency_s else ''}." + sim_note,
            memory_mb,
            latency_s,
            rejected=rejected,
        )
    if not fits:
        low = min(measured, key=lambda v: v.peak_mb)
        return Recommendation(
            None,
            f"No measured variant fits {_mb(memory_mb)}: the smallest measured peak memory "
            f"is {_mb(low.peak_mb)} ({low.name}), {_mb(low.peak_mb - memory_mb)} over the "
            f"budget, among {len(measured)} measured variant(s).{sim_note}",
            memory_mb,
            latency_s,
            rejected=rejected,
        )
    if not ok:
        fast = min(fits, key=lambda v: v.latency_s)
        return Recommendation(
            None,
            f"{len(fits)} measured variant(s) fit {_mb(memory_mb)} but none meets "
            f"{_s(latency_s)}: the fastest of them, {fast.name}, takes {_s(fast.latency_s)} "
            f"({fast.latency_s / latency_s:.2f}x the limit).{sim_note}",
            memory_mb,
            latency_s,
            rejected=rejected,
        )
    metric = _metric(ok)
    ranked = sorted(ok, key=_rank_key(metric))
    best_q = ranked[0]
    if metric is not None and quality_tolerance > 0:
        sign = 1 if metric[1] == "min" else -1
        tied = [v for v in ok if sign * (getattr(v, metric[0]) - getattr(best_q, metric[0])) <= quality_tolerance]
        choice = min(
            tied,
            key=lambda v: (
                v.size_mb if v.size_mb is not None else float("inf"),
                v.latency_s if v.latency_s is not None else float("inf"),
                v.name,
            ),
        )
    else:
        choice = best_q
    parts = [
        f"For {limit}, the recommended variant is {choice.name}: measured peak memory {_mb(choice.peak_mb)} "
        f"({100 * choice.peak_mb / memory_mb:.0f}% of the budget), latency {_s(choice.latency_s)}, U-Net size "
        f"{_mb(choice.size_mb)}, {_q(choice)}."
    ]
    parts.append(
        f"Of {len(measured)} measured variant(s), {_count(len(fits), 'fits', 'fit')} the memory"
        + (f" and {_count(len(ok), 'meets', 'meet')} {_s(latency_s)}." if latency_s is not None else ".")
    )
    if metric is None:
        parts.append("No quality metric is shared by all candidates, so the smallest, then fastest, was chosen.")
    else:
        k, sense, label = metric
        if len(ok) == 1:
            parts.append("It is the only one that does.")
        elif choice is best_q:
            parts.append(
                f"It has the {'lowest' if sense == 'min' else 'highest'} {label} of those ({getattr(choice, k):.4g})."
            )
        else:
            why = []
            if choice.size_mb is not None and best_q.size_mb is not None and choice.size_mb < best_q.size_mb:
                why.append(f"smaller ({_mb(choice.size_mb)} vs {_mb(best_q.size_mb)})")
            if compare_latency(choice, best_q) == "faster":
                why.append(f"faster ({_s(choice.latency_s)} vs {_s(best_q.latency_s)})")
            parts.append(
                f"Its {label} ({getattr(choice, k):.4g}) is within {quality_tolerance:g} of the best, "
                f"{best_q.name} ({getattr(best_q, k):.4g}), and it is {' and '.join(why) or 'no worse'}."
            )
        others = [v for v in ranked if v is not choice]
        if others:
            nxt = others[0]
            d = getattr(nxt, k) - getattr(choice, k)
            save = []
            if nxt.size_mb is not None and choice.size_mb is not None and nxt.size_mb < choice.size_mb:
                save.append(f"{_mb(choice.size_mb - nxt.size_mb)} of size")
            if compare_latency(nxt, choice) == "faster":
                save.append(f"{choice.latency_s - nxt.latency_s:.3g} s/image")
            parts.append(
                f"The runner-up, {nxt.name}, has {label} {getattr(nxt, k):.4g} ({d:+.4g})"
                + (f" and would save {' and '.join(save)}." if save else ".")
            )
    text = " ".join(parts) + sim_note
    return Recommendation(
        choice, text, memory_mb, latency_s, metric[0] if metric else None, [v.name for v in ok], rejected
    )


def _is_fp32(v: VariantResult) -> bool:
    return (v.precision or "").lower() in ("fp32", "float32") or v.name.lower() in ("fp32", "float32")


def _is_half(v: VariantResult) -> bool:
    half = ("fp16", "float16", "bf16", "bfloat16")
    return (v.precision or "").lower() in half or v.name.lower() in half


def quantization_verdicts(results: Sequence[VariantResult], memory_mb: float) -> list[str]:
    """Sentences on whether quantization pays at `memory_mb`, comparing measured variants with measured FP32."""
    measured = [v for v in results if not v.simulated and v.peak_mb is not None]
    ref = next((v for v in measured if _is_fp32(v)), None)
    if ref is None or ref.latency_s is None:
        return []
    out = []
    if ref.peak_mb > memory_mb:
        smaller = [v for v in measured if v.peak_mb <= memory_mb]
        if smaller:
            out.append(
                f"FP32 does not fit ({_mb(ref.peak_mb)} > {_mb(memory_mb)}); "
                f"{', '.join(v.name for v in smaller)} do{'es' if len(smaller) == 1 else ''}: here reduced "
                f"precision is what makes the model run at all."
            )
        return out
    for v in measured:
        if v is ref or v.latency_s is None:
            continue
        r = v.latency_s / ref.latency_s
        size = (
            f"; it only saves U-Net size ({_mb(ref.size_mb)} -> {_mb(v.size_mb)})"
            if v.size_mb is not None and ref.size_mb is not None and v.size_mb < ref.size_mb
            else ""
        )
        q = f" at {v.lpips:.4g} LPIPS" if v.lpips is not None else ""
        times = f"{_s(v.latency_s)}{_iqr(v)} vs FP32 {_s(ref.latency_s)}{_iqr(ref)}"
        verdict = compare_latency(v, ref)
        if verdict == "unknown":
            out.append(
                f"{v.name}: {times} ({r:.2f}x); too few timed runs to tell a difference from FP32 (no "
                f"spread measured: use --runs 5 or more){size}{q}."
            )
        elif verdict == "faster":
            out.append(f"{v.name} is {1 / r:.2f}x faster than FP32 ({times}){q}.")
        elif verdict == "same":
            out.append(
                f"{v.name}: no measurable difference in latency from FP32 ({times}: the interquartile "
                f"ranges overlap){size}{q}."
            )
        elif _is_half(v):  # with native half units or without, what the measurement shows is the same
            out.append(
                f"{v.name} is slower than FP32 on {v.device or 'this device'}: {times} ({r:.2f}x); half "
                f"precision saves memory and size here, not time{size}."
            )
        else:
            out.append(
                f"Quantization does not pay for speed with {v.name}: FP32 fits ({_mb(ref.peak_mb)}) and "
                f"{v.name} is slower ({times}, {r:.2f}x){size}{q}."
            )
    return out


def device_report(
    results: Sequence[VariantResult], classes: Sequence[DeviceClass] = DEVICE_CLASSES, latency_s: float | None = None
) -> str:
    """Markdown: per device class, the recommendation at each end of its memory budget and whether quantization
    pays there, all from the measurements."""
    devices = sorted({v.device for v in results if v.device and not v.simulated})
    n_meas = sum(not v.simulated for v in results)
    lines = [
        "# Device report",
        "",
        f"From {n_meas} measured variant(s)"
        + (f" on {', '.join(devices)}" if devices else "")
        + f" ({len(results) - n_meas} simulated, not considered). Budgets are compared with the measured peak "
        "memory; latencies are the measured ones.",
        "",
    ]
    for dc in classes:
        lines += [f"## {dc.name}", ""]
        recs = [recommend(results, m, latency_s) for m in dc.budgets()]
        if len(recs) == 2 and recs[0].name == recs[1].name and recs[0].variant is not None:
            lines.append(recs[1].reason)
            lines.append(f"The same variant is chosen at {_mb(recs[0].memory_mb)}.")
        else:
            lines += [r.reason for r in recs]
        verdicts = quantization_verdicts(results, dc.budgets()[0])
        if len(dc.budgets()) == 2:
            high = quantization_verdicts(results, dc.budgets()[1])
            if high != verdicts:
                verdicts += [f"At {_mb(dc.budgets()[1])}: {v}" for v in high]
        if verdicts:
            lines += [""] + [f"- {s}" for s in verdicts]
        lines.append("")
    return "\n".join(lines)
