"""A frozen quantized U-Net's layers written with fake-quant ops, for the ONNX export: each forward exports as QDQ
pairs (QuantizeLinear/DequantizeLinear) around the float op, which runtimes turn into integer kernels."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from diffusia.errors import DiffusiaError
from diffusia.quant import api, qmath


def fake_quant(x: torch.Tensor, scale: float, zp: int, qmax: int) -> torch.Tensor:
    """A uint8 QDQ pair; a narrower range (7-bit) clamps the float input first, so the pair stays a plain
    QuantizeLinear/DequantizeLinear that runtimes fuse (OpenVINO does not fuse Q -> Clip -> DQ) with the same codes."""
    if qmax < 255:
        x = torch.clamp(x, (0 - zp) * scale, (qmax - zp) * scale)
    return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)


# Scales the graph reads as module buffers while it exports (a QDQ pair of plain constants is folded to float by the
# tracer): int4 layers' group scales, flat; a split layer's per-channel scales, one per part
TEMPORARY_BUFFER = "onnx_"


def _temporary_buffer(m, name: str, value: torch.Tensor) -> torch.Tensor:
    m.register_buffer(TEMPORARY_BUFFER + name, value.contiguous())
    return getattr(m, TEMPORARY_BUFFER + name)


def _weight(m, rows: slice = slice(None), part: int = 0) -> Callable[[], torch.Tensor]:
    """The weight (its output channels `rows`, part `part` of a split layer) as the graph computes it. Unpacking
    happens here, outside the traced graph, so the graph sees one constant per weight: per-channel int8 as a QDQ pair
    (`weights.fold_weight_quantizers` stores an int8 initializer); int4 groups (whole weights only) as a QDQ pair per
    row of [out x groups, group] (the codes fit int8: stored as int8, as int4 in OpenVINO's IR), then reshaped to the
    weight; fp16/bf16 weights as their float32 values (stored as fp16 where they all are fp16 values:
    `weights.narrow_float_weights`)."""
    spec, whole = m.spec, rows == slice(None)
    w_float = spec.dequantize(m.frozen_buffers(), m.weight_shape)
    w_float = w_float if whole else w_float[rows]
    if not (spec.onnx_int8_weight or spec.grouped):
        return lambda: w_float
    scale = m.weight_scale.float()  # per output channel, or [out, groups]
    if spec.onnx_int8_weight:
        scale = scale if whole else _temporary_buffer(m, f"part_scale_{part}", scale[rows])
        zeros = torch.zeros_like(scale, dtype=torch.int32)
        return lambda: torch.fake_quantize_per_channel_affine(w_float, scale, zeros, 0, -128, 127)
    if not whole:
        raise DiffusiaError("an int4 layer exports whole: its group scales are one buffer")
    scale = _temporary_buffer(m, "group_scale", scale.reshape(-1))
    zeros = torch.zeros_like(scale, dtype=torch.int32)
    out, cols = w_float.shape[0], w_float[0].numel()
    padded = qmath.int4_padded_cols(cols, m.settings.group_size)
    rows_of_groups = torch.nn.functional.pad(w_float.reshape(out, cols), (0, padded - cols)).reshape(scale.numel(), -1)

    def grouped() -> torch.Tensor:
        w = torch.fake_quantize_per_channel_affine(rows_of_groups, scale, zeros, 0, -128, 127).reshape(out, padded)
        return (w[:, :cols] if padded != cols else w).reshape(w_float.shape)

    return grouped


def qdq_forward(m, parts: int = 1) -> Callable:
    """A forward for a frozen quantized module, written with fake-quant ops that export as QDQ pairs. `parts` > 1
    splits the output channels into that many equal layers over the same quantized input (a tuple of outputs)."""
    spec = m.spec
    out = m.weight_shape[0] // parts
    rows = [slice(i * out, (i + 1) * out) for i in range(parts)] if parts > 1 else [slice(None)]
    weights = [_weight(m, r, i) for i, r in enumerate(rows)]
    biases = [None if m.bias is None else m.bias.detach()[r] for r in rows]

    def forward(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if not spec.act_digits:
            ys = [m._float_op(x, w(), b) for w, b in zip(weights, biases)]
        else:
            (scale, zp), qmax = m.act_qparams(m.group), int(m.settings.act_qmax)
            x1 = fake_quant(x, scale, zp, qmax)
            ys = [m._float_op(x1, w(), b) for w, b in zip(weights, biases)]
            if spec.act_digits == 2:  # w8a8x2: the residual's digit through the same weight, no bias
                s2, zp2 = qmath.residual_qparams(scale, qmax)
                x2 = fake_quant(x - x1, s2, zp2, qmax)
                ys = [y + m._float_op(x2, w(), None) for y, w in zip(ys, weights)]
        return ys[0] if parts == 1 else tuple(ys)

    return forward


def split_geglus(unet: nn.Module, qmods: dict[str, nn.Module]) -> list[nn.Module]:
    """The GEGLU feed-forward inputs (diffusers' `GEGLU`: one projection to value and gate halves) whose projection
    is a quantized layer that can export in halves (not int4 groups)."""
    from diffusers.models.activations import GEGLU

    quantized = {id(m) for m in qmods.values()}
    return [g for g in unet.modules() if isinstance(g, GEGLU) and id(g.proj) in quantized and not g.proj.spec.grouped]


def _geglu_forward(geglu: nn.Module) -> Callable:
    """GEGLU with its projection exported as two layers, value and gate: the same values, without splitting one
    wide output (a reference-kernel VariadicSplit on OpenVINO, 4 ms of SD's step; benchmarks/openvino_profile.py)."""

    def forward(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        value, gate = geglu.proj(hidden_states)  # the projection's scope, so its nodes keep the layer's name
        return value * geglu.gelu(gate)

    return forward


@contextlib.contextmanager
def qdq_mode(unet: nn.Module) -> Iterator[nn.Module]:
    """While open, the frozen quantized `unet` computes with `qdq_forward`s (GEGLU projections in halves)."""
    qmods = api.qmodules(unet)
    if not qmods or any(m.mode != "real" for m in qmods.values()):
        raise DiffusiaError("ONNX export takes a frozen quantized U-Net: run `diffusia quantize` first")
    geglus = split_geglus(unet, qmods)
    halves = {id(g.proj) for g in geglus}
    for m in qmods.values():
        m.forward = qdq_forward(m, parts=2) if id(m) in halves else qdq_forward(m)
    for g in geglus:
        g.forward = _geglu_forward(g)
    try:
        yield unet
    finally:
        for m in [*qmods.values(), *geglus]:
            del m.forward
        for m in qmods.values():
            for name in [n for n in m._buffers if n.startswith(TEMPORARY_BUFFER)]:
                del m._buffers[name]
