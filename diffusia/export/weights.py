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
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    _drop_unused(model)  # the QuantizeLinear nodes, their float weights
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


def int4_matmuls(model) -> int:
    """Run each int4 linear as ONNX Runtime's MatMulNBits (contrib op, ONNX Runtime only): the export's int8 codes
    [out x groups, group] behind DequantizeLinear, reshaped (and sliced) to the weight and transposed, become packed
    4-bit codes [out, groups, group / 2] (code + 8, zero point 8, the first in the low nibble) with the group scales,
    computed in float32 (accuracy level 1). Same values in half the bytes of the int8 codes, on disk and in the
    session. Returns how many."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1

    def array(name):
        return constant_value(name, inits, producer)

    nodes, n = model.graph.node, 0
    for k, matmul in enumerate(nodes):
        chain = _weight_chain(matmul, producer, readers) if matmul.op_type == "MatMul" else None
        if chain is None:
            continue
        dq, last_reshape = chain
        codes, scale, shape = array(dq.input[0]), array(dq.input[1]), array(last_reshape.input[1])
        zero = array(dq.input[2]) if len(dq.input) > 2 else np.zeros(1, np.int8)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if any(v is None for v in (codes, scale, shape, zero)) or codes.dtype != np.int8 or codes.ndim != 2:
            continue
        if shape.size != 2 or axis != 0 or zero.any() or codes.min() < -8 or codes.max() > 7:
            continue
        (rows, group), (out, cols) = codes.shape, (int(v) for v in shape)
        if out <= 0 or rows % out or -(-cols // group) != rows // out or scale.size != rows:
            continue
        if group < 16 or group & (group - 1):  # MatMulNBits' blocks: a power of two from 16
            continue
        q = (codes.astype(np.int16) + 8).astype(np.uint8).reshape(out, rows // out, group)
        name = matmul.name or matmul.output[0]
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q[..., 0::2] | (q[..., 1::2] << 4), name=f"{name}.nbits_codes"),
                numpy_helper.from_array(scale.astype(np.float32).reshape(out, -1), name=f"{name}.nbits_scales"),
            ]
        )
        new = helper.make_node(
            "MatMulNBits",
            [matmul.input[0], f"{name}.nbits_codes", f"{name}.nbits_scales"],
            list(matmul.output),
            name=name,
            domain="com.microsoft",
            K=cols,
            N=out,
            bits=4,
            block_size=group,
            accuracy_level=1,
        )
        nodes[k].CopyFrom(new)
        n += 1
    if n:
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        _drop_unused(model)
    return n


def _weight_chain(matmul, producer: dict, readers: dict):
    """(DequantizeLinear, the Reshape to the weight) when MatMul's second input is the export's int4 weight path:
    Transpose <- Reshape <- (Slice, Reshape)... <- DequantizeLinear, each read once; else None."""
    node = producer.get(matmul.input[1])
    if node is None or node.op_type != "Transpose" or readers.get(matmul.input[1]) != 1:
        return None
    node = producer.get(node.input[0])
    last = node
    while node is not None and node.op_type in ("Reshape", "Slice") and readers.get(node.output[0]) == 1:
        node = producer.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear" or last.op_type != "Reshape" or last is node:
        return None
    return node, last


def constant_value(name: str, inits: dict, producer: dict):
    """A graph constant's value: an initializer (`inits`, by name), a Constant node (`producer`, by output), or
    either behind a Cast; None for anything computed."""
    from onnx import helper, numpy_helper

    node = producer.get(name)
    if name in inits or node is None:
        return numpy_helper.to_array(inits[name]) if name in inits else None
    if node.op_type == "Cast":
        value, to = constant_value(node.input[0], inits, producer), next(a.i for a in node.attribute if a.name == "to")
        return None if value is None else value.astype(helper.tensor_dtype_to_np_dtype(to))
    return _constant(node)


def _constant(node):
    if node is None or node.op_type != "Constant":
        return None
    from onnx import numpy_helper

    return numpy_helper.to_array(node.attribute[0].t)


def _drop_unused(model) -> None:
    """Remove nodes none of whose outputs is read (nor a graph output), then unread initializers. By index:
    protobuf's remove() compares whole messages."""
    outputs = {o.name for o in model.graph.output}
    nodes = model.graph.node
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        dead = [k for k, n in enumerate(nodes) if not any(o in read for o in n.output)]
        if not dead:
            break
        for k in reversed(dead):
            del nodes[k]
    read = {i for n in nodes for i in n.input} | outputs
    initializers = model.graph.initializer
    for k in reversed([k for k, i in enumerate(initializers) if i.name not in read]):
        del initializers[k]
