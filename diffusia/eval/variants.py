"""Variants of the evaluation: resolve `--variants` strings and materialise each as a pipeline folder.

`fp32` is the base model as loaded; `fp16` / `bf16` load the whole pipeline in that dtype where the device has
arithmetic for it (CUDA, or a CPU with AVX512-FP16/BF16 or AMX), and elsewhere are what they can only be there, a
storage format: the U-Net's weights stored in that dtype and computed in FP32 (the preset of that name; PyTorch's
emulated half arithmetic would only measure the emulation). Any other preset name (`w8a8`, `w8`, `w4`, `mixed`,
...) quantizes the base U-Net with `diffusia.quant.pipeline`, and so does a recipe `.json` file (any recipe option,
e.g. `"activations": "int8"`); a folder is a quantized diffusia folder (with `diffusia.json`) made from the same
base model.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusia.errors import DiffusiaError
from diffusia.fileio import atomic_dir

log = logging.getLogger(__name__)

DTYPE_VARIANTS = {"fp32": None, "fp16": "fp16", "bf16": "bf16"}


@dataclass(frozen=True)
class Variant:
    """One column of the study: `name` labels it, `kind` is fp32 | dtype | storage | preset | recipe | folder."""

    name: str
    kind: str
    value: str  # dtype or preset name, or the recipe file or folder path
    dtype: str | None = None  # dtype to load the materialised folder with

    def describe(self) -> str:
        return {
            "fp32": "base model, float32",
            "dtype": f"whole pipeline cast to {self.value}",
            "storage": f"U-Net weights stored in {self.value}, computed in float32 (no native {self.value} here)",
            "preset": f"U-Net quantized with preset {self.value!r}",
            "recipe": f"U-Net quantized with recipe {self.value}",
            "folder": f"quantized folder {self.value}",
        }[self.kind]


def quant_presets() -> tuple[str, ...]:
    """Quantization preset names, without the dtype ones."""
    from diffusia.config import PRESETS

    return tuple(p for p in PRESETS if p not in DTYPE_VARIANTS)


def valid_names() -> list[str]:
    return [*DTYPE_VARIANTS, *quant_presets()]


QUANTIZING = ("preset", "recipe")  # kinds materialise quantizes


def _path_name(path: Path, taken: set[str], kind: str) -> str:
    """A variant name from a folder's name or a recipe file's stem, unique and distinct from the preset names."""
    path = path.resolve()
    base = re.sub(r"[^\w.+-]", "_", path.stem if kind == "recipe" else path.name) or kind
    name = base if base not in taken and base not in valid_names() else f"{kind}-{base}"
    i = 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def native_half(dtype: str, device: str) -> bool:
    """Whether `device` computes in `dtype` ("fp16"/"bf16") natively: CUDA does; a CPU only with the instructions."""
    if not device.startswith("cpu"):
        return True
    from diffusia.quant.cpu import has_native_half

    return has_native_half(dtype)


def parse_variants(spec: str | Sequence[str], device: str = "cpu") -> list[Variant]:
    """`fp32,fp16,w8a8,path/to/folder` -> variants; unknown names and non-diffusia folders are one-line errors."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [str(s).strip() for s in items if str(s).strip()]
    if not items:
        raise DiffusiaError(
            f"no variants given: pass e.g. --variants fp32,fp16,w8a8 (valid: {', '.join(valid_names())})"
        )
    out: list[Variant] = []
    taken: set[str] = set()
    for item in items:
        if item == "fp32":
            v = Variant("fp32", "fp32", "fp32")
        elif item in DTYPE_VARIANTS:
            native = native_half(item, device)
            v = Variant(item, "dtype" if native else "storage", item, dtype=DTYPE_VARIANTS[item] if native else None)
        elif item in quant_presets():
            v = Variant(item, "preset", item)
        elif item.endswith(".json") and Path(item).expanduser().is_file():
            from diffusia.config import load_recipe

            path = Path(item).expanduser()
            load_recipe(str(path))  # a bad recipe fails here, before anything runs
            v = Variant(_path_name(path, taken, "recipe"), "recipe", str(path.resolve()))
        elif Path(item).expanduser().is_dir():
            folder = Path(item).expanduser()
            if not (folder / "diffusia.json").is_file():
                raise DiffusiaError(f"variant folder {folder} has no diffusia.json: make one with `diffusia quantize`")
            v = Variant(_path_name(folder, taken, "folder"), "folder", str(folder.resolve()))
        else:
            raise DiffusiaError(
                f"unknown variant {item!r}: use one of {', '.join(valid_names())}, "
                "a recipe .json file or the path of a quantized diffusia folder"
            )
        if v.name in taken:
            raise DiffusiaError(f"variant {v.name!r} is listed twice in --variants")
        taken.add(v.name)
        out.append(v)
    return out


