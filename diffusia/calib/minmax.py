"""Min/max calibrator: the full observed range."""
from __future__ import annotations

from torch import Tensor

from diffusia.calib.base import Calibrator, _finite_flat, register_calibrator
from diffusia.errors import DiffusiaError


@register_calibrator("minmax")
class MinMaxCalibrator(Calibrator):
    """Running minimum and maximum of every value seen."""

    def __init__(self, **_: object) -> None:
        self.reset()

    def collect(self, x: Tensor) -> None:
        x = _finite_flat(x)
        if x.numel():
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def compute(self) -> tuple[float, float]:
        if self.empty:
            raise DiffusiaError("minmax calibrator has no data: run calibration inputs through the model first")
        return self.lo, self.hi

    def reset(self) -> None:
        self.lo, self.hi = float("inf"), float("-inf")

    @property
    def empty(self) -> bool:
        return self.lo > self.hi
