"""Convert diffusia's QDQ ONNX graph to OpenVINO IR and check it: `openvino.convert_model` turns each
QuantizeLinear/DequantizeLinear pair into a FakeQuantize that OpenVINO's low-precision transformations fuse into
u8 x s8 convolutions and matmuls, so the IR keeps diffusia's decisions (activation scales and zero points from any
calibrator, per-channel int8 weights from PTQ or QAT, w8a8x2 residual digits, kept layers). Weights stay int8 in
the .bin. `diffusia.runtime.artifact` writes one graph per timestep group and the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffusia.errors import DiffusiaError
from diffusia.export import compare, weights
from diffusia.export import onnx as qdq
from diffusia.quant import api, qmath

INSTALL = "pip install openvino==2026.4.1"


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise DiffusiaError(f"the openvino runtime is not installed: {INSTALL}") from None
    return openvino


def activation_quantizers(onnx_path: str | Path) -> dict[str, list]:
    """DequantizeLinear node name (the FakeQuantize OpenVINO makes of the pair keeps it) -> [layer, digit] for every
    activation quantizer of the QDQ graph."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    digit_of_q = {
        n.output[0]: (compare.layer_of(n.name), compare.digit_of(n.name))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.name.startswith("/unet/") and compare.digit_of(n.name)
    }
    clips = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Clip"}  # 7-bit: Q -> Clip -> DQ
    return {
        n.name: list(digit_of_q[clips.get(n.input[0], n.input[0])])
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and clips.get(n.input[0], n.input[0]) in digit_of_q
    }


def convert(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """The QDQ ONNX graph as OpenVINO IR (.xml + .bin), every weight stored exactly (`narrow_weights`; no lossy
    fp16 compression of the float layers)."""
    ov = require_openvino()
    model = ov.convert_model(str(onnx_path))
    group_int4_weights(model)
    narrow_weights(model)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


def group_int4_weights(model) -> int:
    """Give each int4 weight the form OpenVINO's CPU plugin runs as a compressed FullyConnected (int4 codes kept
    in memory, unpacked per tile): the export's codes [out x groups, group] and scales [out x groups, 1] reshaped to
    [out, groups, group] and [out, groups, 1] ahead of the Reshape to [out, in]; a single padded group (in < group)
    as the [out, in] codes with one scale per row, the padding dropped. Exact: the same values, other shapes. A
    last group that is partial (in not a multiple of the group) stays as exported; convolutions take the same form,
    but OpenVINO's CPU plugin widens their weights when it compiles. Returns how many weights it reshaped."""
    import openvino as ov
    from openvino import opset13 as ops

    reshaped = 0
    for mul in model.get_ordered_ops():
        inputs = [mul.input_value(i).get_node() for i in range(mul.get_input_size())]
        if mul.get_type_name() != "Multiply" or [n.get_type_name() for n in inputs] != ["Convert", "Constant"]:
            continue
        codes, scale = inputs[0].input_value(0).get_node(), inputs[1]
        users = [i.get_node() for i in mul.output(0).get_target_inputs()]
        if codes.get_type_name() != "Constant" or codes.get_element_type() != ov.Type.i8 or len(users) != 1:
            continue
        kind, user = users[0].get_type_name(), users[0]
        if kind not in ("Reshape", "Slice") or not user.get_output_partial_shape(0).is_static:
            continue
        (rows, group), shape = list(codes.get_output_shape(0)), list(user.get_output_shape(0))
        q, s = codes.get_data(), scale.get_data().reshape(rows, 1)
        if kind == "Reshape" and len(shape) == 2 and rows % shape[0] == 0 and rows > shape[0]:  # groups > 1
            groups = rows // shape[0]
            user = _last_of_reshapes(user)
            if any(i.get_node().get_type_name() == "Slice" for i in user.output(0).get_target_inputs()):
                continue  # a partial last group: OpenVINO cannot run it compressed either way
            q, s = q.reshape(shape[0], groups, group), s.reshape(shape[0], groups, 1)
        elif kind == "Slice" and len(shape) == 2 and shape[0] == rows:  # one group, padded: drop the padding
            q = q[:, : shape[1]].copy()
        else:
            continue
        new = ops.multiply(ops.convert(ops.constant(q), ov.Type.f32), ops.constant(s))
        if kind == "Reshape":
            user.input(0).replace_source_output(new.output(0))
        else:
            user.output(0).replace(new.output(0))
        reshaped += 1
    model.validate_nodes_and_infer_types()
    return reshaped


def _last_of_reshapes(reshape):
    """The last of a chain of Reshapes to the same static shape (the export can leave one to the weight's own)."""
    shape = reshape.get_output_partial_shape(0)
    while len(after := [i.get_node() for i in reshape.output(0).get_target_inputs()]) == 1:
        if after[0].get_type_name() != "Reshape" or after[0].get_output_partial_shape(0) != shape:
            break
        reshape = after[0]
    return reshape


def narrow_weights(model) -> dict[str, int]:
    """Store each weight constant in the narrowest type that holds its values exactly: int8 codes within [-8, 7]
    (diffusia's int4 groups; a per-channel int8 weight always reaches +-127) as int4, float32 weights whose values
    are all float16 values (fp16 layers) as float16 behind a Convert. Lossless by construction; OpenVINO widens
    them again when it compiles. Returns how many constants of each kind it narrowed."""
    import openvino as ov
    from openvino import opset13 as ops

    narrowed = {"int4": 0, "float16": 0}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or int(np.prod(list(op.get_output_shape(0)))) < weights.NARROW_MIN_SIZE:
            continue
        kind = op.get_element_type()
        if kind == ov.Type.i8:
            values = op.get_data()
            if values.min() < -8 or values.max() > 7:
                continue
            new = ov.op.Constant(_int4_tensor(values))
            narrowed["int4"] += 1
        elif kind == ov.Type.f32:
            values = op.get_data()
            half = values.astype(np.float16)
            if not np.array_equal(half.astype(np.float32), values):
                continue
            new = ops.convert(ops.constant(half), ov.Type.f32)
            narrowed["float16"] += 1
        else:
            continue
        new.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(new.output(0))
    model.validate_nodes_and_infer_types()
    return narrowed


def _int4_tensor(values: np.ndarray):
    """An int4 OpenVINO tensor (it owns its bytes) of int8 `values` in [-8, 7]: two's-complement nibbles, the
    first element in the low one."""
    import openvino as ov

    nibbles = (values.astype(np.uint8) & 0x0F).reshape(-1)
    nibbles = np.append(nibbles, np.uint8(0)) if nibbles.size % 2 else nibbles
    tensor = ov.Tensor(ov.Type.i4, ov.Shape(list(values.shape)))
    tensor.data[:] = (nibbles[0::2] | (nibbles[1::2] << 4)).view(tensor.data.dtype)
    return tensor


def int4_values(constant) -> np.ndarray:
    """The int8 values of an int4 OpenVINO constant: the inverse of `_int4_tensor`."""
    shape = list(constant.get_output_shape(0))
    packed = constant.get_data().view(np.uint8).reshape(-1)
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)[: int(np.prod(shape))]
    return ((nibbles.astype(np.int8) ^ 8) - 8).reshape(shape)  # sign-extend the 4-bit two's complement


