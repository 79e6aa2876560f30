"""Export a quantized U-Net to ONNX in QDQ form (QuantizeLinear/DequantizeLinear around float ops), the format
edge runtimes (ONNX Runtime, TensorRT, OpenVINO, QNN) turn into integer kernels. Weights are stored as int8
initializers (int4 layers are exported dequantized, fp16 layers as fp16 with a Cast)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffusia.errors import DiffusiaError
from diffusia.fileio import atomic_path
from diffusia.quant import api, qmath

log = logging.getLogger(__name__)
OPSET = 17  # the legacy exporter quantizes reliably at 17 (see ../shared/CPU_INT8_NOTES.md)


def _qdq_forward(m) -> callable:
    """A forward for a frozen quantized module, written with fake-quant ops that export as QDQ pairs."""
    precision = m.precision
    # Unpacking happens here, outside the traced graph: the graph sees one constant per weight.
    if precision in ("w8a8", "w8"):
        scale = m.weight_scale.float()
        w_float = qmath.dequantize_weight_int8(m.weight_int8, scale)
        zeros = torch.zeros_like(scale, dtype=torch.int32)
    elif precision == "w4":  # opset 17 has no int4: exported dequantized (float) and flagged in the report
        w_float = qmath.dequantize_weight_int4(m.weight_int4, m.weight_scale, m.weight_shape)
    else:
        w_float = getattr(m, f"weight_{precision}").float()

    def weight() -> torch.Tensor:
        if precision in ("w8a8", "w8"):
            return torch.fake_quantize_per_channel_affine(w_float, scale, zeros, 0, -128, 127)
        return w_float

    def forward(x: torch.Tensor) -> torch.Tensor:
        if precision == "w8a8":
            scale, zp = m.act_qparams(m.group)
            x = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, int(m.settings.act_qmax))
        return m._float_op(x, weight(), m.bias)

    return forward


@contextlib.contextmanager
def qdq_mode(unet: nn.Module) -> Iterator[nn.Module]:
    qmods = api.qmodules(unet)
    if not qmods or any(m.mode != "real" for m in qmods.values()):
        raise DiffusiaError("ONNX export takes a frozen quantized U-Net: run `diffusia quantize` first")
    for m in qmods.values():
        m.forward = _qdq_forward(m)
    try:
        yield unet
    finally:
        for m in qmods.values():
            del m.forward


class _UNetOnly(nn.Module):
    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def example_inputs(unet: nn.Module, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    cfg = unet.config
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g),
            torch.tensor([500] * batch, dtype=torch.int64),
            torch.randn(batch, 77, cfg.cross_attention_dim, generator=g))


def fold_weight_quantizers(model) -> int:
    """Replace QuantizeLinear(constant float weight) by an int8 initializer feeding DequantizeLinear."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    folded, remove = 0, []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        w, scale = value(node.input[0]), value(node.input[1])
        zp = value(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8)
        if w is None or scale is None or zp is None or zp.dtype != np.int8:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim:
            shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.float32), -128, 127).astype(np.int8)
        model.graph.initializer.append(numpy_helper.from_array(q, name=node.output[0] + "_int8"))
        for other in model.graph.node:
            for i, inp in enumerate(other.input):
                if inp == node.output[0]:
                    other.input[i] = node.output[0] + "_int8"
        remove.append(node)
        folded += 1
    for node in remove:
        model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for node in [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        model.graph.node.remove(node)
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    return folded


def export_unet(unet: nn.Module, path: str | Path, batch: int = 2) -> Path:
    """Export the frozen quantized U-Net to `path` (.onnx, atomically); returns the path."""
    import onnx

    path = Path(path)
    inputs = example_inputs(unet, batch)
    with qdq_mode(unet), torch.no_grad(), atomic_path(path) as tmp:
        torch.onnx.export(_UNetOnly(unet).eval(), inputs, str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["noise_pred"],
                          do_constant_folding=True)
        model = onnx.load(str(tmp))
        n = fold_weight_quantizers(model)
        onnx.save(model, str(tmp))
    log.info("exported %s with %d int8 weight initializers", path, n)
    return path


def check_against_onnxruntime(unet: nn.Module, path: str | Path, batch: int = 2, seed: int = 1) -> dict:
    """Relative L2 difference between ONNX Runtime's output and diffusia's: its real-kernel output, and the
    exported QDQ graph run in PyTorch (the exact math the ONNX file encodes)."""
    import onnxruntime as ort

    inputs = example_inputs(unet, batch, seed)
    with torch.no_grad():
        ref = unet(*inputs).sample.numpy()
        with qdq_mode(unet):
            graph = unet(*inputs).sample.numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"sample": inputs[0].numpy(), "timestep": inputs[1].numpy(),
                          "encoder_hidden_states": inputs[2].numpy()})[0]

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-12))

    return {"relative_l2_vs_diffusia": rel(out, ref), "relative_l2_vs_qdq_graph": rel(out, graph),
            "onnxruntime": ort.__version__}
