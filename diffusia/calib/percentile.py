"""Percentile calibrator: [lo, hi] = the (100-p)th and p-th percentiles of the values (two-sided, so it
suits asymmetric uint8 activations), from a streaming histogram."""

from __future__ import annotations

from torch import Tensor

from diffusia.calib.base import Calibrator, StreamingHistogram, register_calibrator
from diffusia.errors import DiffusiaError


@register_calibrator("percentile")
class PercentileCalibrator(Calibrator):
    """Clips the `100 - percentile` % most extreme values on each side (default 99.9: 0.1 % each)."""

    collected = ("hist",)

    def __init__(self, percentile: float = 99.9, bins: int = 2048, **_: object) -> None:
        if not 50.0 < percentile <= 100.0:
            raise DiffusiaError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)
        self.hist = StreamingHistogram(bins)

    def collect(self, x: Tensor) -> None:
        self.hist.add(x)

    def compute(self) -> tuple[float, float]:
        if self.empty:
            raise DiffusiaError("percentile calibrator has no data: run calibration inputs through the model first")
        q = self.percentile / 100.0
        return self.hist.quantile(1.0 - q), self.hist.quantile(q)

    def reset(self) -> None:
        self.hist.reset()

    @property
    def empty(self) -> bool:
        return self.hist.empty
