"""MSE calibrator: the range whose affine uint quantization of the observed histogram has the least
squared error (grid search over clipping points on both sides, or over one radius for symmetric ranges)."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from diffusia.calib.base import Calibrator, StreamingHistogram, register_calibrator
from diffusia.errors import DiffusiaError


def quant_mse(centers: np.ndarray, counts: np.ndarray, lo: float, hi: np.ndarray, qmax: int) -> np.ndarray:
    """Histogram-weighted squared error of affine quantization to [0, qmax] for one lo and many hi."""
    lo = min(lo, 0.0)
    hi = np.maximum(hi, 0.0)[:, None]
    scale = np.maximum((hi - lo) / qmax, 1e-12)
    zp = np.clip(np.round(-lo / scale), 0, qmax)
    q = np.clip(np.round(centers[None, :] / scale) + zp, 0, qmax)
    return (((q - zp) * scale - centers[None, :]) ** 2 * counts[None, :]).sum(axis=1)


@register_calibrator("mse")
class MSECalibrator(Calibrator):
    """Searches `grid` x `grid` candidate ranges shrunk from [min, max] towards zero; `symmetric`: `grid` ranges
    +-r (zero point at mid-scale) for values with a negative part."""

    collected = ("hist",)

    def __init__(self, qmax: int = 255, bins: int = 2048, grid: int = 40, symmetric: bool = False, **_: object) -> None:
        self.qmax, self.grid, self.symmetric = int(qmax), int(grid), bool(symmetric)
        self.hist = StreamingHistogram(bins)

    def collect(self, x: Tensor) -> None:
        self.hist.add(x)

    def compute(self) -> tuple[float, float]:
        if self.empty:
            raise DiffusiaError("mse calibrator has no data: run calibration inputs through the model first")
        h = self.hist
        c, n = h.centers(), h.counts
        fracs = np.linspace(1.0 / self.grid, 1.0, self.grid)
        if self.symmetric and h.lo < 0:
            radii = max(-h.lo, h.hi) * fracs
            r = float(radii[int(np.argmin([quant_mse(c, n, -r, np.array([r]), self.qmax)[0] for r in radii]))])
            return -r, r
        lows = [h.lo] if h.lo >= 0 else list(h.lo * fracs)
        highs = np.array([h.hi]) if h.hi <= 0 else h.hi * fracs
        best = (np.inf, h.lo, h.hi)
        for lo in lows:
            err = quant_mse(c, n, lo, highs, self.qmax)
            j = int(np.argmin(err))
            if err[j] < best[0]:
                best = (float(err[j]), float(lo), float(highs[j]))
        return best[1], best[2]

    def reset(self) -> None:
        self.hist.reset()

    @property
    def empty(self) -> bool:
        return self.hist.empty
