"""Min/max calibrator: the full observed range."""

from __future__ import annotations

from torch import Tensor

from diffusia.calib.base import Calibrator, finite_flat_aminmax, register_calibrator
from diffusia.errors import DiffusiaError


@register_calibrator("minmax")
class MinMaxCalibrator(Calibrator):
    """Running minimum and maximum of every value seen."""

    collected = ("lo", "hi")

    def __init__(self, **_: object) -> None:
        self.reset()

    def collect(self, x: Tensor) -> None:
        x, lo, hi = finite_flat_aminmax(x)
        if x.numel():
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def adopt(self, other: Calibrator) -> None:
        """Also from a histogram calibrator (percentile, MSE): a histogram's range is the min and max it saw."""
        hist = getattr(other, "hist", None)
        if hist is None:
            return super().adopt(other)
        self.reset()
        if not hist.empty:
            self.lo, self.hi = float(hist.lo), float(hist.hi)

    def compute(self) -> tuple[float, float]:
        if self.empty:
            raise DiffusiaError("minmax calibrator has no data: run calibration inputs through the model first")
        return self.lo, self.hi

    def reset(self) -> None:
        self.lo, self.hi = float("inf"), float("-inf")

    @property
    def empty(self) -> bool:
        return self.lo > self.hi
