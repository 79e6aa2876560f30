"""How an exported ONNX graph stores its weights: int8 initializers folded from the weights' QDQ pairs, and fp16
values as fp16. Both keep every value exactly; OpenVINO's IR narrows further (`export.openvino.narrow_weights`)."""

from __future__ import annotations

import numpy as np


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

    renamed = {}  # QuantizeLinear output -> its int8 initializer
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
        renamed[node.output[0]] = node.output[0] + "_int8"
    nodes = model.graph.node
    folded = [k for k, n in enumerate(nodes) if n.op_type == "QuantizeLinear" and n.output[0] in renamed]
    for k in reversed(folded):  # by index: protobuf's remove() compares whole messages
        del nodes[k]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    for k in reversed([k for k, n in enumerate(nodes) if n.op_type == "Constant" and n.output[0] not in used]):
        del nodes[k]
    initializers = model.graph.initializer
    for k in reversed([k for k, i in enumerate(initializers) if i.name not in used]):
        del initializers[k]
    return len(folded)


NARROW_MIN_SIZE = 1024  # elements: weights, not the graph's small constants


def narrow_float_weights(model) -> int:
    """Store each float32 weight (initializer or Constant node) whose values are all float16 values (fp16 layers)
    as float16 behind a Cast: lossless, half the bytes on disk (runtimes fold the Cast when they load). Returns
    how many."""
    from onnx import TensorProto, helper, numpy_helper

    def half_of(tensor):
        if tensor.data_type != TensorProto.FLOAT or int(np.prod(tensor.dims)) < NARROW_MIN_SIZE:
            return None
        values = numpy_helper.to_array(tensor)
        half = values.astype(np.float16)
        return half if np.array_equal(half.astype(np.float32), values) else None

    def cast(name: str):
        return helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT)

    nodes, n = model.graph.node, 0
    for k in reversed(range(len(nodes))):  # Constant nodes: the Cast right after each
        value = nodes[k].attribute[0] if nodes[k].op_type == "Constant" and nodes[k].attribute else None
        half = half_of(value.t) if value is not None and value.name == "value" else None
        if half is not None:
            name = nodes[k].output[0]
            value.t.CopyFrom(numpy_helper.from_array(half, name=value.t.name))
            nodes[k].output[0] = name + "_fp16"
            nodes.insert(k + 1, cast(name))
            n += 1
    for init in model.graph.initializer:  # initializers: the Casts first, before every consumer
        name, half = init.name, half_of(init)
        if half is not None:
            init.CopyFrom(numpy_helper.from_array(half, name=name + "_fp16"))
            nodes.insert(0, cast(name))
            n += 1
    return n
