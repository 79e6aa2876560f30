"""Experiment pass of `benchmarks/_backends_experiments.py` (row `diffusia_w8_ort_widened_convs`): weight-only
convolutions widened by ONNX Runtime when it loads the graph. Measured and not shipped (README, "Weight-only
convolutions on ONNX Runtime"): faster, and more memory than the FP32 session."""

from __future__ import annotations

import numpy as np


def widen_weight_only_convs(model) -> int:
    """Let ONNX Runtime widen the per-channel int8 weights of weight-only convolutions once, at load:
    their DequantizeLinear (which ONNX Runtime never folds, keeping it for its QDQ fusions) becomes Cast + Mul by
    the scale, which its constant folding computes when it loads the graph, so the Conv gets a constant float
    weight in its blocked layout instead of dequantizing it on every call. Same values (code x scale, zero point
    0), same bytes on disk. W8A8 convolutions (quantized input) keep their pairs. Returns how many weights."""
    from onnx import TensorProto, helper, numpy_helper

    from diffusia.export.weights import _drop_unused, constant_value

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    weight_only: dict[str, bool] = {}  # weight DequantizeLinear -> every Conv it feeds has a float input
    for conv in (n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1):
        dq, source = producer.get(conv.input[1]), producer.get(conv.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        float_input = source is None or source.op_type != "DequantizeLinear"
        weight_only[dq.output[0]] = weight_only.get(dq.output[0], True) and float_input
    nodes, n = model.graph.node, 0
    for k in reversed(range(len(nodes))):
        dq = nodes[k]
        if dq.op_type != "DequantizeLinear" or not weight_only.get(dq.output[0]):
            continue
        codes, scale = inits[dq.input[0]], constant_value(dq.input[1], inits, producer)
        zero = constant_value(dq.input[2], inits, producer) if len(dq.input) > 2 else np.zeros((), np.int8)
        if codes.data_type != TensorProto.INT8 or scale is None or zero is None or zero.any():
            continue
        if scale.ndim:  # per channel along `axis`: broadcast as Mul does
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % len(codes.dims)
            scale = scale.reshape([-1 if d == axis else 1 for d in range(len(codes.dims))])
        name = dq.output[0]
        model.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), name=f"{name}.scale"))
        cast = helper.make_node("Cast", [dq.input[0]], [f"{name}.float_codes"], to=TensorProto.FLOAT)
        nodes[k].CopyFrom(helper.make_node("Mul", [f"{name}.float_codes", f"{name}.scale"], [name], name=dq.name))
        nodes.insert(k, cast)
        n += 1
    if n:
        _drop_unused(model)
    return n
