"""diffusia.export.weights: fp16 values stored as fp16 behind a Cast, in initializers and Constant nodes, and the
graph stays valid and computes the same."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from diffusia.export.onnx import onnxruntime_session
from diffusia.export.weights import narrow_float_weights


def test_fp16_values_are_stored_as_fp16_and_the_graph_computes_the_same(tmp_path):
    rng = np.random.default_rng(0)
    half_init = rng.standard_normal((32, 64)).astype(np.float16).astype(np.float32)
    half_const = rng.standard_normal((64, 32)).astype(np.float16).astype(np.float32)
    single = rng.standard_normal((32, 32)).astype(np.float32)  # not fp16 values: stays float32
    nodes = [
        helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(half_const, "w2_value")),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["g"]),
        helper.make_node("MatMul", ["g", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
        [numpy_helper.from_array(half_init, "w1"), numpy_helper.from_array(single, "w3")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 32)).astype(np.float32)
    before = tmp_path / "before.onnx"
    onnx.save(model, str(before))
    assert narrow_float_weights(model) == 2
    onnx.checker.check_model(model)
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    assert kinds == {"w1_fp16": TensorProto.FLOAT16, "w3": TensorProto.FLOAT}
    assert model.graph.node[0].op_type == "Cast" and model.graph.node[0].output[0] == "w1"
    constant = next(n for n in model.graph.node if n.op_type == "Constant")
    assert constant.output[0] == "w2_fp16" and constant.attribute[0].t.data_type == TensorProto.FLOAT16
    after = tmp_path / "after.onnx"
    onnx.save(model, str(after))
    assert after.stat().st_size < before.stat().st_size - 3000
    ref, got = (onnxruntime_session(p).run(None, {"x": x})[0] for p in (before, after))
    assert np.array_equal(ref, got)
