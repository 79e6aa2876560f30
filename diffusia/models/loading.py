"""`load_pipeline(spec)`: the embedded `tiny` pipeline, `sd15-arch` (random weights), a local folder or a hub id."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from diffusia.errors import DiffusiaError
from diffusia.models.safetensors_check import check_folder

log = logging.getLogger(__name__)

TINY_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SPECS = ("tiny", "sd15-arch", "<local folder>", "<hub id>")
REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise DiffusiaError(f"unknown dtype {dtype!r}: use one of fp32, fp16, bf16")
    return DTYPES[dtype]


def check_pipeline_folder(folder: Path) -> None:
    if not (folder / "model_index.json").is_file():
        raise DiffusiaError(f"{folder} has no model_index.json: point --model at a diffusers pipeline folder")
    missing = [c for c in REQUIRED if not (folder / c).is_dir()]
    if missing:
        raise DiffusiaError(f"{folder} has no {'/, '.join(missing)}/ folder: it is not a complete Stable Diffusion pipeline")
    check_folder(folder)


def _from_folder(folder: Path, dtype, low_cpu_mem_usage: bool, runtime: str = "torch", threads: int | None = None):
    from diffusers import StableDiffusionPipeline

    check_pipeline_folder(folder)
    if (folder / "diffusia.json").is_file():
        from diffusia.quant.serialization import load_quantized_pipeline

        return load_quantized_pipeline(folder, dtype=dtype, runtime=runtime, threads=threads)
    try:
        return StableDiffusionPipeline.from_pretrained(
            folder, torch_dtype=dtype, use_safetensors=True, safety_checker=None, requires_safety_checker=False,
            low_cpu_mem_usage=low_cpu_mem_usage,
        )
    except (OSError, ValueError, EnvironmentError) as e:
        raise DiffusiaError(f"could not load the pipeline in {folder}: {str(e).splitlines()[0]}") from None


def _from_hub(repo_id: str, dtype, low_cpu_mem_usage: bool):
    from diffusers import StableDiffusionPipeline

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    try:
        return StableDiffusionPipeline.from_pretrained(
            repo_id, torch_dtype=dtype, use_safetensors=True, safety_checker=None, requires_safety_checker=False,
            low_cpu_mem_usage=low_cpu_mem_usage,
        )
    except Exception as e:  # network, auth and missing-file errors all end here
        raise DiffusiaError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub ({type(e).__name__}): without network, "
            f"download it elsewhere and pass the local folder, e.g. --model ./stable-diffusion-v1-5"
        ) from None


def build_sd15_arch(dtype=None):
    """The exact SD v1.5 pipeline architecture with random weights (for scale benchmarks only)."""
    import tempfile

    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from diffusia.models.architectures import SD15_TEXT, SD15_UNET, SD15_VAE, build_components
    from diffusia.models.tokenizer import write_clip_tokenizer

    parts = build_components(SD15_UNET, SD15_VAE, SD15_TEXT, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp))
    pipe = StableDiffusionPipeline(**parts, tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe.to(dtype=dtype) if dtype is not None else pipe


def describe(spec: str) -> str:
    """Human label of a spec for reports; random-weight models say so."""
    return "sd15-arch (SD v1.5 architecture, random weights)" if spec == "sd15-arch" else str(spec)


def load_pipeline(spec: str | os.PathLike, device: str = "cpu", dtype=None, low_cpu_mem_usage: bool = True,
                  progress: bool = True, runtime: str | None = None, threads: int | None = None):
    """Load a `StableDiffusionPipeline` from a spec; every failure is a one-line DiffusiaError. `runtime` (see
    `diffusia.runtime`) is where the U-Net runs: a diffusia folder saved for it loads that graph, any other model
    is exported to it (and checked) now."""
    from diffusia import runtime as runtimes

    dtype = resolve_dtype(dtype)
    runtime = runtimes.resolve(runtime, device)
    if runtime != "torch" and dtype not in (None, torch.float32):
        raise DiffusiaError(f"the {runtime} U-Net computes in float32 (and INT8): drop --dtype, or use --runtime torch")
    spec_str = str(spec)
    if spec_str == "tiny":
        if not (TINY_DIR / "model_index.json").is_file():
            raise DiffusiaError(f"the embedded pipeline is missing at {TINY_DIR}: run `python scripts/train_tiny.py`")
        pipe = _from_folder(TINY_DIR, dtype, low_cpu_mem_usage)
    elif spec_str == "sd15-arch":
        pipe = build_sd15_arch(dtype)
    elif Path(spec_str).expanduser().exists():
        folder = Path(spec_str).expanduser()
        if not folder.is_dir():
            raise DiffusiaError(f"{folder} is a file: --model takes a pipeline folder, `tiny`, `sd15-arch` or a hub id")
        pipe = _from_folder(folder, dtype, low_cpu_mem_usage, runtime, threads)
    elif HUB_ID.match(spec_str) and not spec_str.startswith((".", "/", "~")):
        pipe = _from_hub(spec_str, dtype, low_cpu_mem_usage)
    else:
        raise DiffusiaError(f"no such model {spec_str!r}: use `tiny`, `sd15-arch`, an existing pipeline folder or a "
                            "hub id like runwayml/stable-diffusion-v1-5")
    if device != "cpu" and device.startswith("cuda") and not torch.cuda.is_available():
        raise DiffusiaError(f"device {device!r} requested but CUDA is not available: use --device cpu")
    pipe = runtimes.deploy(pipe.to(device), runtime, device=device, threads=threads)
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    pipe.diffusia_spec = describe(spec_str)
    return pipe
