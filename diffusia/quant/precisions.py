"""The precisions of quantized layers: one frozen description each, looked up by name.

A `Precision` says how a layer's weight is stored once frozen (buffers, bytes), how it is simulated (fake quant),
which real kernel computes with it and how ONNX export writes it; activations are static uint codes when
`act_digits` > 0. Adding a precision is one `register_precision(Precision(...))`; `fp32` and `keep` are plan
values that leave a layer in float, not precisions of a quantized layer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusia.errors import DiffusiaError
from diffusia.quant import cpu, qmath

Shape = tuple[int, ...]
BufferSpecs = dict[str, tuple[Shape, torch.dtype]]
KernelFactory = Callable[[Any, int], Callable[[Tensor], Tensor]]  # (frozen module, timestep group) -> kernel
FLOAT_PLANS = ("fp32", "keep")  # plan values that leave a layer a plain float module


@dataclass(frozen=True)
class Precision:
    """How layers of one precision are stored, simulated, computed and exported."""

    name: str
    weight_bits: int
    act_digits: int  # uint activation digits (w8a8: 1, w8a8x2: 2); 0 = float activations
    storage: torch.dtype  # dtype of the frozen weight buffer
    buffers: Callable[[Shape, Any], BufferSpecs]  # (weight shape, QSettings) -> frozen buffer names/shapes/dtypes
    quantize: Callable[[Tensor, Any], dict[str, Tensor]]  # (float weight, QSettings) -> frozen buffers
    dequantize: Callable[[Mapping[str, Tensor], Shape], Tensor]  # (frozen buffers, weight shape) -> float weight
    weight_bytes: Callable[[Shape, int], float]  # (weight shape, group size) -> stored bytes of the weight
    conv_kernel: KernelFactory | None = None  # None: computed in float32 from the dequantized weight
    linear_kernel: KernelFactory | None = None
    onnx_int8_weight: bool = False  # ONNX: per-channel int8 weight (QDQ folded to an initializer), else dequantized
    grouped: bool = False  # weights quantized in groups of QSettings.group_size input columns
    settings: Callable[[Any, str], dict[str, Any]] | None = None  # (Recipe, cpu class) -> QSettings overrides

    def fake_quant_weight(self, w: Tensor, settings: Any) -> Tensor:
        """Simulated quantize-dequantize of a weight (straight-through gradient): the frozen buffers' values."""
        y = self.dequantize(self.quantize(w, settings), tuple(w.shape))
        return qmath.ste(w, y.to(w.dtype))

    def fake_quant_act(self, x: Tensor, scale: float, zero_point: int, qmax: int) -> Tensor:
        """Simulated activation quantization (identity if activations stay float)."""
        return qmath.fake_quant_act(x, scale, zero_point, qmax, self.act_digits) if self.act_digits else x

    def extra_bytes(self, timestep_groups: int = 1) -> float:
        """Bytes of the activation quantization parameters (range, scale, zero point per timestep group)."""
        return 16.0 * timestep_groups if self.act_digits else 0.0


_PRECISIONS: dict[str, Precision] = {}


def register_precision(p: Precision) -> Precision:
    if p.name in _PRECISIONS or p.name in FLOAT_PLANS:
        raise DiffusiaError(f"precision {p.name!r} is already defined: pick another name")
    _PRECISIONS[p.name] = p
    return p


def unregister_precision(name: str) -> None:
    _PRECISIONS.pop(name, None)


def precision_names() -> tuple[str, ...]:
    return tuple(_PRECISIONS)


def get_precision(name: str) -> Precision:
    p = _PRECISIONS.get(name)
    if p is None:
        raise DiffusiaError(f"precision {name!r} is not a quantized precision; valid: {', '.join(_PRECISIONS)}")
    return p


def act_digits(name: str) -> int:
    """Activation digits of a plan value (0 for float activations, `fp32` and `keep`)."""
    return _PRECISIONS[name].act_digits if name in _PRECISIONS else 0


# ----------------------------------------------------------------- storage formats
def _cols(shape: Shape) -> int:
    return int(torch.Size(shape[1:]).numel())


def _half(name: str, dtype: torch.dtype) -> dict[str, Any]:
    key = f"weight_{name}"
    return dict(
        storage=dtype,
        buffers=lambda shape, s: {key: (shape, dtype)},
        quantize=lambda w, s: {key: w.detach().to(dtype).contiguous()},
        dequantize=lambda b, shape: b[key].float(),
        weight_bytes=lambda shape, gs: 2.0 * shape[0] * _cols(shape),
    )


def int8_weights(qmax: int | None = None) -> dict[str, Any]:
    """Per-output-channel symmetric int8 storage in [-qmax, qmax] (default: the layer's `weight_qmax`)."""

    def quantize(w: Tensor, s: Any) -> dict[str, Tensor]:
        q, scale = qmath.quantize_weight_int8(w, s.weight_qmax if qmax is None else qmax)
        return {"weight_int8": q, "weight_scale": scale}

    return dict(
        storage=torch.int8,
        onnx_int8_weight=True,
        quantize=quantize,
        buffers=lambda shape, s: {"weight_int8": (shape, torch.int8), "weight_scale": ((shape[0],), torch.float32)},
        dequantize=lambda b, shape: qmath.dequantize_weight_int8(b["weight_int8"], b["weight_scale"]),
        weight_bytes=lambda shape, gs: shape[0] * _cols(shape) + 4.0 * shape[0],
    )


