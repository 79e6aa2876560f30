"""Single-file checkpoints (the original LDM/CompVis `.safetensors` layout most users hold): the architecture is
detected from tensor names and shapes, then diffusers' `from_single_file` reads the file with a config folder shipped
in the package (`assets/single_file/<arch>`, tokenizers built offline), so no network is ever needed.

SD 2.x checkpoints are taken as SD 2.1 (768 px, v-prediction): the file does not say whether it is a 2.x-base
(512 px, epsilon) model; for those, and any other layout, pass `config=` a diffusers folder of the model."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from diffusia.errors import DiffusiaError
from diffusia.models.architectures import EOS, SD15, SD21, SD_BETAS, SDXL, Architecture
from diffusia.models.loading import components, pipeline_class, pipeline_kwargs, read_model_index
from diffusia.models.safetensors_check import check_safetensors, read_header

SINGLE_FILE_DIR = Path(__file__).resolve().parent.parent / "assets" / "single_file"
# diffusers' model type (`single_file_utils.infer_diffusers_model_type`) -> shipped config folder
CONFIGS = {"v1": "sd15", "v2": "sd21", "xl_base": "sdxl"}
UNET_PREFIX = "model.diffusion_model."
PICKLED = (".ckpt", ".pt", ".pth", ".bin")
# The shipped folders hold no vocabulary: their tokenizers are built offline (`tokenizer.clip_tokenizer`).
PAD_TOKENS = {"sd15": {"tokenizer": EOS}, "sd21": {"tokenizer": "!"}, "sdxl": {"tokenizer": EOS, "tokenizer_2": "!"}}
# The schedulers the original model folders ship (diffusia samples with DPM-Solver on the same betas anyway).
SCHEDULERS = {
    "sd15": ("PNDMScheduler", dict(SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)),
    "sd21": (
        "DDIMScheduler",
        dict(SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"),
    ),
    "sdxl": ("EulerDiscreteScheduler", dict(SD_BETAS, steps_offset=1, timestep_spacing="leading")),
}
ARCHITECTURES = {"sd15": SD15, "sd21": SD21, "sdxl": SDXL}


def tensor_shapes(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as meta tensors (names and shapes only: nothing is read or allocated)."""
    _, header = read_header(path)
    return {k: torch.empty(v["shape"], device="meta") for k, v in header.items() if k != "__metadata__"}


def require_unet(checkpoint: Mapping, name: str = "the file") -> None:
    if not any(k.startswith(UNET_PREFIX) for k in checkpoint):
        raise DiffusiaError(
            f"{name} holds no {UNET_PREFIX}* tensors, so it is not a Stable Diffusion checkpoint: "
            "pass a full single-file checkpoint or a diffusers pipeline folder"
        )


def model_type(checkpoint: Mapping, name: str = "the file") -> str:
    """The shipped config of a single-file checkpoint (sd15, sd21, sdxl), from its tensor names and shapes only."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type

    require_unet(checkpoint, name)
    kind = infer_diffusers_model_type(checkpoint)
    if kind == "v1" and CHECKPOINT_KEY_NAMES["v1"] not in checkpoint:
        kind = "unrecognised"  # diffusers' fallback, but not the SD 1.x block layout
    if kind not in CONFIGS:
        raise DiffusiaError(
            f"{name} is a {kind} checkpoint and diffusia ships configs for SD 1.x, SD 2.x and SDXL "
            "base only: pass --config with a diffusers folder of that model"
        )
    return CONFIGS[kind]


def load_single_file(path: str | Path, config: str | os.PathLike | None = None, dtype=None):
    """The pipeline of a single-file `.safetensors` checkpoint, read offline with the shipped config of its detected
    architecture, or with `config` (a diffusers pipeline folder; weights in it are not used)."""
    path = Path(path)
    if path.suffix.lower() in PICKLED:
        raise DiffusiaError(
            f"{path.name} is a pickled checkpoint and diffusia never unpickles user files: convert it "
            "to .safetensors and pass that"
        )
    if path.suffix.lower() != ".safetensors":
        raise DiffusiaError(
            f"{path} is a file but not a .safetensors checkpoint: --model takes a pipeline folder, a "
            ".safetensors checkpoint, `tiny`, an *-arch spec or a hub id"
        )
    check_safetensors(path)
    shapes = tensor_shapes(path)
    if config is None:
        name = model_type(shapes, path.name)
        folder = SINGLE_FILE_DIR / name
    else:
        require_unet(shapes, path.name)
        name, folder = None, Path(config).expanduser()
        if not folder.is_dir():
            raise DiffusiaError(f"--config {folder} is not a folder: pass a diffusers pipeline folder")
    index = read_model_index(folder)
    cls = pipeline_class(index)
    kwargs = pipeline_kwargs(cls)
    for tok in ("tokenizer", "tokenizer_2"):
        if tok in components(index) and not any((folder / tok / f).is_file() for f in ("vocab.json", "tokenizer.json")):
            from diffusia.models.tokenizer import clip_tokenizer

            kwargs[tok] = clip_tokenizer(PAD_TOKENS.get(name, {}).get(tok, EOS))
    try:
        return cls.from_single_file(str(path), config=str(folder), local_files_only=True, torch_dtype=dtype, **kwargs)
    except Exception as e:  # diffusers' conversion raises ValueError, KeyError, SingleFileComponentError, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DiffusiaError(f"could not load {path.name} with the config in {folder}: {msg}") from None


def write_config(name: str, folder: str | Path) -> Path:
    """Write the shipped config folder `name` (model_index.json and every component's config, no weights, no
    vocabulary) from `architectures`; `scripts/write_single_file_configs.py` runs it."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    arch: Architecture = ARCHITECTURES[name]
    folder = Path(folder)
    with torch.device("meta"):
        UNet2DConditionModel(**arch.unet).save_config(folder / "unet")
        AutoencoderKL(**arch.vae).save_config(folder / "vae")
    sched_cls, sched_cfg = SCHEDULERS[name]
    getattr(diffusers, sched_cls)(**sched_cfg).save_config(folder / "scheduler")
    index = {
        "_class_name": arch.pipeline,
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", sched_cls],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    encoders = [("text_encoder", "tokenizer", "CLIPTextModel", arch.text)]
    if arch.text_2 is not None:
        encoders.append(("text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection", arch.text_2))
    for enc, tok, enc_cls, cfg in encoders:
        CLIPTextConfig(**cfg, architectures=[enc_cls]).save_pretrained(folder / enc)
        index[enc], index[tok] = ["transformers", enc_cls], ["transformers", "CLIPTokenizer"]
    if arch.text_2 is None:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    else:
        index.update(feature_extractor=[None, None], image_encoder=[None, None], force_zeros_for_empty_prompt=True)
    (folder / "model_index.json").write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    return folder
