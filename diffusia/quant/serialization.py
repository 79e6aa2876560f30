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

FORMAT, VERSION = "diffusia.quantized_pipeline", 2
# Version 2: the U-Net is a diffusers folder (config.json with `quantization_config`, diffusion_pytorch_model.safetensors)
# that DiffusionPipeline.from_pretrained loads after `import diffusia`. Version 1 kept the quantization map in
# diffusia.json and the tensors in unet/diffusia_unet.safetensors; it still loads.
UNET_FILE = "unet/diffusion_pytorch_model.safetensors"
UNET_FILE_V1 = "unet/diffusia_unet.safetensors"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_quantized_unet(unet, folder: Path) -> None:
    """The U-Net as diffusers saves a quantized model: config.json with `quantization_config`, tensors in
    safetensors."""
    from safetensors.torch import save_file

    from diffusia.integrations.diffusers import DiffusiaQuantizationConfig

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_config(folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = DiffusiaQuantizationConfig.from_model(unet).to_dict()
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()}
    save_file(state, str(folder.parent / UNET_FILE), metadata={"format": "pt"})


def save_quantized_pipeline(
    pipe, out_dir: str | Path, base_model: str | None = None, runtimes: tuple[str, ...] = ()
) -> Path:
    """Write the pipeline atomically: a killed save leaves no folder that looks complete. Each of `runtimes`
    (openvino, onnxruntime) adds the U-Net exported and checked for it, in `<out_dir>/<runtime>/`."""
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
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "base_model": base_model or getattr(pipe, "diffusia_spec", None),
            **describe(pipe),
            "packages": package_versions(),
        }
        if has_q:
            _save_quantized_unet(pipe.unet, tmp / "unet")
            meta["target"] = api.target_of(
                pipe.unet
            )  # the CPU class the INT8 layout is for, and the CPU it was made on
        meta["runtimes"] = {}
        for runtime in runtimes:
            manifest = artifact.export_runtime(pipe.unet, runtime, tmp / runtime, vae=pipe.vae)
            meta["runtimes"][runtime] = {"files": manifest["files"], "check": manifest.get("check")}
            if manifest.get("vae_decoder"):
                meta["runtimes"][runtime]["vae_decoder"] = manifest["vae_decoder"]
        hashed = [
            p for p in tmp.rglob("*") if p.is_file() and (p.suffix == ".safetensors" or p.parent.name in runtimes)
        ]
        meta["sha256"] = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(hashed)}
        (tmp / "diffusia.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    log.info("saved quantized pipeline to %s", out_dir)
    return out_dir


# diffusia.json's entries that are JSON objects (sha256 has its own check, verify_checksums)
SECTIONS = ("recipe", "calibration", "validation", "packages", "target", "runtimes", "qat", "quantization_map")


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / "diffusia.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8
        raise DiffusiaError(f"{path} is unreadable ({e}): re-run `diffusia quantize`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") not in (1, VERSION):
        raise DiffusiaError(
            f"{path} is not a diffusia quantized pipeline (format {FORMAT!r} version 1 or {VERSION}): "
            "re-run `diffusia quantize`"
        )
    bad = next((k for k in SECTIONS if meta.get(k) is not None and not isinstance(meta[k], dict)), None)
    if bad:
        raise DiffusiaError(
            f"{path}: its {bad!r} entry is a JSON {type(meta[bad]).__name__}, not an object: re-run `diffusia quantize`"
        )
    return meta


def _meta_entry(folder: Path, meta: dict, key: str, build):
    """`build(meta[key])`, None without one; a malformed entry is a one-line error."""
    if not meta.get(key):
        return None
    try:
        return build(meta[key])
    except (TypeError, ValueError, KeyError, DiffusiaError) as e:
        raise DiffusiaError(
            f"{folder / 'diffusia.json'}: its {key!r} entry is malformed ({e}): re-run `diffusia quantize`"
        ) from None


def quantization_config(folder: str | Path) -> dict | None:
    """The U-Net's `quantization_config` (recipe, target, quantization map), or None for a float U-Net."""
    path = Path(folder) / "unet" / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffusiaError(f"{path} is unreadable ({e}): re-run `diffusia quantize`") from None
    q = config.get("quantization_config") if isinstance(config, dict) else None
    return q if isinstance(q, dict) else None


def verify_checksums(folder: Path, meta: dict) -> None:
    """Every component tensor file and runtime graph of the folder must be listed in diffusia.json's `sha256` and match it: a
    missing block, a file it does not list or one that differs is refused (never a silently skipped check)."""
    from diffusia.models.loading import components, read_model_index
    from diffusia.runtime.artifact import EXPORTED

    digests = meta.get("sha256")
    fix = "re-run `diffusia quantize`"
    if not (isinstance(digests, dict) and digests and all(isinstance(v, str) for v in digests.values())):
        raise DiffusiaError(
            f"{folder / 'diffusia.json'} has no valid sha256 block, so the folder cannot be verified: {fix}"
        )
    # what loading reads: the components' tensor files and the runtime graphs (not, e.g., QAT checkpoints)
    parts = components(read_model_index(folder))
    present = [
        *(p for c in parts for p in (folder / c).glob("*.safetensors")),
        *(p for r in EXPORTED for p in (folder / r).rglob("*") if p.is_file()),
    ]
    unlisted = sorted(str(p.relative_to(folder)) for p in present if str(p.relative_to(folder)) not in digests)
    if unlisted:
        raise DiffusiaError(
            f"{folder / unlisted[0]} is not listed in diffusia.json's sha256 (added after saving?): remove it or {fix}"
        )
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
    log.warning(
        "the %s graph in this folder is laid out for %s CPUs and would saturate on this %s CPU: exporting "
        "the U-Net converted to 7-bit activations instead (re-quantize with `diffusia quantize --target "
        "auto --runtime %s` to save a graph for this CPU)",
        runtime,
        made_for,
        cpu.host_class(),
        runtime,
    )
    return False


def _pipeline_kwargs(folder: Path, dtype) -> dict:
    """from_pretrained arguments: the components' dtype, and no safety checker for the classes that take one."""
    from diffusia.models.loading import pipeline_class, pipeline_kwargs, read_model_index

    return dict(torch_dtype=dtype, use_safetensors=True, **pipeline_kwargs(pipeline_class(read_model_index(folder))))


def _load_v1_unet(folder: Path, meta: dict):
    """A version-1 folder's U-Net: quantization map in diffusia.json, tensors in unet/diffusia_unet.safetensors."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    config = UNet2DConditionModel.load_config(folder / "unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    return api.load_quantized_state(unet, meta["quantization_map"], load_file(str(folder / UNET_FILE_V1)))


def load_quantized_pipeline(
    folder: str | Path,
    dtype=None,
    runtime: str = "torch",
    threads: int | None = None,
    runtime_precision: str = "f32",
):
    """Load a folder written by `save_quantized_pipeline` with diffusers' `DiffusionPipeline.from_pretrained` (the
    pipeline class from model_index.json; diffusia's quantizer rebuilds the U-Net on the meta device, so FP32
    weights are never materialised). With a `runtime` the folder was saved for, the U-Net is that runtime's graph
    and no PyTorch U-Net is built (other runtimes are deployed by the caller)."""
    from diffusers import DiffusionPipeline, UNet2DConditionModel
    from diffusers.configuration_utils import FrozenDict

    from diffusia import runtime as runtimes
    from diffusia.config import Recipe
    from diffusia.integrations import register_diffusers
    from diffusia.quant.pipeline import CalibrationInfo

    folder = Path(folder)
    meta = read_meta(folder)
    verify_checksums(folder, meta)
    recipe = _meta_entry(folder, meta, "recipe", Recipe.from_dict)
    calibration = _meta_entry(folder, meta, "calibration", lambda d: CalibrationInfo(**d))
    register_diffusers()
    kwargs = _pipeline_kwargs(folder, dtype)
    if runtime != "torch" and (folder / runtime / runtimes.MANIFEST).is_file() and _graph_fits_host(meta, runtime):
        pipe = DiffusionPipeline.from_pretrained(folder, unet=None, **kwargs)
        config = UNet2DConditionModel.load_config(folder / "unet")
        config = FrozenDict({k: v for k, v in config.items() if k != "quantization_config"})
        unet = runtimes.load_unet(runtime, folder / runtime, config, threads=threads, precision=runtime_precision)
        runtimes.install(pipe, unet)
    elif meta["version"] == 1 and meta.get("quantization_map"):
        pipe = DiffusionPipeline.from_pretrained(folder, unet=_load_v1_unet(folder, meta), **kwargs)
    else:
        pipe = DiffusionPipeline.from_pretrained(folder, **kwargs)
    pipe.diffusia_recipe = recipe
    pipe.diffusia_calibration = calibration
    pipe.diffusia_validation = meta.get("validation")
    pipe.diffusia_meta = meta
    return pipe