def with_options(recipe, activations: str = "auto", attention: str = "float", unet=None):
    """`recipe` with W8A8 `activations` (unchanged for auto) and `attention` where its plan for the float `unet`
    has attentions with W8A8 projections (`mixed` keeps them in fp16, so its attention stays float)."""
    from diffusia.quant import attention as attn
    from diffusia.quant.policy import plan

    if activations != "auto":
        recipe = recipe.replace(activations=activations)
    if attention != "float" and attn.eligible(unet, plan(unet, recipe)):
        recipe = recipe.replace(attention=attention)
    return recipe


def options_label(recipe) -> str:
    """What a recipe's non-default activations and attention add to its variant's name, e.g. `-int8-attn8`."""
    return ("" if recipe.activations == "auto" else f"-{recipe.activations}") + (
        "" if recipe.attention == "float" else "-attn8"
    )


def with_option_recipes(items: list[str], activations: str, attention: str, model: str, folder: Path) -> list[str]:
    """`--variants` items with `activations` / `attention` given to every preset with W8A8 layers: such a preset
    becomes a recipe file in `folder` named by what changed (e.g. `w8a8-int8-attn8.json`, so its variant is
    labelled so); other items unchanged (a recipe file sets its own)."""
    from diffusia.config import get_preset
    from diffusia.fileio import write_text
    from diffusia.quant.pipeline import recipe_calibrates

    if activations == "auto" and attention == "float":
        return list(items)
    unet = None
    if attention != "float":
        from diffusia import load_pipeline

        unet = load_pipeline(model, progress=False).unet
    out = []
    for item in items:
        if item in quant_presets() and recipe_calibrates(get_preset(item)):
            recipe = with_options(get_preset(item), activations, attention, unet)
            if options_label(recipe):
                path = Path(folder) / f"{item}{options_label(recipe)}.json"
                write_text(path, recipe.to_json() + "\n")
                item = str(path)
        out.append(item)
    return out


def _public(config: dict[str, Any]) -> dict[str, Any]:
    """A U-Net config without diffusers' private keys and the quantization, JSON-normalised (tuples -> lists)."""
    return json.loads(
        json.dumps(
            {k: v for k, v in dict(config).items() if not k.startswith("_") and k != "quantization_config"}, default=str
        )
    )


def check_compatible(folder: str | Path, base_unet_config: dict[str, Any], model: str) -> None:
    """Fail if the quantized folder's U-Net (its unet/config.json) differs from the base's."""
    path = Path(folder) / "unet" / "config.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise DiffusiaError(f"{path} is missing or unreadable: re-run `diffusia quantize`") from None
    theirs, ours = _public(recorded), _public(base_unet_config)
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        k = diff[0]
        raise DiffusiaError(
            f"{folder} was quantized from another base model than {model!r}: U-Net {k} is "
            f"{theirs.get(k)!r} there and {ours.get(k)!r} here ({len(diff)} config keys differ)"
        )


