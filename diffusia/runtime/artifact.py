"""A U-Net exported for a runtime, as a folder: one graph per timestep group (a group's activation ranges are baked
into its graph, so K groups store the weights K times) and `runtime.json`, which names the runtime, the graphs and
the check that passed when they were written. Batch, latent size and prompt length stay dynamic.

Written inside a quantized folder (`<folder>/openvino`, `<folder>/onnxruntime`) by `diffusia quantize --runtime`,
or on its own by `diffusia export --format`."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch import nn

from diffusia.errors import DiffusiaError
from diffusia.export import compare
from diffusia.export import onnx as qdq
from diffusia.fileio import EXPORT_FORMAT, atomic_dir
from diffusia.quant import api, cpu
from diffusia.quant.timestep import get_state

log = logging.getLogger(__name__)

FORMAT, VERSION = EXPORT_FORMAT, 1
MANIFEST = "runtime.json"
EXPORTED = ("openvino", "onnxruntime")  # runtimes that run an exported graph


def group_timesteps(unet: nn.Module) -> list[int]:
    """One timestep inside each activation-range group (its middle); [500] without groups."""
    state = get_state(unet)
    groups, n = (state.groups, state.num_train_timesteps) if state is not None else (1, 1000)
    return [int((g + 0.5) * n / groups) for g in range(groups)]


def export_runtime(
    unet: nn.Module,
    runtime: str,
    folder: str | Path,
    check: bool = True,
    tolerance: float = 0.05,
    vae: nn.Module | None = None,
) -> dict:
    """Write `folder` (atomically) for `runtime`; with `check`, the graphs must quantize every activation as
    diffusia does and reproduce its real-kernel output within `tolerance` relative L2, else nothing is written.
    For OpenVINO, a float32 `vae`'s decoder goes in too (`runtime.decoder`). Returns the manifest."""
    from diffusia.export import openvino as ovx

    if runtime not in EXPORTED:
        raise DiffusiaError(f"unknown export runtime {runtime!r}; valid: {', '.join(EXPORTED)}")
    if runtime == "openvino":
        ovx.require_openvino()
    quantized = bool(api.qmodules(unet))
    timesteps = group_timesteps(unet)
    with atomic_dir(folder) as tmp:
        files, quantizers = [], None
        for g, t in enumerate(timesteps):
            onnx_path = qdq.export_unet(
                unet,
                tmp / f"unet-g{g}.onnx",
                dynamic=True,
                timestep=t,
                float_ok=True,
                matmul_nbits=runtime == "onnxruntime",
                per_head_attention=runtime == "onnxruntime",
            )
            if runtime == "openvino":
                if quantized and quantizers is None:
                    quantizers = ovx.activation_quantizers(onnx_path)
                ovx.convert(onnx_path, tmp / f"unet-g{g}.xml")
                for f in qdq.onnx_files(onnx_path):
                    f.unlink()
                files.append(f"unet-g{g}.xml")
            else:
                files.append(onnx_path.name)
        state = get_state(unet)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "runtime": runtime,
            "runtime_version": _version(runtime),
            "files": files,
            "timestep_groups": len(files),
            "num_train_timesteps": state.num_train_timesteps if state is not None else 1000,
            "quantized": quantized,
            # int8/int4 weights on float inputs: what OpenVINO's dynamic quantization (`+dynamic`) applies to
            "weight_only_layers": sum(
                not m.spec.act_digits and m.spec.weight_bits <= 8 for m in api.qmodules(unet).values()
            ),
            "unet_config": {k: v for k, v in dict(unet.config).items() if not k.startswith("_")},
        }
        if check:
            paths = [tmp / f for f in files]
            if runtime == "openvino":
                result = ovx.check_against_openvino(unet, paths, timesteps, quantizers)
            else:
                result = _check_onnxruntime(unet, paths, timesteps)
            result["output_checked"] = output_checkable(unet)
            raise_on_failed_check(result, runtime, tolerance, unet, timesteps)
            manifest["check"] = result
        if runtime == "openvino" and vae is not None and vae.dtype == torch.float32:
            from diffusia.runtime.decoder import export_decoder

            manifest["vae_decoder"] = export_decoder(vae, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    log.info("exported %s for %s: %d graph(s)", folder, runtime, len(files))
    return manifest


def output_checkable(unet: nn.Module) -> bool:
    """False for a layout made for `vnni` on a CPU without VNNI: the runtime's integer kernels saturate here, so its
    output says nothing of the one it computes on the CPU the folder is for (its quantizers are still checked)."""
    target = api.target_of(unet) or {}
    if target.get("cpu_class") == "vnni" and not cpu.has_vnni(cpu.detected_features()):
        log.warning("the graph is laid out for VNNI CPUs: its output is not checked on this CPU without VNNI")
        return False
    return True


def _version(runtime: str) -> str:
    import importlib

    return importlib.import_module(runtime).__version__


def _check_onnxruntime(unet: nn.Module, paths: list[Path], timesteps: list[int]) -> dict:
    worst, per_group, quantizers, codes = 0.0, [], None, None
    for path, t in zip(paths, timesteps):
        check = qdq.check_against_onnxruntime(unet, path, timestep=t)
        per_group.append(check["relative_l2_vs_diffusia"])
        worst = max(worst, check["relative_l2_vs_diffusia"])
        if check["quantizers"] is not None:
            quantizers = compare.merge_quantizer_checks(quantizers, check["quantizers"])
            if codes is None or compare.same_codes(codes):  # keep the first group that differs
                codes = check["codes"]
    return {
        "relative_l2_vs_diffusia": worst,
        "per_group": per_group,
        "quantizers": quantizers,
        "codes": codes,
        "onnxruntime": _version("onnxruntime"),
    }


# How far beyond the model's own tie noise a runtime's output may be: two correct runtimes each take other ties.
TIE_MARGIN = 1.5


def raise_on_failed_check(
    check: dict, runtime: str, tolerance: float, unet: nn.Module | None = None, timesteps: list[int] | None = None
) -> None:
    """One-line error if `runtime` quantizes an activation otherwise than diffusia (beyond rounding ties; every
    quantizer compared on the runtime's own input) or differs in output by more than `tolerance` relative L2.

    The codes along the whole network (`check["codes"]`) are reported, not a gate: once one rounding tie fell
    differently, every later layer sees another input, so how far they stay equal is tie luck (0.65 % of one
    layer's codes one step apart on the micro test model with the avx2 layout, with one tie among the 263k
    quantizer codes). For the same reason, an output beyond `tolerance` from a quantized `unet` (checked at
    `timesteps`, one per group) still passes within `TIE_MARGIN` times the model's own tie noise, by how much its
    output moves when its input moves by 1e-6 (`qdq.tie_noise`, recorded as `check["tie_noise"]`): some models
    amplify ties that far. `check["output_checked"]` False (a layout this CPU's integer kernels saturate) skips
    the output gate."""
    label = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}.get(runtime, runtime)
    q = check.get("quantizers")
    if q is not None and q["other_differences"]:
        d = q["first_other_difference"]
        raise DiffusiaError(
            f"{label} quantizes the input of layer {d['layer']!r} (digit {d['digit']}) otherwise "
            f"than diffusia ({q['other_differences']} codes off a rounding tie): report it with the "
            "folder"
        )
    if q is not None and q.get("unmatched"):
        raise DiffusiaError(
            f"{label}'s graph has {q['unmatched']} activation quantizers of no known layer, so it "
            "cannot be checked: report it with the folder"
        )
    err = check["relative_l2_vs_diffusia"]
    if not check.get("output_checked", True) or (math.isfinite(err) and err <= tolerance):
        return
    if unet is not None and q is not None and math.isfinite(err):
        check["tie_noise"] = noise = own_tie_noise(unet, timesteps or [500])
        if err <= TIE_MARGIN * noise:
            log.warning(
                "%s's output differs from diffusia's by %.2f%% relative L2, within %gx the %.2f%% by which diffusia's "
                "own output moves when its input moves by 1e-6 (rounding ties this model amplifies)",
                label,
                100 * err,
                TIE_MARGIN,
                100 * noise,
            )
            return
        raise DiffusiaError(
            f"{label}'s output differs from diffusia's by {err:.2%} relative L2 (> {tolerance:.2%}, and > "
            f"{TIE_MARGIN:g}x the {noise:.2%} by which diffusia's own output moves when its input moves by 1e-6)"
        )
    raise DiffusiaError(f"{label}'s output differs from diffusia's by {err:.2%} relative L2 (> {tolerance:.2%})")


