"""Export a quantized U-Net to ONNX in QDQ form (QuantizeLinear/DequantizeLinear around float ops), the format
edge runtimes (ONNX Runtime, TensorRT, OpenVINO, QNN) turn into integer kernels. Weights are stored as int8
initializers (int4 layers as int8 initializers of their codes with group scales, fp16 layers as float16)."""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffusia.errors import DiffusiaError
from diffusia.export import compare, head_slices, weights
from diffusia.export.qdq_layers import qdq_mode
from diffusia.fileio import atomic_path
from diffusia.models.unet_inputs import ADDED_INPUTS, example_unet_inputs
from diffusia.quant import api
from diffusia.quant.kernels import quantize_act_u8

log = logging.getLogger(__name__)
OPSET = 17  # the legacy exporter quantizes reliably at 17 (see ../shared/CPU_INT8_NOTES.md)


class _UNetOnly(nn.Module):
    """The U-Net as a function of plain tensors: (sample, timestep, encoder_hidden_states), and for SDXL
    (`addition_embed_type == "text_time"`) also its added conditioning, `text_embeds` and `time_ids`."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
        return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


def run_unet(unet: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """`unet`'s noise prediction for graph inputs in `input_names(unet)` order (diffusia's own modules)."""
    return _UNetOnly(unet)(*inputs)


def tie_noise(unet: nn.Module, inputs: tuple[torch.Tensor, ...], rel: float = 1e-6, seed: int = 0) -> float:
    """Relative L2 by which `unet`'s output moves when its sample moves by `rel` of its RMS (seeded noise), far
    below any quantizer step. A quantized network is piecewise constant: a value on a rounding tie takes the
    neighbouring code and every later layer sees another input, so two correct runtimes, whose float sums round
    differently, differ by about this much; where it is large, an output check cannot tell them apart from it."""
    sample = inputs[0].float()
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(seed))
    moved = (sample + rel * sample.pow(2).mean().sqrt() * noise,) + tuple(inputs[1:])
    with torch.no_grad():
        a, b = run_unet(unet, inputs).numpy(), run_unet(unet, moved).numpy()
    return compare.relative_l2(b, a)


INPUTS = ("sample", "timestep", "encoder_hidden_states")
CHECK_BATCH, CHECK_SEED = 2, 1  # the export checks' seeded inputs (`example_inputs`)
# Latent side the export checks probe every quantizer at, at most (the output is compared at the U-Net's own size,
# the one it runs at). At SD's 64x64 the probes of `--attention int8` (each quantizer's input and codes, 1 GB per
# full-resolution attention's probabilities) took the whole 24 GB of RAM (benchmarks/generation_runtimes.py).
PROBE_MAX_SIDE = 32
# Batch, latent size and prompt length free: a runtime fixes them per call (classifier-free guidance doubles the batch).
DYNAMIC_AXES = {
    "sample": {0: "batch", 2: "height", 3: "width"},
    "timestep": {0: "batch"},
    "encoder_hidden_states": {0: "batch", 1: "tokens"},
    "text_embeds": {0: "batch"},
    "time_ids": {0: "batch"},
    "noise_pred": {0: "batch", 2: "height", 3: "width"},
}


def takes_added_cond(config) -> bool:
    """True for a U-Net config with SDXL's added conditioning (the graph then takes `ADDED_INPUTS` too)."""
    return getattr(config, "addition_embed_type", None) == "text_time"


def input_names(unet_or_config) -> tuple[str, ...]:
    """The graph inputs of a U-Net (or its config), in order: `INPUTS`, then `ADDED_INPUTS` for SDXL."""
    config = getattr(unet_or_config, "config", unet_or_config)
    return INPUTS + ADDED_INPUTS if takes_added_cond(config) else INPUTS


def example_inputs(
    unet: nn.Module, batch: int = 2, seed: int = 0, timestep: int = 500, max_side: int | None = None
) -> tuple[torch.Tensor, ...]:
    """Seeded graph inputs of `unet`, in `input_names(unet)` order (`diffusia.models.unet_inputs`; latent sides
    capped at `max_side`)."""
    inputs = example_unet_inputs(unet.config, batch, timestep, seed, max_side=max_side)
    added = inputs.pop("added_cond_kwargs", None) or {}  # SDXL's only: unet_inputs refuses other kinds
    return tuple(inputs[k] for k in INPUTS) + tuple(added[k] for k in ADDED_INPUTS if added)


PROTOBUF_LIMIT = 1.8e9  # an .onnx file holds at most 2 GB; larger graphs keep their weights in `<name>.data`