def compile_model(
    model,
    precision: str | None = None,
    threads: int | None = None,
    dynamic_quantization: bool = False,
    properties: dict | None = None,
):
    """An OpenVINO CPU compiled model for latency from an IR path or an `ov.Model` (`precision`: f32, bf16 or f16;
    None = OpenVINO's choice for this CPU, bf16 for the float layers where the CPU has it). OpenVINO's CPU plugin
    quantizes the inputs of a MatMul with int8/int4 weights and no quantized input dynamically (int8, groups of 32
    values) by default; diffusia's weight-only layers keep float activations, so that is off unless
    `dynamic_quantization` (NNCF's weight-compressed peers in `benchmarks/`, OpenVINO's default for them).
    `properties`: further OpenVINO properties (`benchmarks/openvino_cache.py`'s CACHE_DIR)."""
    ov = require_openvino()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    config.update(properties or {})
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    if not dynamic_quantization:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
    return ov.Core().compile_model(model if isinstance(model, ov.Model) else str(model), "CPU", config)


_LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze")


def _key_of(op, quantizers: dict[str, list]) -> tuple[str, int] | None:
    """(layer, digit) of a FakeQuantize: by its name, else (OpenVINO moved it above a transpose or reshape, e.g.
    proj_out's, and renamed it) by the layout op that took its name or the layer it feeds through layout ops, digit
    2 when its input is the residual's Subtract."""
    key = quantizers.get(op.get_friendly_name())
    if key is not None:
        return key[0], int(key[1])
    node = op
    for _ in range(4):
        consumers = [i.get_node() for i in node.output(0).get_target_inputs()]
        if len(consumers) != 1:
            return None
        node = consumers[0]
        key = quantizers.get(node.get_friendly_name())  # the layout op that took the pair's name
        if key is not None:
            return key[0], int(key[1])
        if node.get_type_name() not in _LAYOUT_OPS:
            layers = {layer for layer, _ in quantizers.values()}
            layer = compare.layer_of(node.get_friendly_name())
            return (
                (layer, 2 if op.input_value(0).get_node().get_type_name() == "Subtract" else 1)
                if layer in layers
                else None
            )
    return None