def own_tie_noise(unet: nn.Module, timesteps: list[int]) -> float:
    """The worst `qdq.tie_noise` of `unet` over the export checks' seeded inputs at `timesteps`."""
    return max(
        qdq.tie_noise(unet, qdq.example_inputs(unet, qdq.CHECK_BATCH, qdq.CHECK_SEED, timestep=t)) for t in timesteps
    )


def graph_bytes(folder: str | Path) -> int:
    """Bytes on disk of the U-Net graphs of an exported folder, every timestep group's (OpenVINO's .xml and .bin,
    ONNX's .onnx and external data), without the VAE decoder."""
    files = []
    for name in read_manifest(folder)["files"]:
        graph = Path(folder) / name
        files += [graph, graph.with_suffix(".bin")] if graph.suffix == ".xml" else qdq.onnx_files(graph)
    return sum(f.stat().st_size for f in files if f.is_file())


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    hint = "re-export with `diffusia export --format openvino|onnxruntime` or `diffusia quantize --runtime ...`"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffusiaError(f"{path} is unreadable ({type(e).__name__}): {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DiffusiaError(f"{path} is not a diffusia v{VERSION} runtime export: {hint}")
    decoder = (manifest.get("vae_decoder") or {}).get("file")
    missing = [
        f for f in [*manifest.get("files", []), *([decoder] if decoder else [])] if not (Path(folder) / f).is_file()
    ]
    if missing or not manifest.get("files"):
        raise DiffusiaError(f"{folder} lacks its graph {missing[0] if missing else '(none listed)'}: {hint}")
    return manifest
