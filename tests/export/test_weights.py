"""diffusia.export.weights: fp16 values stored as fp16 behind a Cast, in initializers and Constant nodes, and the
graph stays valid and computes the same; weight-only convolutions widened by ONNX Runtime at load."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from diffusia.export.onnx import onnxruntime_session
from diffusia.export.weights import narrow_float_weights, widen_weight_only_convs


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


def _conv_graph(rng):
    """x -> Conv(DequantizeLinear(int8 weight)) [weight-only] -> QDQ -> Conv(DequantizeLinear(int8 weight)) [W8A8]."""
    codes = [rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8) for _ in range(2)]
    scales = [rng.uniform(1e-3, 1e-2, 8).astype(np.float32) for _ in range(2)]
    inits = [
        numpy_helper.from_array(a, f"{kind}{k}") for k in range(2) for kind, a in (("q", codes[k]), ("s", scales[k]))
    ]
    inits += [numpy_helper.from_array(np.zeros(8, np.int8), "z"), numpy_helper.from_array(np.float32(0.05), "a_s")]
    inits += [numpy_helper.from_array(np.uint8(128), "a_z")]
    nodes = [
        helper.make_node("DequantizeLinear", ["q0", "s0", "z"], ["w0"], axis=0),
        helper.make_node("Conv", ["x", "w0"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["h", "a_s", "a_z"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "a_s", "a_z"], ["hd"]),
        helper.make_node("DequantizeLinear", ["q1", "s1", "z"], ["w1"], axis=0),
        helper.make_node("Conv", ["hd", "w1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_only_convolutions_widen_at_load_and_w8a8_ones_keep_their_pair(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    model, x = _conv_graph(rng), rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    before = tmp_path / "before.onnx"
    onnx.save(model, str(before))
    assert widen_weight_only_convs(model) == 1
    onnx.checker.check_model(model)
    dq_weights = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq_weights == ["hq", "q1"]  # the W8A8 convolution keeps its weight's pair, the int8 codes stay stored
    assert {i.name: i.data_type for i in model.graph.initializer}["q0"] == TensorProto.INT8
    after = tmp_path / "after.onnx"
    onnx.save(model, str(after))
    ref, got = (onnxruntime_session(p).run(None, {"x": x})[0] for p in (before, after))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    options = ort.SessionOptions()  # the graph ONNX Runtime runs: the widened weight folded into a float constant
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(str(after), options, providers=["CPUExecutionProvider"])
    loaded = onnx.load(str(tmp_path / "loaded.onnx"))
    first = next(n for n in loaded.graph.node if n.op_type == "Conv" and n.input[0] == "x")
    assert first.input[1] in {i.name for i in loaded.graph.initializer}
    assert not any(n.op_type in ("Cast", "Mul") for n in loaded.graph.node)
