"""Quantized Conv2d/Linear modules, swapped in by a registry.

Modes: `float` (as the original layer), `calibrate` (observe input activations, compute in float),
`fake` (simulated quantize-dequantize with a straight-through estimator: QAT and sensitivity),
`real` (frozen: int8 / packed int4 / fp16 / bf16 buffers + scales, computed by diffusia.quant.kernels).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusia.calib.base import Calibrator, get_calibrator
from diffusia.errors import DiffusiaError
from diffusia.quant.residency import release_pages
from diffusia.quant import qmath
from diffusia.quant.timestep import TimestepState

log = logging.getLogger(__name__)

MODES = ("float", "calibrate", "fake", "real")
QUANT_PRECISIONS = ("fp16", "bf16", "w8a8", "w8a8x2", "w8", "w4")
WEIGHT_BITS = {"fp16": 16, "bf16": 16, "w8a8": 8, "w8a8x2": 8, "w8": 8, "w4": 4}
# Precisions with calibrated static activations, and how many uint8 digits each activation is quantized to.
ACT_DIGITS = {"w8a8": 1, "w8a8x2": 2}
INT8_WEIGHTS = ("w8a8", "w8a8x2", "w8")
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
_REGISTRY: dict[type[nn.Module], type["QModuleMixin"]] = {}


def register(base: type[nn.Module]) -> Callable[[type["QModuleMixin"]], type["QModuleMixin"]]:
    """Class decorator: `@register(nn.Conv2d)` makes the class the quantized replacement of `base`."""

    def deco(cls: type[QModuleMixin]) -> type[QModuleMixin]:
        _REGISTRY[base] = cls
        cls.base_type = base
        return cls

    return deco


def qclass_for(module: nn.Module) -> type["QModuleMixin"]:
    cls = _REGISTRY.get(type(module))
    if cls is None:
        raise DiffusiaError(f"no quantized module for {type(module).__name__}; supported: "
                            f"{', '.join(t.__name__ for t in _REGISTRY)}")
    return cls


@dataclass(frozen=True)
class QSettings:
    """Per-layer quantization settings (saved in the quantization map)."""

    precision: str
    act_qmax: int = 127
    weight_qmax: int = 127  # int8 weight magnitude; < 127 only for 8-bit activations on CPUs without VNNI
    calibrator: str = "percentile"
    percentile: float = 99.9
    bins: int = 2048
    group_size: int = 64
    timestep_groups: int = 1

    def __post_init__(self) -> None:
        if self.precision not in QUANT_PRECISIONS:
            raise DiffusiaError(f"precision {self.precision!r} is not a quantized precision; "
                                f"valid: {', '.join(QUANT_PRECISIONS)}")

    def new_calibrator(self) -> Calibrator:
        return get_calibrator(self.calibrator, percentile=self.percentile, bins=self.bins, qmax=self.act_qmax)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class QModuleMixin:
    """Shared state and forward of the quantized modules; subclasses supply the float op and kernels."""

    settings: QSettings
    mode: str
    base_type: type[nn.Module]

    @classmethod
    def from_module(cls, module: nn.Module, settings: QSettings, ts: TimestepState | None = None) -> "QModuleMixin":
        """A quantized replacement sharing `module`'s weight and bias tensors (built on meta, no copy)."""
        q = cls._meta_like(module)
        q.weight, q.bias = module.weight, module.bias
        q._qinit(settings, ts, tuple(module.weight.shape))
        return q

    def _qinit(self, settings: QSettings, ts: TimestepState | None, weight_shape: tuple[int, ...]) -> None:
        self.settings, self._ts, self.weight_shape = settings, ts, weight_shape
        self.mode = "float"
        self._kernels: list[Callable[[Tensor], Tensor]] = []
        self._calibrators: list[Calibrator] = []
        if settings.precision in ACT_DIGITS:
            k = settings.timestep_groups
            self._calibrators = [settings.new_calibrator() for _ in range(k)]
            self.register_buffer("act_range", torch.zeros(k, 2))
            self.register_buffer("act_scale", torch.zeros(k))
            self.register_buffer("act_zero_point", torch.zeros(k, dtype=torch.int32))

    # ----- what subclasses provide
    @classmethod
    def _meta_like(cls, module: nn.Module) -> "QModuleMixin":
        raise NotImplementedError

    def _float_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _make_kernel(self, group: int) -> Callable[[Tensor], Tensor]:
        raise NotImplementedError

    # ----- state
    @property
    def precision(self) -> str:
        return self.settings.precision

    @property
    def group(self) -> int:
        return 0 if self._ts is None else min(self._ts.group, self.settings.timestep_groups - 1)

    @property
    def calibrated(self) -> bool:
        return self.precision not in ACT_DIGITS or bool((self.act_scale > 0).all())

    def act_qparams(self, group: int) -> tuple[float, int]:
        return float(self.act_scale[group]), int(self.act_zero_point[group])

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise DiffusiaError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if self.mode == "real" and mode != "real":
            raise DiffusiaError("a frozen layer holds no float weight: re-quantize the float model instead")
        if mode == "real":
            self.freeze()
            return
        if mode == "fake" and not self.calibrated:
            raise DiffusiaError("w8a8 layer has no activation range: calibrate before enabling fake quantization")
        self.mode = mode

    # ----- calibration
    def reset_calibration(self) -> None:
        for c in self._calibrators:
            c.reset()

    def compute_ranges(self) -> bool:
        """Turn the calibrators' observations into per-group (scale, zero_point); False if none observed."""
        seen = [g for g, c in enumerate(self._calibrators) if not c.empty]
        if not seen:
            return not self._calibrators
        ranges = {g: self._calibrators[g].compute() for g in seen}
        union = (min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values()))
        for g in range(len(self._calibrators)):
            lo, hi = ranges.get(g, union)  # a group no calibration timestep fell in: use the union
            scale, zp = qmath.act_qparams(lo, hi, self.settings.act_qmax)
            self.act_range[g] = torch.tensor([lo, hi])
            self.act_scale[g], self.act_zero_point[g] = scale, zp
        return True

    # ----- freezing
    def frozen_buffer_specs(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Names, shapes and dtypes of the buffers that replace the float weight when frozen."""
        p, shape, o = self.precision, self.weight_shape, self.weight_shape[0]
        if p in _HALF:
            return {f"weight_{p}": (shape, _HALF[p])}
        if p in INT8_WEIGHTS:
            return {"weight_int8": (shape, torch.int8), "weight_scale": ((o,), torch.float32)}
        cols = qmath.int4_padded_cols(int(torch.Size(shape[1:]).numel()), self.settings.group_size)
        return {"weight_int4": ((o, cols // 2), torch.uint8),
                "weight_scale": ((o, cols // self.settings.group_size), torch.float16)}

    def freeze(self) -> None:
        """Quantize the weight into plain buffers, drop the float weight, build the real kernels."""
        if self.mode == "real":
            return
        if not self.calibrated:
            raise DiffusiaError("w8a8 layer has no activation range: calibrate before freeze")
        w, p = self.weight.detach(), self.precision
        if p in _HALF:
            tensors = {f"weight_{p}": w.to(_HALF[p]).contiguous()}
        elif p in INT8_WEIGHTS:
            tensors = dict(zip(("weight_int8", "weight_scale"), qmath.quantize_weight_int8(w, self.settings.weight_qmax)))
        else:
            tensors = dict(zip(("weight_int4", "weight_scale"), qmath.quantize_weight_int4(w, self.settings.group_size)))
        self.register_parameter("weight", None)
        for name, t in tensors.items():
            self.register_buffer(name, t)
        self._calibrators = []
        self.build_kernels()

    def prepare_frozen(self) -> None:
        """Allocate empty frozen buffers (to be filled by load_state_dict), dropping the float weight."""
        self.register_parameter("weight", None)
        for name, (shape, dtype) in self.frozen_buffer_specs().items():
            self.register_buffer(name, torch.empty(shape, dtype=dtype, device="cpu"))
        self._calibrators = []
        if self.bias is not None and self.bias.is_meta:
            self.bias = nn.Parameter(torch.empty(self.bias.shape, dtype=torch.float32), requires_grad=False)
        self.mode = "real"

    def build_kernels(self) -> None:
        """(Re)build the kernel objects from the buffers; one per timestep group for W8A8."""
        n = self.settings.timestep_groups if self.precision in ACT_DIGITS else 1
        self._kernels = [] if self.precision in _HALF else [self._make_kernel(g) for g in range(n)]
        self.mode = "real"

    def release_packed_source(self) -> bool:
        """Once oneDNN holds its own packed copy of the int8 weight, give back the source's resident pages (a
        loaded weight is mapped from its file and is read again only to save or copy the model)."""
        if self._kernels and all(getattr(k, "backend", None) == "onednn" for k in self._kernels):
            return release_pages(self.weight_int8)
        return False

    # ----- forward
    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "real":
            return self._real_forward(x)
        w = self.weight
        if self.mode == "calibrate" and self._calibrators:
            self._calibrators[self.group].collect(x)
        elif self.mode == "fake":
            w = qmath.fake_quant_weight(w, self.precision, self.settings.group_size, self.settings.weight_qmax)
            if self.precision in ACT_DIGITS:
                x = qmath.fake_quant_act(x, *self.act_qparams(self.group), self.settings.act_qmax,
                                         ACT_DIGITS[self.precision])
        return self._float_op(x, w, self.bias)

    def _real_forward(self, x: Tensor) -> Tensor:
        if self.precision in _HALF:  # a storage format on CPU: upcast and compute in fp32
            w = getattr(self, f"weight_{self.precision}").float()
            bias = None if self.bias is None else self.bias.float()
            return self._float_op(x.float(), w, bias).to(x.dtype)
        kernel = self._kernels[self.group if len(self._kernels) > 1 else 0]
        return self._call_kernel(kernel, x.float()).to(x.dtype)

    def _call_kernel(self, kernel: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        return kernel(x)

    def _bias(self) -> Tensor | None:
        return None if self.bias is None else self.bias.detach().float()

    def extra_repr(self) -> str:
        s = f"{super().extra_repr()}, precision={self.precision}, mode={self.mode}"
        if self.precision in ACT_DIGITS:
            s += f", act_qmax={self.settings.act_qmax}, timestep_groups={self.settings.timestep_groups}"
        if self.precision == "w4":
            s += f", group_size={self.settings.group_size}"
        return s


def _kernels_module() -> Any:
    return importlib.import_module("diffusia.quant.kernels")  # imported when the first kernel is built


@register(nn.Conv2d)
class QConv2d(QModuleMixin, nn.Conv2d):
    """Quantized nn.Conv2d."""

    @classmethod
    def _meta_like(cls, m: nn.Conv2d) -> "QConv2d":
        if m.padding_mode != "zeros":
            raise DiffusiaError(f"Conv2d with padding_mode={m.padding_mode!r} is not supported; keep it in float")
        return cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   dilation=m.dilation, groups=m.groups, bias=m.bias is not None, device="meta")

    def _float_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _make_kernel(self, group: int) -> Callable[[Tensor], Tensor]:
        k, conv = _kernels_module(), (self.stride, self.padding, self.dilation, self.groups)
        if self.precision in ACT_DIGITS:
            scale, zp = self.act_qparams(group)
            return k.Int8Conv2d(self.weight_int8, self.weight_scale, self._bias(), *conv,
                                act_scale=scale, act_zero_point=zp, act_qmax=self.settings.act_qmax,
                                act_digits=ACT_DIGITS[self.precision])
        if self.precision == "w8":
            return k.WeightInt8Conv2d(self.weight_int8, self.weight_scale, self._bias(), *conv)
        return k.WeightInt4Conv2d(self.weight_int4, self.weight_scale, self._bias(), *conv,
                                  group_size=self.settings.group_size, weight_shape=self.weight_shape)


@register(nn.Linear)
class QLinear(QModuleMixin, nn.Linear):
    """Quantized nn.Linear."""

    @classmethod
    def _meta_like(cls, m: nn.Linear) -> "QLinear":
        return cls(m.in_features, m.out_features, bias=m.bias is not None, device="meta")

    def _float_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def _call_kernel(self, kernel: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        y = kernel(x.reshape(-1, x.shape[-1]))
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _make_kernel(self, group: int) -> Callable[[Tensor], Tensor]:
        k = _kernels_module()
        if self.precision in ACT_DIGITS:
            scale, zp = self.act_qparams(group)
            return k.Int8Linear(self.weight_int8, self.weight_scale, self._bias(),
                                act_scale=scale, act_zero_point=zp, act_qmax=self.settings.act_qmax,
                                act_digits=ACT_DIGITS[self.precision])
        if self.precision == "w8":
            return k.WeightInt8Linear(self.weight_int8, self.weight_scale, self._bias())
        return k.WeightInt4Linear(self.weight_int4, self.weight_scale, self._bias(),
                                  group_size=self.settings.group_size, in_features=self.in_features)
