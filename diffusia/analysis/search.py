"""Mixed-precision search: per-layer precisions from a sensitivity analysis under a size, quality or latency target.

Quality model (SIMULATED inputs): the per-layer noise powers of the sensitivity run add up,
SQNR(plan) = -10*log10(k * sum_l 10^(-SQNR_only(l, p_l)/10)), where k (>= 0) rescales the sum so that the
model reproduces the measured all-quantized SQNR of the sensitivity run. Size: weight bytes per layer and
precision (`diffusia.analysis.layers.weight_bytes`) plus every parameter/buffer that is not a candidate weight.
Latency (optional, MEASURED per layer): FP32 image time + U-Net calls per image * sum_l (t_l(p_l) - t_l(fp32)).

Two solvers: a greedy descent along each layer's lower convex hull of (bytes, noise) - cheapest noise per byte
saved first - and an exact integer program (scipy.optimize.milp). `auto` runs both and keeps the better plan.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from diffusia.analysis.layers import extra_bytes, weight_bytes
from diffusia.analysis.solvers import MB, Option, Problem, greedy, milp, totals
from diffusia.config import Recipe, Rule
from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)

SEARCH_PRECISIONS = ("w8a8", "w8a8x2", "w8", "w4", "fp16", "keep")
# w8a8x2 has w8a8's bytes and less noise, so it is a real choice only where its second INT8 call is costed
DEFAULT_PRECISIONS = ("w8a8", "w8", "w4", "fp16", "keep")
LATENCY_ONLY = ("w8a8x2",)
METHODS = ("auto", "milp", "greedy")
SQNR_CAP_DB = 200.0


@dataclass
class SearchResult:
    """The chosen plan and its model estimates (size exact from shapes, SQNR simulated, latency modelled)."""

    recipe: Recipe
    choices: dict[str, str]
    size_mb: float
    est_sqnr_db: float
    est_latency_s: float | None
    method: str
    fp32_size_mb: float
    counts: dict[str, int] = field(default_factory=dict)
    targets: dict[str, float | None] = field(default_factory=dict)
    calibration_factor: float = 1.0
    simulated: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recipe"] = self.recipe.to_dict()
        d["note"] = (
            "est_sqnr_db is a SIMULATED estimate (additive per-layer fake-quant noise); size_mb is exact "
            "from the weight shapes; est_latency_s is a per-layer cost model from measured microbenchmarks"
        )
        return d


def _noise(db: float) -> float:
    return 10 ** (-db / 10)


def _db(noise: float) -> float:
    return SQNR_CAP_DB if noise <= 0 else max(-SQNR_CAP_DB, min(SQNR_CAP_DB, -10 * math.log10(noise)))


def layer_options(
    sens: dict[str, Any], precisions: Sequence[str] = SEARCH_PRECISIONS, latency: bool = False
) -> tuple[list[str], list[list[Option]], float]:
    """Per candidate layer the allowed options, and the bytes that do not depend on the plan."""
    u = sens["unet"]
    fb, gs, tg = int(u["float_bytes"]), int(u["int4_group_size"]), int(u["timestep_groups"])
    fixed = float(u["total_bytes"]) - float(u["candidate_weight_bytes"])
    names, options = [], []
    for r in sens["layers"]:
        by_p = r["sqnr_only_db_by_precision"]
        times = r.get("time_s") or {}
        opts = []
        for p in precisions:
            if p != "keep" and p not in by_p:
                continue
            t = None
            if latency:
                if p not in times or "keep" not in times:
                    continue
                t = times[p] - times["keep"]
            opts.append(
                Option(
                    p,
                    weight_bytes(r["weight_shape"], p, fb, gs) + extra_bytes(p, tg),
                    0.0 if p == "keep" else _noise(by_p[p]),
                    t,
                )
            )
        if latency and not opts:
            raise DiffusiaError(f"layer {r['name']!r} has no timing: rerun `diffusia sensitivity` with --timing")
        names.append(r["name"])
        options.append(opts)
    return names, options, fixed


def _prune(opts: list[Option], latency: bool) -> list[Option]:
    """Drop dominated options (no fewer bytes, no less noise, no less time than another)."""

    def dominated(a: Option, b: Option) -> bool:
        ta, tb = (a.time_s or 0.0), (b.time_s or 0.0)
        le = b.bytes <= a.bytes and b.noise <= a.noise and (not latency or tb <= ta)
        lt = b.bytes < a.bytes or b.noise < a.noise or (latency and tb < ta)
        return le and lt

    kept = [a for a in opts if not any(dominated(a, b) for b in opts if b is not a)]
    unique: dict[tuple, Option] = {}
    for a in kept:  # exact ties: the first listed precision wins
        unique.setdefault((a.bytes, a.noise, a.time_s if latency else None), a)
    return list(unique.values())


def calibration_factor(sens: dict[str, Any]) -> float:
    """Measured all-quantized noise / sum of the per-layer noises (1 when unknown)."""
    pred = sum(_noise(r["sqnr_only_db"]) for r in sens["layers"])
    if pred <= 0 or "sqnr_all_db" not in sens:
        return 1.0
    return _noise(sens["sqnr_all_db"]) / pred


def search(
    sens: dict[str, Any],
    budget_mb: float | None = None,
    quality_floor_db: float | None = None,
    latency_s: float | None = None,
    precisions: Sequence[str] | None = None,
    method: str = "auto",
    name: str | None = None,
) -> SearchResult:
    """Choose a precision per layer of `sens` (a sensitivity.json dict) under the targets; see module doc.

    budget_mb: U-Net size limit (MiB); quality_floor_db: minimum estimated SQNR of the noise prediction;
    latency_s: limit on the modelled seconds per image. With a budget, the estimated SQNR is maximised; with only
    a quality floor, the size is minimised. precisions: the allowed ones (default DEFAULT_PRECISIONS, and w8a8x2
    where the sensitivity run simulated it, under a latency limit). Raises DiffusiaError when no plan meets the
    targets."""
    if budget_mb is None and quality_floor_db is None:
        raise DiffusiaError("search needs a target: --budget-mb M and/or --quality-floor SQNR_DB")
    if method not in METHODS:
        raise DiffusiaError(f"unknown search method {method!r}; valid: {', '.join(METHODS)}")
    timing = sens.get("timing")
    if latency_s is not None and not timing:
        raise DiffusiaError("--latency-s needs per-layer timings: rerun `diffusia sensitivity` with --timing")
    precisions = _allowed(sens, precisions, latency_s is not None)
    names, options, fixed = layer_options(sens, precisions, latency=latency_s is not None)
    options = [_prune(o, latency_s is not None) for o in options]
    k = calibration_factor(sens)
    calls = float(timing["unet_calls_per_image"]) if timing else 0.0
    base_s = float(timing["image_s_fp32"]) if timing else None
    prob = Problem(
        names,
        options,
        fixed,
        budget=None if budget_mb is None else budget_mb * MB,
        noise_cap=None if quality_floor_db is None else _noise(quality_floor_db) / max(k, 1e-300),
        time_cap=None if latency_s is None else (latency_s - base_s) / max(calls, 1e-9),
    )
    candidates: list[tuple[str, list[int]]] = []
    g = greedy(prob)
    if g is not None and method in ("auto", "greedy"):
        candidates.append(("greedy", g))
    if method in ("auto", "milp"):
        m = milp(prob, totals(prob, g)[1] if g is not None else None)
        if m is not None:
            candidates.append(("milp", m))
    fp32_mb = (
        fixed + sum(weight_bytes(r["weight_shape"], "keep", int(sens["unet"]["float_bytes"])) for r in sens["layers"])
    ) / MB
    if not candidates:
        smallest = (fixed + sum(min(o.bytes for o in opts) for opts in options)) / MB
        raise DiffusiaError(
            f"no per-layer plan meets the targets (budget {budget_mb} MB, floor {quality_floor_db} dB, latency "
            f"{latency_s} s): the smallest plan is {smallest:.2f} MB (FP32 {fp32_mb:.2f} MB); "
            f"all quantized measured {sens.get('sqnr_all_db', float('nan')):.1f} dB (simulated)"
        )
    # budget mode: least noise; quality-floor mode: fewest bytes; ties: fewer bytes / less noise
    key = (
        (lambda c: (totals(prob, c[1])[1], totals(prob, c[1])[0]))
        if budget_mb is not None
        else (lambda c: (totals(prob, c[1])[0], totals(prob, c[1])[1]))
    )
    used, pick = min(candidates, key=key)
    size, noise, extra_t = totals(prob, pick)
    choices = {n: o[i].precision for n, o, i in zip(names, options, pick)}
    r0 = sens["recipe"]
    label = name or "search-" + "-".join(
        s
        for s in (
            f"{budget_mb:g}mb" if budget_mb is not None else "",
            f"{quality_floor_db:g}db" if quality_floor_db is not None else "",
            f"{latency_s:g}s" if latency_s is not None else "",
        )
        if s
    )
    recipe = Recipe(
        name=label,
        weights="keep",
        activations=r0["activations"],
        calibrator=r0["calibrator"],
        percentile=r0["percentile"],
        histogram_bins=r0["histogram_bins"],
        int4_group_size=r0["int4_group_size"],
        timestep_groups=r0["timestep_groups"],
        num_train_timesteps=r0["num_train_timesteps"],
        rules=[Rule(n, p) for n, p in choices.items() if p != "keep"],
    )
    counts: dict[str, int] = {}
    for p in choices.values():
        counts[p] = counts.get(p, 0) + 1
    est_lat = (
        None
        if base_s is None
        else base_s
        + calls
        * sum(
            (o[i].time_s if o[i].time_s is not None else _time_of(sens, n, o[i].precision))
            for n, o, i in zip(names, options, pick)
        )
    )
    log.info("search (%s): %.2f MB, est. SQNR %.2f dB (simulated), %s", used, size / MB, _db(k * noise), counts)
    return SearchResult(
        recipe,
        choices,
        size / MB,
        _db(k * noise),
        est_lat,
        used,
        fp32_mb,
        counts,
        dict(budget_mb=budget_mb, quality_floor_db=quality_floor_db, latency_s=latency_s),
        k,
    )


def _allowed(sens: dict[str, Any], precisions: Sequence[str] | None, latency: bool) -> tuple[str, ...]:
    """The precisions the search may choose: those asked for, each simulated by the sensitivity run."""
    simulated = {p for r in sens["layers"] for p in r["sqnr_only_db_by_precision"]}
    if precisions is None:
        extra = LATENCY_ONLY if latency else ()
        return tuple(p for p in (*DEFAULT_PRECISIONS, *extra) if p == "keep" or p in simulated)
    for p in precisions:
        if p not in SEARCH_PRECISIONS:
            raise DiffusiaError(f"precision {p!r} is not searchable; valid: {', '.join(SEARCH_PRECISIONS)}")
        if p in LATENCY_ONLY and not latency:
            raise DiffusiaError(
                f"{p} is a search choice only under a latency limit: add --latency-s S (it has w8a8's bytes and "
                "less noise, so without its time cost it would replace every w8a8 layer)"
            )
        if p != "keep" and p not in simulated:
            raise DiffusiaError(
                f"the sensitivity run did not simulate {p}: rerun `diffusia sensitivity` with --precisions "
                f"including {p}"
            )
    return tuple(precisions)


def _time_of(sens: dict[str, Any], name: str, precision: str) -> float:
    for r in sens["layers"]:
        if r["name"] == name:
            t = r.get("time_s") or {}
            if precision in t and "keep" in t:
                return t[precision] - t["keep"]
    return 0.0


def search_recipe(
    sens: dict[str, Any],
    budget_mb: float | None = None,
    quality_floor_db: float | None = None,
    latency_s: float | None = None,
    **kwargs: Any,
) -> Recipe:
    """The Recipe of `search(...)`: `weights="keep"` and one rule per quantized layer, by exact name."""
    return search(sens, budget_mb, quality_floor_db, latency_s, **kwargs).recipe


def check_recipe_names(recipe: Recipe, layer_names: Sequence[str]) -> None:
    """Every rule of `recipe` names exactly one of `layer_names` (what `policy.plan` would need)."""
    known = set(layer_names)
    missing = [r.pattern for r in recipe.rules if r.pattern not in known]
    if missing:
        raise DiffusiaError(f"recipe rule {missing[0]!r} names no layer of the analysed U-Net")