def export_unet(
    unet: nn.Module,
    path: str | Path,
    batch: int = 2,
    dynamic: bool = False,
    timestep: int = 500,
    float_ok: bool = False,
    matmul_nbits: bool = False,
    per_head_attention: bool = False,
) -> Path:
    """Export the frozen quantized U-Net to `path` (.onnx, atomically); returns the path.

    `dynamic` leaves batch, latent size and prompt length free. The timestep group whose activation ranges the graph
    carries is that of `timestep` (one graph per group). `float_ok` exports a U-Net without quantized layers as is;
    `matmul_nbits` writes int4 linears as ONNX Runtime's MatMulNBits (`weights.int4_matmuls`; standard ONNX without);
    `per_head_attention` traces large float attentions one head at a time (`head_slices`: less memory on ONNX Runtime).
    The exporter runs in a private folder (over 2 GB it writes one file per weight); a graph still over the
    protobuf limit after its weights are folded to int8 (an FP32 SD U-Net) keeps its weights in `<path>.data`."""
    import onnx

    path = Path(path)
    inputs = example_inputs(unet, batch, timestep=timestep)
    names = input_names(unet)
    mode = contextlib.nullcontext(unet) if float_ok and not api.qmodules(unet) else qdq_mode(unet)
    with (
        mode,
        head_slices.one_head_at_a_time() if per_head_attention else contextlib.nullcontext(),
        torch.no_grad(),
        tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as work,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape checks diffusers' blocks make
        raw = Path(work) / "unet.onnx"
        torch.onnx.export(
            _UNetOnly(unet).eval(),
            inputs,
            str(raw),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(names),
            output_names=["noise_pred"],
            do_constant_folding=True,
            dynamic_axes={k: v for k, v in DYNAMIC_AXES.items() if k in (*names, "noise_pred")} if dynamic else None,
        )
        model = onnx.load(str(raw))
    n = weights.fold_weight_quantizers(model)
    weights.narrow_float_weights(model)
    if matmul_nbits:
        weights.int4_matmuls(model)
    external = _tensor_bytes(model) > PROTOBUF_LIMIT
    with atomic_path(path) as tmp:
        onnx.save(
            model, str(tmp), save_as_external_data=external, all_tensors_to_one_file=True, location=f"{path.name}.data"
        )
    log.info("exported %s with %d int8 weight initializers", path, n)
    return path


def _tensor_bytes(model) -> int:
    """Bytes of the graph's initializers and Constant tensors (`ByteSize()` itself fails past 2 GB)."""
    constants = [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return sum(len(t.raw_data) for t in [*model.graph.initializer, *constants])


def onnx_files(path: str | Path) -> list[Path]:
    """The files of an exported graph: the .onnx and its external data, if any."""
    path = Path(path)
    data = path.with_name(f"{path.name}.data")
    return [path, data] if data.is_file() else [path]


def graph_feeds(inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    """Graph feeds of `example_inputs` (three inputs, five for SDXL)."""
    return dict(zip(INPUTS + ADDED_INPUTS, (t.numpy() for t in inputs)))


def check_against_onnxruntime(
    unet: nn.Module, path: str | Path, batch: int = CHECK_BATCH, seed: int = CHECK_SEED, timestep: int = 500
) -> dict:
    """Relative L2 difference between ONNX Runtime's output and diffusia's: its real-kernel output, and the
    exported QDQ graph run in PyTorch (the exact math the ONNX file encodes); `codes`, the comparison of the
    integer activation codes layer by layer along the whole network (`compare_codes`); and `quantizers`, every
    activation quantizer of the graph checked on its own input (`compare_quantizers`). A float U-Net gets the
    output comparison only."""
    import onnxruntime as ort

    inputs = example_inputs(unet, batch, seed, timestep=timestep)
    with torch.no_grad():
        ref = run_unet(unet, inputs).numpy()
    if not api.qmodules(unet):
        return {
            "relative_l2_vs_diffusia": compare.relative_l2(_onnxruntime_output(path, inputs), ref),
            "codes": None,
            "quantizers": None,
            "onnxruntime": ort.__version__,
        }
    small = example_inputs(unet, batch, seed, timestep=timestep, max_side=PROBE_MAX_SIDE)
    graph, ours = _qdq_run(unet, small)
    out_small, theirs = _onnxruntime_run(path, small)
    out = out_small if small[0].shape == inputs[0].shape else _onnxruntime_output(path, inputs)
    first_digits = {layer: q for (layer, digit), (_, q) in theirs.items() if digit == 1}
    return {
        "relative_l2_vs_diffusia": compare.relative_l2(out, ref),
        "relative_l2_vs_qdq_graph": compare.relative_l2(out_small, graph),
        "codes": compare.compare_codes(ours, first_digits),
        "quantizers": compare.compare_quantizers(unet, theirs),
        "onnxruntime": ort.__version__,
    }


def _qdq_run(unet: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The exported QDQ graph's output in PyTorch and each W8A8 layer's uint8 input codes, in execution order."""
    codes: dict[str, np.ndarray] = {}

    def record(name: str):
        def hook(module, args):
            scale, zp = module.act_qparams(module.group)
            codes[name] = quantize_act_u8(args[0].float(), scale, zp, module.settings.act_qmax).numpy()

        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in api.qmodules(unet).items() if m.spec.act_digits]
    try:
        with torch.no_grad(), qdq_mode(unet):
            out = run_unet(unet, inputs).numpy()
    finally:
        for h in handles:
            h.remove()
    return out, codes


# How an ONNX Runtime session allocates its tensors on the CPU
ARENA = {
    "kept": "ONNX Runtime's default: an arena that grows in powers of two and keeps what a run frees, and from the "
    "second run one planned block per run (the memory pattern)",
    "shrunk": "the arena is shrunk to what is in use at the end of every run",
    "off": "no arena: each tensor from the system allocator",
    "unplanned": "the arena kept, without the memory pattern",
    "exact": "one arena for the process that grows by exactly what is requested, with the memory pattern",
    "exact-unplanned": "that arena, without the memory pattern",
}
# diffusia's: on sd15-arch at 64x64 (Zen 4) half the peak of ONNX Runtime's default at the same step time
# (benchmarks/results/vnni/onnxruntime_arena/); also the one arena the sessions of all timestep groups share
DEFAULT_ARENA = "exact-unplanned"


def onnxruntime_session(path: str | Path, threads: int | None = None, arena: str = DEFAULT_ARENA):
    """An ONNX Runtime CPU session of an exported graph. ONNX Runtime fuses a weight-only int8 layer (DequantizeLinear
    on the weight, float input) into MatMulNBits, which by default quantizes its input to int8 on the fly (accuracy
    level 4: 0.2 % rel-L2 on `tiny`'s w8); level 1 computes in float32, as diffusia's weight-only layers do.
    `arena`: a key of ARENA; run a "shrunk" session with `onnxruntime_run_options("shrunk")`."""
    import onnxruntime as ort

    if arena not in ARENA:
        raise DiffusiaError(f"unknown ONNX Runtime arena {arena!r}; valid: {', '.join(ARENA)}")
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena != "off"
    options.enable_mem_pattern = not arena.endswith("unplanned")
    if arena.startswith("exact"):
        _register_exact_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@functools.cache
def _register_exact_arena() -> None:
    """The process's shared CPU arena (sessions opt in with `session.use_env_allocators`), extended by exactly the
    bytes requested (strategy 1, kSameAsRequested)."""
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))


def onnxruntime_run_options(arena: str = DEFAULT_ARENA):
    """The run options of a session made with `arena` (ARENA): "shrunk" frees the arena's unused memory after each
    run."""
    import onnxruntime as ort

    options = ort.RunOptions()
    if arena == "shrunk":
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _onnxruntime_output(path: str | Path, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    return onnxruntime_session(path).run(None, graph_feeds(inputs))[0]


def _onnxruntime_run(
    path: str | Path, inputs: tuple[torch.Tensor, ...]
) -> tuple[np.ndarray, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]]:
    """ONNX Runtime's output, and for every activation quantizer (layer, digit): its float input and the uint8
    codes it feeds to DequantizeLinear. The graph is re-saved next to `path` (external data referenced, not
    copied) with those tensors as extra outputs."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    clips = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "Clip"}  # 7-bit: Q -> Clip -> DQ
    probes = {
        (compare.layer_of(n.name), compare.digit_of(n.name)): (n.input[0], clips.get(n.output[0], n.output[0]))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.name.startswith("/unet/") and compare.digit_of(n.name)
    }
    for x_name, q_name in probes.values():
        model.graph.output.append(onnx.helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT, None))
        model.graph.output.append(onnx.helper.make_tensor_value_info(q_name, onnx.TensorProto.UINT8, None))
    probe = path.with_name(f".{path.stem}.codes.onnx")
    try:
        onnx.save(model, str(probe))
        session = onnxruntime_session(probe)
        values = dict(zip([o.name for o in model.graph.output], session.run(None, graph_feeds(inputs))))
    finally:
        probe.unlink(missing_ok=True)
    return values[model.graph.output[0].name], {k: (values[x], values[q]) for k, (x, q) in probes.items()}
