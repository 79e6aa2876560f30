"""Latency microbenchmark of one layer on this machine's real kernels (MEASURED): the sensitivity analysis's per-layer
times, the mixed-precision search's latency model."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from diffusia.quant import qmath
from diffusia.quant.modules import QModuleMixin, QSettings, qclass_for


def _median_time(fn, x: Tensor, reps: int) -> float:
    with torch.no_grad():
        fn(x)  # warm-up (kernel construction, caches)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_layer(
    module: nn.Module,
    calibrated: QModuleMixin,
    shape: Sequence[int],
    settings: Mapping[str, QSettings],
    reps: int = 5,
) -> dict[str, float]:
    """Median seconds of one forward of the float `module` at input `shape` (`keep`) and of its frozen real kernel
    at each precision of `settings` (precision -> its layer settings), with activations in `calibrated`'s range."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(module.weight.device, module.weight.dtype)
    out = {"keep": _median_time(module, x, reps)}
    for p, st in settings.items():
        q = qclass_for(module).from_module(module, st, None)
        if q.spec.act_digits:  # the calibrated range in this precision's integer range
            q.act_range.copy_(calibrated.act_range)
            for g, (lo, hi) in enumerate(calibrated.act_range.tolist()):
                q.act_scale[g], q.act_zero_point[g] = qmath.act_qparams(lo, hi, st.act_qmax, st.act_symmetric)
        q.freeze()
        out[p] = _median_time(q, x, reps)
    return out
