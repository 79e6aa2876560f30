"""Quantized Conv2d/Linear modules, swapped in by a registry.

Modes: `float` (as the original layer), `calibrate` (observe input activations, compute in float),
`fake` (simulated quantize-dequantize with a straight-through estimator: QAT and sensitivity),
`real` (frozen: int8 / packed int4 / fp16 / bf16 buffers + scales, computed by diffusia.quant.kernels).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusia.calib.base import Calibrator, GroupCalibration, get_calibrator
from diffusia.errors import DiffusiaError
from diffusia.quant import qmath
from diffusia.quant.precisions import Precision, get_precision
from diffusia.quant.residency import release_pages
from diffusia.quant.timestep import TimestepState

log = logging.getLogger(__name__)

MODES = ("float", "calibrate", "fake", "real")
KERNEL_DEVICES = ("cpu", "cuda")  # where the frozen kernels can live
_REGISTRY: dict[type[nn.Module], type[QModuleMixin]] = {}


def register(base: type[nn.Module]) -> Callable[[type[QModuleMixin]], type[QModuleMixin]]:
    """Class decorator: `@register(nn.Conv2d)` makes the class the quantized replacement of `base`."""

    def deco(cls: type[QModuleMixin]) -> type[QModuleMixin]:
        _REGISTRY[base] = cls
        cls.base_type = base
        return cls

    return deco


def qclass_for(module: nn.Module) -> type[QModuleMixin]:
    cls = _REGISTRY.get(type(module))
    if cls is None:
        raise DiffusiaError(
            f"no quantized module for {type(module).__name__}; supported: {', '.join(t.__name__ for t in _REGISTRY)}"
        )
    return cls


@dataclass(frozen=True)
class QSettings:
    """Per-layer quantization settings (saved in the quantization map)."""

    precision: str
    act_qmax: int = 127
    act_symmetric: bool = False  # ranges symmetric around 0: zero point at mid-scale, signed INT8 on a runtime
    act_balanced: bool = False  # symmetric only if the calibrated range is balanced around 0 (qmath.is_balanced)
    weight_qmax: int = 127  # int8 weight magnitude; < 127 only for 8-bit activations on CPUs without VNNI
    calibrator: str = "percentile"
    percentile: float = 99.9
    bins: int = 2048
    group_size: int = 64
    timestep_groups: int = 1

    def __post_init__(self) -> None:
        get_precision(self.precision)  # a one-line error naming the valid ones

    def new_calibrator(self, symmetric: bool | None = None) -> Calibrator:
        return get_calibrator(
            self.calibrator,
            percentile=self.percentile,
            bins=self.bins,
            qmax=self.act_qmax,
            symmetric=self.act_symmetric if symmetric is None else symmetric,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class QModuleMixin(GroupCalibration):
    """Shared state and forward of the quantized modules; subclasses supply the float op and kernels."""

    settings: QSettings
    mode: str
    base_type: type[nn.Module]

    @classmethod
    def from_module(cls, module: nn.Module, settings: QSettings, ts: TimestepState | None = None) -> QModuleMixin:
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
        if self.spec.act_digits:
            k = settings.timestep_groups
            self._calibrators = [settings.new_calibrator() for _ in range(k)]
            self.register_buffer("act_range", torch.zeros(k, 2))
            self.register_buffer("act_scale", torch.zeros(k))
            self.register_buffer("act_zero_point", torch.zeros(k, dtype=torch.int32))

    # ----- what subclasses provide
    @staticmethod
    def _layer_args(module: nn.Module) -> tuple[tuple, dict[str, Any]]:
        """The constructor arguments of the float layer (shared by the quantized and the dequantized one)."""
        raise NotImplementedError

    @classmethod
    def _meta_like(cls, module: nn.Module) -> QModuleMixin:
        args, kwargs = cls._layer_args(module)
        return cls(*args, **kwargs, device="meta")

    def _float_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _kernel_factory(self) -> Callable[[Any, int], Callable[[Tensor], Tensor]] | None:
        raise NotImplementedError

    # ----- state
    @property
    def precision(self) -> str:
        return self.settings.precision

    @property
    def spec(self) -> Precision:
        return get_precision(self.settings.precision)

    @property
    def group(self) -> int:
        return 0 if self._ts is None else min(self._ts.group, self.settings.timestep_groups - 1)

    @property
    def calibrated(self) -> bool:
        return not self.spec.act_digits or bool((self.act_scale > 0).all())

    def act_qparams(self, group: int) -> tuple[float, int]:
        return float(self.act_scale[group]), int(self.act_zero_point[group])

    @property
    def act_qmax(self) -> int:
        return int(self.settings.act_qmax)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise DiffusiaError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if self.mode == "real" and mode != "real":
            raise DiffusiaError("a frozen layer holds no float weight: re-quantize the float model instead")
        if mode == "real":
            self.freeze()
            return
        if mode == "fake" and not self.calibrated:
            raise DiffusiaError(
                f"{self.precision} layer has no activation range: calibrate before enabling fake quantization"
            )
        self.mode = mode

    # ----- calibration (reset / adopt: GroupCalibration)
    def compute_ranges(self) -> bool:
        """Turn the calibrators' observations into per-group (scale, zero_point); False if none observed."""
        seen = [g for g, c in enumerate(self._calibrators) if not c.empty]
        if not seen:
            return not self._calibrators
        ranges = {g: self._range(self._calibrators[g]) for g in seen}
        union = (min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values()))
        symmetric = self.settings.act_symmetric
        if self.settings.act_balanced and not symmetric and qmath.is_balanced(*union):
            symmetric = True  # the calibrator's own symmetric range of what it observed (MSE searches one radius)
            ranges = {g: self._range(self._calibrators[g], symmetric=True) for g in seen}
            union = (min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values()))
        for g in range(len(self._calibrators)):
            lo, hi = ranges.get(g, union)  # a group no calibration timestep fell in: use the union
            scale, zp = qmath.act_qparams(lo, hi, self.settings.act_qmax, symmetric)
            self.act_range[g] = torch.tensor([lo, hi])
            self.act_scale[g], self.act_zero_point[g] = scale, zp
        return True

    def _range(self, observed: Calibrator, symmetric: bool | None = None) -> tuple[float, float]:
        """The range the settings' calibrator gives for what `observed` collected: settings changed after the
        calibration pass (the sensitivity analysis simulates other precisions) take effect without another pass."""
        if symmetric is None and observed.name == self.settings.calibrator:
            return observed.compute()
        c = self.settings.new_calibrator(symmetric=symmetric)
        c.adopt(observed)
        return c.compute()

    # ----- freezing
    def frozen_buffer_specs(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Names, shapes and dtypes of the buffers that replace the float weight when frozen."""
        return self.spec.buffers(self.weight_shape, self.settings)

    def frozen_buffers(self) -> dict[str, Tensor]:
        """The frozen weight buffers by name (as `frozen_buffer_specs` lists them)."""
        return {name: getattr(self, name) for name in self.frozen_buffer_specs()}

    def freeze(self) -> None:
        """Quantize the weight into plain buffers, drop the float weight, build the real kernels."""
        if self.mode == "real":
            return
        if not self.calibrated:
            raise DiffusiaError(f"{self.precision} layer has no activation range: calibrate before freeze")
        tensors = self.spec.quantize(self.weight.detach(), self.settings)
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
        """(Re)build the kernel objects from the buffers; one per timestep group with static activations, none for
        a precision computed in float from its dequantized weight."""
        factory = self._kernel_factory()
        n = self.settings.timestep_groups if self.spec.act_digits else 1
        self._kernels = [] if factory is None else [factory(self, g) for g in range(n)]
        self.mode = "real"

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> QModuleMixin:
        """`.to()`, `.half()`, `.cuda()` ... of a frozen layer: its kernels hold its buffers, so a dtype change is
        refused (the buffers are the quantized format) and a move or new layout rebuilds the kernels."""
        if getattr(self, "mode", None) != "real":
            return super()._apply(fn, recurse)
        own = [t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None]
        for t in own:  # probe on empty tensors first: refuse before anything moves
            probe = fn(torch.empty(0, dtype=t.dtype, device=t.device))
            if probe.dtype != t.dtype:
                raise DiffusiaError(
                    f"a frozen quantized layer cannot change dtype ({t.dtype} -> {probe.dtype}): "
                    "set the dtype before quantizing, or load the quantized model again"
                )
            if probe.device.type not in KERNEL_DEVICES:
                raise DiffusiaError(
                    f"frozen quantized layers run on {' or '.join(KERNEL_DEVICES)}, not "
                    f"{probe.device.type}: keep the U-Net there or load the float model"
                )
        before = [(t.device, t.data_ptr()) for t in own]
        super()._apply(fn, recurse)
        after = [
            (t.device, t.data_ptr()) for t in (*self._parameters.values(), *self._buffers.values()) if t is not None
        ]
        if after != before:
            self.build_kernels()
        return self

    def release_packed_source(self) -> bool:
        """Once oneDNN holds its own packed copy of the int8 weight, give back the source's resident pages (a
        loaded weight is mapped from its file and is read again only to save or copy the model)."""
        if self._kernels and all(getattr(k, "backend", None) == "onednn" for k in self._kernels):
            return release_pages(self.weight_int8)
        return False

    def dequantized(self) -> nn.Module:
        """A plain float layer computing what this one computes: the very float weight if not frozen, the frozen
        buffers dequantized if frozen (bias shared)."""
        args, kwargs = self._layer_args(self)
        layer = self.base_type(*args, **kwargs, device="meta")
        if self.mode == "real":
            weight = self.spec.dequantize(self.frozen_buffers(), tuple(self.weight_shape)).float()
            layer.weight = nn.Parameter(weight, requires_grad=False)
        else:
            layer.weight = self.weight
        layer.bias = self.bias
        return layer.train(self.training)

    # ----- forward
    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "real":
            return self._real_forward(x)
        w = self.weight
        if self.mode == "calibrate" and self._calibrators:
            self._calibrators[self.group].collect(x)
        elif self.mode == "fake":
            spec = self.spec
            w = spec.fake_quant_weight(w, self.settings)
            if spec.act_digits:
                x = spec.fake_quant_act(x, *self.act_qparams(self.group), self.settings.act_qmax)
        return self._float_op(x, w, self.bias)

    def _real_forward(self, x: Tensor) -> Tensor:
        if not self._kernels:  # a storage format (fp16/bf16 on CPU): dequantize and compute in fp32
            w = self.spec.dequantize(self.frozen_buffers(), self.weight_shape)
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
        if self.spec.act_digits:
            s += f", act_qmax={self.settings.act_qmax}, timestep_groups={self.settings.timestep_groups}"
        if self.spec.grouped:
            s += f", group_size={self.settings.group_size}"
        return s


@register(nn.Conv2d)
class QConv2d(QModuleMixin, nn.Conv2d):
    """Quantized nn.Conv2d."""

    @staticmethod
    def _layer_args(m: nn.Conv2d) -> tuple[tuple, dict[str, Any]]:
        if m.padding_mode != "zeros":
            raise DiffusiaError(f"Conv2d with padding_mode={m.padding_mode!r} is not supported; keep it in float")
        return (m.in_channels, m.out_channels, m.kernel_size), dict(
            stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups, bias=m.bias is not None
        )

    def _float_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _kernel_factory(self) -> Callable[[Any, int], Callable[[Tensor], Tensor]] | None:
        return self.spec.conv_kernel


@register(nn.Linear)
class QLinear(QModuleMixin, nn.Linear):
    """Quantized nn.Linear."""

    @staticmethod
    def _layer_args(m: nn.Linear) -> tuple[tuple, dict[str, Any]]:
        return (m.in_features, m.out_features), dict(bias=m.bias is not None)

    def _float_op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def _call_kernel(self, kernel: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        y = kernel(x.reshape(-1, x.shape[-1]))
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _kernel_factory(self) -> Callable[[Any, int], Callable[[Tensor], Tensor]] | None:
        return self.spec.linear_kernel