def materialise(
    variant: Variant,
    model: str,
    out_dir: str | Path,
    calib_prompts=None,
    calib_size: int = 100,
    progress: bool = True,
    steps: int | None = None,
    guidance: float | None = None,
    runtime: str = "torch",
    observations=None,
) -> Path:
    """Write the variant as a pipeline folder under `out_dir` (atomically) and return it; folders stay in place.

    Presets calibrate on `calib_size` prompts with the evaluation's sampler `steps` and `guidance` (when the
    quantizer takes them), from `observations` shared by the evaluation's presets where they match."""
    import inspect

    from diffusia import load_pipeline

    if variant.kind == "folder":
        return Path(variant.value)
    folder = Path(out_dir) / variant.name
    if variant.kind in ("fp32", "dtype"):
        pipe = load_pipeline(model, dtype=variant.dtype, progress=False)
        with atomic_dir(folder) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
        return folder
    from diffusia.config import load_recipe
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline

    recipe = load_recipe(variant.value)
    pipe = load_pipeline(model, progress=False)
    log.info("quantizing %s with %s %s (calibration: %d prompts)", model, variant.kind, variant.value, calib_size)
    params = inspect.signature(quantize_pipeline).parameters
    given = (("steps", steps), ("guidance", guidance), ("observations", observations))
    extra = {k: v for k, v in given if v is not None and k in params}
    quantize_pipeline(pipe, recipe, calib_prompts, calib_size=calib_size, progress=progress, **extra)
    save_quantized_pipeline(pipe, folder, runtimes=() if runtime == "torch" else (runtime,))
    return folder


def folder_bytes(folder: str | Path) -> int:
    """Real bytes of the files under a folder (what a device has to store)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def variant_size(folder: Path, fp32: dict[str, int] | None, runtime: str = "torch") -> dict[str, Any]:
    """Bytes on disk: the U-Net's weights, the whole folder, and the U-Net graph the runtime ran, if it was saved."""
    from diffusia.runtime.artifact import MANIFEST, graph_bytes

    unet, whole = folder_bytes(folder / "unet"), folder_bytes(folder)
    out: dict[str, Any] = {
        "unet_bytes": unet,
        "pipeline_bytes": whole,
        "unet_mb": unet / 2**20,
        "pipeline_mb": whole / 2**20,
    }
    if runtime != "torch" and (folder / runtime / MANIFEST).is_file():
        out["runtime_graph_mb"] = graph_bytes(folder / runtime) / 2**20
    if fp32:
        out["unet_change_pct"] = 100.0 * (unet / fp32["unet_bytes"] - 1)
        out["pipeline_change_pct"] = 100.0 * (whole / fp32["pipeline_bytes"] - 1)
        out["unet_ratio_vs_fp32"] = fp32["unet_bytes"] / unet
    return out


def shared_observations(pipe, specs: list[Variant], calib, calib_size: int, steps: int, guidance: float):
    """One sampling pass of the calibration prompts for the recipes that calibrate with the same settings, when
    two or more do (`diffusia.calib.observations`); else None."""
    from collections import Counter

    from diffusia.calib.observations import Observations, ObserverSettings
    from diffusia.config import load_recipe
    from diffusia.prompts import take
    from diffusia.quant.pipeline import CALIBRATION_BATCH, recipe_calibrates

    recipes = [r for r in (load_recipe(v.value) for v in specs if v.kind in QUANTIZING) if recipe_calibrates(r)]
    counts = Counter(ObserverSettings.of(r) for r in recipes)
    if not counts or counts.most_common(1)[0][1] < 2:
        return None
    recipe = next(r for r in recipes if ObserverSettings.of(r) == counts.most_common(1)[0][0])
    prompts = take(calib, calib_size)
    log.info("observing the calibration once for %d recipes", counts.most_common(1)[0][1])
    return Observations.record(pipe, recipe, prompts, steps, guidance, batch=CALIBRATION_BATCH, progress=False)
