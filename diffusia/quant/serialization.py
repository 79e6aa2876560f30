"""Save and load quantized pipelines: a diffusers folder whose U-Net holds int8/int4 tensors and their scales in
safetensors, plus `diffusia.json` (recipe, calibration, quantization map, package versions, sha256 of tensors)."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from diffusia.errors import DiffusiaError
from diffusia.fileio import atomic_dir
from diffusia.quant import api, cpu
from diffusia.quant.pipeline import describe
from diffusia.versions import package_versions

log = logging.getLogger(__name__)

FORMAT, VERSION = "diffusia.quantized_pipeline", 1
UNET_FILE = "unet/diffusia_unet.safetensors"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_quantized_pipeline(pipe, out_dir: str | Path, base_model: str | None = None,
                            runtimes: tuple[str, ...] = ()) -> Path:
    """Write the pipeline atomically: a killed save leaves no folder that looks complete. Each of `runtimes`
    (openvino, onnxruntime) adds the U-Net exported and checked for it, in `<out_dir>/<runtime>/`."""
    from safetensors.torch import save_file

    from diffusia.runtime import artifact

    out_dir = Path(out_dir)
    has_q = bool(api.qmodules(pipe.unet))
    with atomic_dir(out_dir) as tmp:
        for name, component in pipe.components.items():
            if component is None or (name == "unet" and has_q):
                continue
            if hasattr(component, "save_pretrained"):
                kwargs = {"safe_serialization": True} if isinstance(component, torch.nn.Module) else {}
                component.save_pretrained(tmp / name, **kwargs)
        pipe.save_config(tmp)  # model_index.json
        meta = {"format": FORMAT, "version": VERSION, "base_model": base_model or getattr(pipe, "diffusia_spec", None),
                **describe(pipe), "packages": package_versions(), "unet_config": dict(pipe.unet.config)}
        if has_q:
            pipe.unet.save_config(tmp / "unet")
            state = {k: v.detach().contiguous().cpu() for k, v in pipe.unet.state_dict().items()}
            save_file(state, str(tmp / UNET_FILE), metadata={"format": FORMAT})
            meta["quantization_map"] = api.quantization_map(pipe.unet)
            meta["target"] = api.target_of(pipe.unet)  # the CPU class the INT8 layout is for, and the CPU it was made on
        meta["runtimes"] = {}
        for runtime in runtimes:
            manifest = artifact.export_runtime(pipe.unet, runtime, tmp / runtime)
            meta["runtimes"][runtime] = {"files": manifest["files"], "check": manifest.get("check")}
        hashed = [p for p in tmp.rglob("*") if p.is_file() and (p.suffix == ".safetensors" or p.parent.name in runtimes)]
        meta["sha256"] = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(hashed)}
        (tmp / "diffusia.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    log.info("saved quantized pipeline to %s", out_dir)
    return out_dir


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / "diffusia.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DiffusiaError(f"{path} is unreadable ({e}): re-run `diffusia quantize`") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DiffusiaError(f"{path} is not a diffusia v{VERSION} quantized pipeline: re-run `diffusia quantize`")
    return meta


def verify_checksums(folder: Path, meta: dict) -> None:
    """Every component tensor file and runtime graph of the folder must be listed in diffusia.json's `sha256` and match it: a
    missing block, a file it does not list or one that differs is refused (never a silently skipped check)."""
    from diffusia.runtime.artifact import EXPORTED

    digests = meta.get("sha256")
    fix = "re-run `diffusia quantize`"
    if not (isinstance(digests, dict) and digests and all(isinstance(v, str) for v in digests.values())):
        raise DiffusiaError(f"{folder / 'diffusia.json'} has no valid sha256 block, so the folder cannot be verified: "
                            f"{fix}")
    # what loading reads: the components' tensor files and the runtime graphs (not, e.g., QAT checkpoints)
    present = [*folder.glob("*/*.safetensors"), *(p for r in EXPORTED for p in (folder / r).rglob("*") if p.is_file())]
    unlisted = sorted(str(p.relative_to(folder)) for p in present if str(p.relative_to(folder)) not in digests)
    if unlisted:
        raise DiffusiaError(f"{folder / unlisted[0]} is not listed in diffusia.json's sha256 (added after saving?): "
                            f"remove it or {fix}")
    for rel, digest in digests.items():
        path = folder / rel
        if not path.is_file():
            raise DiffusiaError(f"{path} is missing: the quantized folder is incomplete, {fix}")
        if _sha256(path) != digest:
            raise DiffusiaError(f"{path} does not match its sha256 in diffusia.json (truncated or altered): {fix}")


def _graph_fits_host(meta: dict, runtime: str) -> bool:
    """False if the folder's `runtime` graph has an INT8 layout that saturates on this CPU (made for `vnni`, loaded
    on `avx2`): the caller then exports the U-Net converted on load (`api.load_quantized_state`) instead."""
    made_for = (meta.get("target") or {}).get("cpu_class", "avx2")
    if made_for == "avx2" or cpu.has_vnni():
        return True
    log.warning("the %s graph in this folder is laid out for %s CPUs and would saturate on this %s CPU: exporting "
                "the U-Net converted to 7-bit activations instead (re-quantize with `diffusia quantize --target "
                "auto --runtime %s` to save a graph for this CPU)", runtime, made_for, cpu.host_class(), runtime)
    return False


def load_quantized_pipeline(folder: str | Path, dtype=None, runtime: str = "torch", threads: int | None = None):
    """Load a folder written by `save_quantized_pipeline`; the U-Net is rebuilt around a meta-device skeleton so
    FP32 weights are never materialised. With a `runtime` the folder was saved for, the U-Net is that runtime's
    graph and no PyTorch U-Net is built (other runtimes are deployed by the caller)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.configuration_utils import FrozenDict
    from safetensors.torch import load_file

    from diffusia import runtime as runtimes

    folder = Path(folder)
    meta = read_meta(folder)
    verify_checksums(folder, meta)
    qmap = meta.get("quantization_map")
    kwargs = dict(torch_dtype=dtype, use_safetensors=True, safety_checker=None, requires_safety_checker=False)
    if runtime != "torch" and (folder / runtime / runtimes.MANIFEST).is_file() and _graph_fits_host(meta, runtime):
        pipe = StableDiffusionPipeline.from_pretrained(folder, unet=None, **kwargs)
        config = FrozenDict(UNet2DConditionModel.load_config(folder / "unet"))
        runtimes.install(pipe, runtimes.load_unet(runtime, folder / runtime, config, threads=threads))
    elif qmap is None:
        pipe = StableDiffusionPipeline.from_pretrained(folder, **kwargs)
    else:
        config = UNet2DConditionModel.load_config(folder / "unet")
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
        api.load_quantized_state(unet, qmap, load_file(str(folder / UNET_FILE)))
        pipe = StableDiffusionPipeline.from_pretrained(folder, unet=unet, **kwargs)
    from diffusia.config import Recipe
    from diffusia.quant.pipeline import CalibrationInfo

    pipe.diffusia_recipe = Recipe.from_dict(meta["recipe"]) if meta.get("recipe") else None
    pipe.diffusia_calibration = CalibrationInfo(**meta["calibration"]) if meta.get("calibration") else None
    pipe.diffusia_validation = meta.get("validation")
    pipe.diffusia_meta = meta
    return pipe
