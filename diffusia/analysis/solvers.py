"""The two solvers of the mixed-precision search (`diffusia.analysis.search`): one option per layer under byte,
noise and time caps. A greedy descent along each layer's lower convex hull of (bytes, noise), cheapest noise per
byte saved first, and an exact 0/1 program (scipy.optimize.milp)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MB = float(1 << 20)  # sizes in MiB, like the memory figures of the evaluation harness


@dataclass
class Option:
    precision: str
    bytes: float
    noise: float  # relative noise power (10^(-SQNR/10)), before the calibration factor
    time_s: float | None = None  # seconds per layer forward, minus the float layer's


@dataclass
class Problem:
    names: list[str]
    options: list[list[Option]]
    fixed: float
    budget: float | None  # bytes
    noise_cap: float | None  # raw (uncalibrated) noise
    time_cap: float | None  # summed per-layer extra seconds per U-Net call


def totals(p: Problem, pick: Sequence[int]) -> tuple[float, float, float]:
    ops = [o[i] for o, i in zip(p.options, pick)]
    return (p.fixed + sum(o.bytes for o in ops), sum(o.noise for o in ops), sum(o.time_s or 0.0 for o in ops))


def feasible(p: Problem, tot: tuple[float, float, float]) -> bool:
    b, n, t = tot
    return (
        (p.budget is None or b <= p.budget * (1 + 1e-12))
        and (p.noise_cap is None or n <= p.noise_cap * (1 + 1e-9))
        and (p.time_cap is None or t <= p.time_cap + 1e-12)
    )


def greedy(p: Problem) -> list[int] | None:
    """Descend from the largest option of every layer along its lower convex hull in (bytes, noise), the move
    with the least added noise per byte saved first; return the first state that meets the budget (budget mode)
    or the last state within the noise cap (quality-floor mode). Blind to time: a latency cap only filters its
    states (the exact program weighs it)."""
    hulls: list[list[int]] = []
    for opts in p.options:
        order = sorted(range(len(opts)), key=lambda i: (-opts[i].bytes, opts[i].noise))
        hull: list[int] = []
        for i in order:  # lower convex hull, bytes decreasing
            if hull and opts[i].bytes == opts[hull[-1]].bytes and opts[i].noise >= opts[hull[-1]].noise:
                continue  # the same bytes, more noise (w8a8 beside w8a8x2): only the time model tells them apart
            if hull and opts[i].noise <= opts[hull[-1]].noise:
                hull = [h for h in hull if opts[h].noise < opts[i].noise]  # i dominates them
            while len(hull) >= 2:
                a, b = opts[hull[-2]], opts[hull[-1]]
                s_ab = (b.noise - a.noise) / (a.bytes - b.bytes)
                s_bi = (opts[i].noise - b.noise) / (b.bytes - opts[i].bytes)
                if s_bi <= s_ab:
                    hull.pop()
                else:
                    break
            hull.append(i)
        hulls.append(hull)
    pos = [0] * len(hulls)
    pick = [h[0] for h in hulls]
    states = [list(pick)]
    while True:
        best, best_slope = None, math.inf
        for li, h in enumerate(hulls):
            if pos[li] + 1 < len(h):
                a, b = p.options[li][h[pos[li]]], p.options[li][h[pos[li] + 1]]
                slope = (b.noise - a.noise) / (a.bytes - b.bytes)
                if slope < best_slope:
                    best, best_slope = li, slope
        if best is None:
            break
        pos[best] += 1
        pick[best] = hulls[best][pos[best]]
        states.append(list(pick))
    sums = [totals(p, s) for s in states]
    if p.noise_cap is not None:  # quality floor: go as far as the noise allows
        ok = [i for i, t in enumerate(sums) if feasible(p, t)]
        return states[ok[-1]] if ok else None
    for s, t in zip(states, sums):
        if feasible(p, t):
            return s
    return None


def milp(p: Problem, noise_ref: float | None = None) -> list[int] | None:
    """Exact 0/1 program: one option per layer; minimise noise (budget mode) or bytes (quality-floor mode).

    Noise is expressed in units of `noise_ref` (e.g. the greedy plan's noise) so that the objective is O(1): the
    per-layer noises span many decades, below the solver's absolute tolerances otherwise."""
    from scipy.optimize import Bounds, LinearConstraint
    from scipy.optimize import milp as scipy_milp
    from scipy.sparse import lil_matrix

    sizes = [len(o) for o in p.options]
    nv = sum(sizes)
    flat = [o for opts in p.options for o in opts]
    b = np.array([o.bytes for o in flat]) / MB
    n = np.array([o.noise for o in flat])
    t = np.array([o.time_s or 0.0 for o in flat])
    nscale = noise_ref if noise_ref and noise_ref > 0 else (p.noise_cap or float(n[n > 0].min(initial=1.0)))
    rows, lo, hi = [], [], []
    one = lil_matrix((len(sizes), nv))
    k = 0
    for li, s in enumerate(sizes):
        one[li, k : k + s] = 1
        k += s
    cons = [LinearConstraint(one.tocsr(), np.ones(len(sizes)), np.ones(len(sizes)))]
    if p.budget is not None:
        rows.append(b)
        lo.append(-np.inf)
        hi.append((p.budget - p.fixed) / MB)
    if p.noise_cap is not None:
        rows.append(n / nscale)
        lo.append(-np.inf)
        hi.append(p.noise_cap / nscale)
    if p.time_cap is not None:
        rows.append(t)
        lo.append(-np.inf)
        hi.append(p.time_cap)
    if rows:
        cons.append(LinearConstraint(np.vstack(rows), np.array(lo), np.array(hi)))
    if p.noise_cap is not None:  # fewest bytes, then least noise
        c = b / max(float(b.max()), 1e-30) + 1e-6 * n / nscale
    else:  # least noise, then fewest bytes
        c = n / nscale + 1e-9 * b / max(float(b.max()), 1e-30)
    res = scipy_milp(
        c,
        integrality=np.ones(nv),
        bounds=Bounds(0, 1),
        constraints=cons,
        options={"mip_rel_gap": 1e-9, "time_limit": 60.0},
    )
    if res.x is None:
        log.debug("milp: %s", res.message)
        return None
    x = np.round(res.x).astype(int)
    pick, k = [], 0
    for s in sizes:
        pick.append(int(np.argmax(x[k : k + s])))
        k += s
    return pick if feasible(p, totals(p, pick)) else None
