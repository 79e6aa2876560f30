"""Static W8A8 conv2d / linear on real INT8 kernels.

CPU (x86): oneDNN `qconv_pointwise` / `qlinear_pointwise` take the uint8 activation, the prepacked int8
weight and return float32 directly (scales and bias applied on the int32 accumulator, no output
requantization). The input is quantized by `quantize_act_digits` (one vectorized pass, plus a uint8 clamp for
7-bit activations); that cost is part of every call. With `act_digits=2` (precision `w8a8x2`) the first digit's
rounding residual is quantized again and run through the same packed weight without bias: two INT8 calls whose
sum sees ~14-bit (7-bit digits) or ~16-bit (8-bit digits) activations. Output of the conv is channels_last by
default when the input is (oneDNN's native layout); NCHW input gets NCHW output unless `channels_last_output=True`.

Where oneDNN is missing (non-x86 builds), or where the weights and activations would saturate this CPU's int16 pair
sums (a layout made for VNNI on a CPU without it), the kernels fall back to the float reference and say so in
`backend` ("reference") and the log: such timings are simulated, never INT8 speedups.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusia.quant import cpu
from diffusia.quant.kernels import cuda
from diffusia.quant.kernels._common import check_weight, logger, onednn_int8_available, quantize_act_digits
from diffusia.quant.kernels.reference import reference_int8_conv2d, reference_int8_linear
from diffusia.quant.qmath import residual_qparams

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


_warned: set[str] = set()


def _check_act(act_scale: float, act_zero_point: int, act_qmax: int, name: str, act_digits: int = 1) -> None:
    if act_digits not in (1, 2):
        raise ValueError(f"{name}: act_digits must be 1 or 2, got {act_digits}")
    if not (act_digits <= act_qmax <= 255):
        raise ValueError(f"{name}: act_qmax must be in {act_digits}..255, got {act_qmax}")
    if not (0 <= act_zero_point <= act_qmax):
        raise ValueError(f"{name}: act_zero_point {act_zero_point} outside 0..{act_qmax}")
    if not act_scale > 0:
        raise ValueError(f"{name}: act_scale must be > 0, got {act_scale}")


def _cpu_backend(weight_int8: Tensor, act_qmax: int, name: str) -> str:
    """ "onednn", or "reference" where oneDNN is missing or its int16 pair sums would saturate on this hardware
    (a layout made for VNNI on a CPU without it: never run wrong, run simulated and say so)."""
    if not onednn_int8_available():
        logger.warning("%s: oneDNN INT8 ops unavailable; using the float reference (simulated)", name)
        return "reference"
    real = cpu.detected_features()
    if cpu.has_vnni(real) or cpu.pair_sums_fit(act_qmax, 127) or not weight_int8.numel():
        return "onednn"
    peak = int(weight_int8.to(torch.int16).abs().max())
    if cpu.pair_sums_fit(act_qmax, peak):
        return "onednn"
    (logger.debug if name in _warned else logger.warning)(
        "%s: activations 0..%d with |weight| up to %d would saturate int16 pair sums on this CPU (no VNNI): "
        "running the float reference (simulated, slow); re-quantize with `--target auto` for real INT8 kernels",
        name,
        act_qmax,
        peak,
    )
    _warned.add(name)
    return "reference"


class _Prepacked:
    """Activation digits, and pickling/deepcopy support: the oneDNN packed weight is opaque, so it is rebuilt from
    weight_int8."""

    backend: str
    act_scale: float
    act_zero_point: int
    act_qmax: int
    act_digits: int

    def digit_qparams(self) -> list[tuple[float, int]]:
        """(scale, zero point) of each activation digit."""
        first = (self.act_scale, self.act_zero_point)
        return [first] if self.act_digits == 1 else [first, residual_qparams(self.act_scale, self.act_qmax)]

    def _digits(self, x: Tensor) -> list[Tensor]:
        return quantize_act_digits(x, self.act_scale, self.act_zero_point, self.act_qmax, self.act_digits)

    def _prepack(self) -> Tensor:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_packed", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.backend == "onednn":
            self._packed = self._prepack()


class Int8Conv2d(_Prepacked):
    """Static W8A8 conv2d: per-output-channel symmetric int8 weights, per-tensor affine uint activations."""

    def __init__(
        self,
        weight_int8: Tensor,
        weight_scale: Tensor,
        bias: Tensor | None,
        stride: IntPair,
        padding: IntPair,
        dilation: IntPair,
        groups: int,
        act_scale: float,
        act_zero_point: int,
        act_qmax: int = 127,
        channels_last_output: bool | None = None,
        act_digits: int = 1,
    ) -> None:
        check_weight(weight_int8, weight_scale, torch.int8, 4, "Int8Conv2d")
        act_scale, act_zero_point = float(act_scale), int(act_zero_point)
        _check_act(act_scale, act_zero_point, act_qmax, "Int8Conv2d", act_digits)
        self.act_digits = act_digits
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups = int(groups)
        self.act_scale, self.act_zero_point, self.act_qmax = act_scale, act_zero_point, int(act_qmax)
        self.channels_last_output = channels_last_output
        self.weight_int8 = weight_int8
        self.weight_scale = weight_scale.float().contiguous()
        self.bias = None if bias is None else bias.float().contiguous()
        self._w_zp = torch.zeros(weight_int8.shape[0], dtype=torch.int64)
        self.backend = (
            "cuda-fp16" if weight_int8.device.type == "cuda" else _cpu_backend(weight_int8, act_qmax, "Int8Conv2d")
        )
        if self.backend == "onednn":
            self._packed = self._prepack()

    def _prepack(self) -> Tensor:
        # x_shape=None: one packing serves every input size (measured as fast as a shape-specific one).
        return torch.ops.onednn.qconv_prepack(
            self.weight_int8.contiguous(),
            self.weight_scale,
            self.act_scale,
            self.act_zero_point,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            None,
        )

    def __call__(self, x: Tensor) -> Tensor:
        if self.backend == "onednn":
            y = None
            for qx, (scale, zp) in zip(self._digits(x), self.digit_qparams()):
                yd = torch.ops.onednn.qconv_pointwise(
                    qx,
                    scale,
                    zp,
                    self._packed,
                    self.weight_scale,
                    self._w_zp,
                    self.bias if y is None else None,
                    self.stride,
                    self.padding,
                    self.dilation,
                    self.groups,
                    1.0,
                    0,
                    torch.float32,
                    "none",
                    [],
                    "",
                )
                y = yd if y is None else y.add_(yd)
            cl = self.channels_last_output
            if cl is None:
                cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            return y if cl else y.contiguous()
        if self.backend == "cuda-fp16":
            return cuda.w8a8_conv2d_fp16(x, self)
        return reference_int8_conv2d(
            x,
            self.weight_int8,
            self.weight_scale,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.act_scale,
            self.act_zero_point,
            self.act_qmax,
            self.act_digits,
        )


class Int8Linear(_Prepacked):
    """Static W8A8 linear over the last dim of x: weight (O, I) int8 per-channel, uint activations per-tensor."""

    def __init__(
        self,
        weight_int8: Tensor,
        weight_scale: Tensor,
        bias: Tensor | None,
        act_scale: float,
        act_zero_point: int,
        act_qmax: int = 127,
        act_digits: int = 1,
    ) -> None:
        check_weight(weight_int8, weight_scale, torch.int8, 2, "Int8Linear")
        act_scale, act_zero_point = float(act_scale), int(act_zero_point)
        _check_act(act_scale, act_zero_point, act_qmax, "Int8Linear", act_digits)
        self.act_digits = act_digits
        self.act_scale, self.act_zero_point, self.act_qmax = act_scale, act_zero_point, int(act_qmax)
        self.weight_int8 = weight_int8
        self.weight_scale = weight_scale.float().contiguous()
        self.bias = None if bias is None else bias.float().contiguous()
        self.out_features = weight_int8.shape[0]
        self._w_zp = torch.zeros(self.out_features, dtype=torch.int64)
        if weight_int8.device.type == "cuda":
            self.backend = "cuda-int_mm"
            self._cuda = cuda.prepare_w8a8_linear(weight_int8, self.weight_scale)
        else:
            self.backend = _cpu_backend(weight_int8, act_qmax, "Int8Linear")
            if self.backend == "onednn":
                self._packed = self._prepack()

    def _prepack(self) -> Tensor:
        return torch.ops.onednn.qlinear_prepack(self.weight_int8.contiguous(), None)

    def __call__(self, x: Tensor) -> Tensor:
        if self.backend == "onednn":
            y = None
            for qx, (scale, zp) in zip(self._digits(x.reshape(-1, x.shape[-1])), self.digit_qparams()):
                yd = torch.ops.onednn.qlinear_pointwise(
                    qx.contiguous(),
                    scale,
                    zp,
                    self._packed,
                    self.weight_scale,
                    self._w_zp,
                    self.bias if y is None else None,
                    1.0,
                    0,
                    torch.float32,
                    "none",
                    [],
                    "",
                )
                y = yd if y is None else y.add_(yd)
            return y.reshape(*x.shape[:-1], self.out_features)
        if self.backend == "cuda-int_mm":
            return cuda.w8a8_linear_int_mm(x, self, self._cuda)
        return reference_int8_linear(
            x,
            self.weight_int8,
            self.weight_scale,
            self.bias,
            self.act_scale,
            self.act_zero_point,
            self.act_qmax,
            self.act_digits,
        )
