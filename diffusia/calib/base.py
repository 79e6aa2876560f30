"""Calibrator contract (collect / compute / reset), a streaming histogram, and the calibrator registry."""

from __future__ import annotations

import abc
import copy
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusia.errors import DiffusiaError

_REGISTRY: dict[str, type[Calibrator]] = {}
_BUILTIN = ("minmax", "percentile", "mse")


class Calibrator(abc.ABC):
    """Observes activations and proposes a float range (lo, hi) for them."""

    name: str = ""
    collected: tuple[str, ...] = ()  # the attributes holding what collect() gathered (see adopt)

    @abc.abstractmethod
    def collect(self, x: Tensor) -> None:
        """Observe one batch of values."""

    @abc.abstractmethod
    def compute(self) -> tuple[float, float]:
        """The proposed range; raises DiffusiaError if nothing was collected."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything observed."""

    @property
    @abc.abstractmethod
    def empty(self) -> bool:
        """True if nothing was collected since the last reset."""

    def adopt(self, other: Calibrator) -> None:
        """Take over what `other`, a calibrator that collects the same (percentile and MSE: a histogram),
        collected (a copy); the settings that only shape compute(), such as the integer range, stay this one's."""
        if other.collected != self.collected or not self.collected:
            raise DiffusiaError(f"a {self.name} calibrator cannot take over what a {other.name} one collected")
        for attr in self.collected:
            setattr(self, attr, copy.deepcopy(getattr(other, attr)))


class GroupCalibration:
    """Mixin of what observes activations with one calibrator per timestep group (`_calibrators`): the quantized
    layers and the int8 attention's quantizers."""

    _calibrators: list[Calibrator]

    def reset_calibration(self) -> None:
        for c in self._calibrators:
            c.reset()

    def adopt_calibration(self, observed: list[Calibrator]) -> None:
        """Take over what calibrators of the same kind observed, one per timestep group (shared observations)."""
        if len(observed) != len(self._calibrators):
            raise DiffusiaError(f"{len(observed)} observed timestep groups for {len(self._calibrators)} ranges")
        for mine, theirs in zip(self._calibrators, observed):
            mine.adopt(theirs)


def register_calibrator(name: str) -> Callable[[type[Calibrator]], type[Calibrator]]:
    def deco(cls: type[Calibrator]) -> type[Calibrator]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_calibrator(name: str, **kwargs: Any) -> Calibrator:
    """A new calibrator by name (`minmax`, `percentile`, `mse`); kwargs go to its constructor."""
    for mod in _BUILTIN:
        importlib.import_module(f"diffusia.calib.{mod}")
    if name not in _REGISTRY:
        raise DiffusiaError(f"unknown calibrator {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def finite_flat_aminmax(x: Tensor) -> tuple[Tensor, float, float]:
    """The finite values of x, flattened, with their min and max (one pass when all are finite)."""
    x = x.detach().reshape(-1).float()
    if x.numel() == 0:
        return x, 0.0, 0.0
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or Inf somewhere: drop them (rare, so the slow path)
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return x, 0.0, 0.0
        lo, hi = (float(v) for v in torch.aminmax(x))
    return x, lo, hi


class StreamingHistogram:
    """A fixed-bin histogram whose range grows to cover every value seen (old counts re-binned linearly).

    Memory is O(bins) whatever the number of values observed. The range always covers every value; the counts
    of a large tensor come from `max_samples` values drawn uniformly at random (seeded, so calibration is
    deterministic; weighted to the full count), which keeps calibration over hundreds of U-Net calls cheap: a
    99.9th percentile from 2^16 samples per call is exact to well under one quantization step. A strided subset
    is not: a stride that divides the channel count of a (batch, tokens, channels) input sees a few channels
    only and misses an outlier channel (tests/calib/test_calibrators.py).
    """

    def __init__(self, bins: int = 2048, max_samples: int = 1 << 16) -> None:
        self.bins = int(bins)
        self.max_samples = int(max_samples)
        self.reset()

    def reset(self) -> None:
        self.counts: np.ndarray | None = None
        self.lo = 0.0
        self.hi = 0.0
        self._generator: torch.Generator | None = None

    @property
    def empty(self) -> bool:
        return self.counts is None or float(self.counts.sum()) == 0.0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def add(self, x: Tensor) -> None:
        x, xmin, xmax = finite_flat_aminmax(x)
        if x.numel() == 0:
            return
        if self.counts is None:
            lo, hi = xmin, xmax
        else:
            lo, hi = min(xmin, self.lo), max(xmax, self.hi)
        if hi - lo < 1e-12:  # a constant: give it a tiny non-empty bin range
            pad = max(abs(lo) * 1e-6, 1e-8)
            lo, hi = lo - pad, hi + pad
        if self.counts is None:
            self.counts, self.lo, self.hi = np.zeros(self.bins), lo, hi
        elif lo < self.lo or hi > self.hi:
            self._rebin(lo, hi)
        n = x.numel()
        sample = x if n <= self.max_samples else x[self._sample_indices(n, x.device)]
        # torch.histc is ~300x slower than bincount on CPU
        idx = sample.sub(self.lo).mul_(self.bins / (self.hi - self.lo)).long().clamp_(0, self.bins - 1)
        self.counts += torch.bincount(idx, minlength=self.bins).double().numpy() * (n / sample.numel())

    def _sample_indices(self, n: int, device: torch.device) -> Tensor:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(0)
        return torch.randint(0, n, (self.max_samples,), generator=self._generator, device=device)

    def _rebin(self, lo: float, hi: float) -> None:
        cdf = np.concatenate([[0.0], np.cumsum(self.counts)])
        new_edges = np.linspace(lo, hi, self.bins + 1)
        self.counts = np.diff(np.interp(new_edges, self.edges, cdf))
        self.lo, self.hi = lo, hi

    def quantile(self, q: float) -> float:
        """The value below which a fraction `q` of the observed values lie (linear within a bin)."""
        assert self.counts is not None
        cdf = np.cumsum(self.counts)
        target = q * cdf[-1]
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, self.bins - 1)
        below = cdf[i - 1] if i > 0 else 0.0
        frac = 0.0 if self.counts[i] == 0 else (target - below) / self.counts[i]
        width = (self.hi - self.lo) / self.bins
        return float(self.lo + (i + min(max(frac, 0.0), 1.0)) * width)

    def centers(self) -> np.ndarray:
        e = self.edges
        return (e[:-1] + e[1:]) / 2