def _name(port, fallback: str) -> str:
    """A tensor name of an output port (given one if it has none) to ask the infer request for it by."""
    if not port.get_names():
        port.get_tensor().add_names({f"diffusia.probe.{fallback}"})
    return port.get_any_name()


def _probe_model(path: Path, quantizers: dict[str, list]):
    """The IR with every activation FakeQuantize's input and output as extra results (the output after a 7-bit
    Clamp where there is one); for each (layer, digit) the tensor names of that input and output, and the number
    of FakeQuantize ops no layer could be found for."""
    ov = require_openvino()
    model = ov.Core().read_model(str(path))
    probes, unmatched = {}, 0
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        key = _key_of(op, quantizers)
        if key is None:
            unmatched += 1
            continue
        out = op.output(0)
        consumers = [i.get_node() for i in out.get_target_inputs()]
        if len(consumers) == 1 and consumers[0].get_type_name() == "Clamp":
            out = consumers[0].output(0)
        probes[key] = (_name(op.input_value(0), f"{key[0]}.{key[1]}.x"), _name(out, f"{key[0]}.{key[1]}.q"))
    model.add_outputs([name for pair in probes.values() for name in pair])
    return model, probes, unmatched


def _static(model, feeds: dict[str, np.ndarray]):
    """`model` with the static shapes of `feeds`: checked as the runtime U-Net compiles it."""
    model.reshape({name: value.shape for name, value in feeds.items()})
    return model


def check_against_openvino(
    unet: nn.Module,
    files: list[Path],
    timesteps: list[int],
    quantizers: dict[str, list] | None,
    batch: int = qdq.CHECK_BATCH,
    seed: int = qdq.CHECK_SEED,
) -> dict:
    """OpenVINO (float layers in f32) against diffusia's real-kernel U-Net on seeded inputs, per timestep group:
    `relative_l2_vs_diffusia` (worst group, at the U-Net's sample size, compiled for that static shape as the
    runtime U-Net compiles it), and for a quantized U-Net `quantizers`:
    every activation FakeQuantize of every group's IR checked on its own input against the codes diffusia's kernels
    compute from it, on a latent of at most `PROBE_MAX_SIDE` (`compare_quantizers`: only one-step differences on
    rounding ties may differ; `unmatched` counts FakeQuantize ops of no known layer)."""
    ov = require_openvino()
    worst, per_group, compared = 0.0, [], None
    for _g, (file, t) in enumerate(zip(files, timesteps)):
        inputs = qdq.example_inputs(unet, batch, seed, timestep=t)
        with torch.no_grad():
            ref = qdq.run_unet(unet, inputs).numpy()
        feeds = qdq.graph_feeds(inputs)
        out = compile_model(_static(ov.Core().read_model(str(file)), feeds), precision="f32")(feeds)[0]
        rel = compare.relative_l2(out, ref)
        per_group.append(rel)
        worst = max(worst, rel)
        if quantizers:
            model, probes, unmatched = _probe_model(file, quantizers)
            small = qdq.graph_feeds(qdq.example_inputs(unet, batch, seed, timestep=t, max_side=qdq.PROBE_MAX_SIDE))
            request = compile_model(_static(model, small), "f32").create_infer_request()
            request.infer(small)
            theirs, observers = {}, api.observers(unet)
            for (layer, digit), (x_name, y_name) in probes.items():
                m = observers[layer]
                scale, zp = m.act_qparams(m.group)
                if digit == 2:
                    scale, zp = qmath.residual_qparams(scale, m.act_qmax)
                y = request.get_tensor(y_name).data.astype(np.float64)
                codes = np.clip(np.rint(y / scale) + zp, 0, 255).astype(np.uint8)
                theirs[(layer, digit)] = (request.get_tensor(x_name).data.copy(), codes)
            part = {**compare.compare_quantizers(unet, theirs), "unmatched": unmatched}
            compared = compare.merge_quantizer_checks(compared, part)
    return {
        "relative_l2_vs_diffusia": worst,
        "per_group": per_group,
        "quantizers": compared,
        "openvino": ov.__version__,
    }