def _int4_buffers(shape: Shape, s: Any) -> BufferSpecs:
    padded = qmath.int4_padded_cols(_cols(shape), s.group_size)
    return {
        "weight_int4": ((shape[0], padded // 2), torch.uint8),
        "weight_scale": ((shape[0], padded // s.group_size), torch.float16),
    }


def _int4_bytes(shape: Shape, group_size: int) -> float:
    padded = qmath.int4_padded_cols(_cols(shape), group_size)
    return shape[0] * padded / 2 + 2.0 * shape[0] * (padded // group_size)  # nibbles + fp16 group scales


# ----------------------------------------------------------------- kernels
def _k() -> Any:
    return importlib.import_module("diffusia.quant.kernels")  # imported when the first kernel is built


def _conv(m: Any) -> tuple:
    return m.stride, m.padding, m.dilation, m.groups


def _act(m: Any, group: int) -> dict[str, Any]:
    scale, zp = m.act_qparams(group)
    return dict(act_scale=scale, act_zero_point=zp, act_qmax=m.settings.act_qmax, act_digits=m.spec.act_digits)


def _static_int8_conv(m: Any, g: int) -> Any:
    return _k().Int8Conv2d(m.weight_int8, m.weight_scale, m._bias(), *_conv(m), **_act(m, g))


def _static_int8_linear(m: Any, g: int) -> Any:
    return _k().Int8Linear(m.weight_int8, m.weight_scale, m._bias(), **_act(m, g))


def _w8_conv(m: Any, g: int) -> Any:
    return _k().WeightInt8Conv2d(m.weight_int8, m.weight_scale, m._bias(), *_conv(m))


def _w8_linear(m: Any, g: int) -> Any:
    return _k().WeightInt8Linear(m.weight_int8, m.weight_scale, m._bias())


def _w4_conv(m: Any, g: int) -> Any:
    return _k().WeightInt4Conv2d(
        m.weight_int4,
        m.weight_scale,
        m._bias(),
        *_conv(m),
        group_size=m.settings.group_size,
        weight_shape=m.weight_shape,
    )


def _w4_linear(m: Any, g: int) -> Any:
    return _k().WeightInt4Linear(
        m.weight_int4, m.weight_scale, m._bias(), group_size=m.settings.group_size, in_features=m.in_features
    )


# ----------------------------------------------------------------- recipe-dependent layer settings
def act_qmax_for(activations: str) -> int:
    """Top of the uint activation range: 127 for uint7; 255 for the others (saturation on CPUs without
    VNNI is avoided by narrowing the weights instead, see `cpu.weight_qmax`)."""
    return 127 if activations == "uint7" else 255


def _w8a8_settings(recipe: Any, cpu_class: str) -> dict[str, Any]:
    """Activations 0..act_qmax_for(recipe.activations), symmetric ranges for int8 (and balanced ones for balanced);
    7-bit weights where 8-bit activations could saturate the int16 pair sums of `cpu_class`."""
    qmax = act_qmax_for(recipe.activations)
    return {"act_qmax": qmax, "weight_qmax": cpu.weight_qmax(qmax, cpu_class), **_signedness(recipe)}


def _w8a8x2_settings(recipe: Any, cpu_class: str) -> dict[str, Any]:
    """Two digits of 7 bits where pair sums could saturate (8 elsewhere) with 8-bit weights; min-max range (with
    ~14-16 bits of resolution nothing is gained by clipping the calibration outliers)."""
    qmax = 127 if recipe.activations == "uint7" or cpu_class == "avx2" else 255
    return {"act_qmax": qmax, "calibrator": "minmax", **_signedness(recipe)}


def _signedness(recipe: Any) -> dict[str, bool]:
    return {"act_symmetric": recipe.activations == "int8", "act_balanced": recipe.activations == "balanced"}


_INT8_KERNELS = dict(conv_kernel=_static_int8_conv, linear_kernel=_static_int8_linear)
register_precision(Precision("fp16", 16, 0, **_half("fp16", torch.float16)))
register_precision(Precision("bf16", 16, 0, **_half("bf16", torch.bfloat16)))
register_precision(Precision("w8a8", 8, 1, **int8_weights(), **_INT8_KERNELS, settings=_w8a8_settings))
register_precision(Precision("w8a8x2", 8, 2, **int8_weights(), **_INT8_KERNELS, settings=_w8a8x2_settings))
register_precision(Precision("w8", 8, 0, **int8_weights(), conv_kernel=_w8_conv, linear_kernel=_w8_linear))
register_precision(
    Precision(
        "w4",
        4,
        0,
        storage=torch.uint8,
        buffers=_int4_buffers,
        weight_bytes=_int4_bytes,
        grouped=True,
        quantize=lambda w, s: dict(zip(("weight_int4", "weight_scale"), qmath.quantize_weight_int4(w, s.group_size))),
        dequantize=lambda b, shape: qmath.dequantize_weight_int4(b["weight_int4"], b["weight_scale"], shape),
        conv_kernel=_w4_conv,
        linear_kernel=_w4_linear,
    )
)
