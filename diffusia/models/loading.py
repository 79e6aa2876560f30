"""`load_pipeline(spec)`: the embedded `tiny` pipeline, `sd15-arch`/`sd21-arch`/`sdxl-arch` (random weights), a local
folder, a single-file `.safetensors` checkpoint or a hub id; any UNet2DCondition pipeline (SD 1.x, 2.x, XL)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch

from diffusia.errors import DiffusiaError
from diffusia.models.heap import release_before_decode
from diffusia.models.safetensors_check import check_folder

log = logging.getLogger(__name__)

TINY_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ARCH_SPECS = {"sd15-arch": "SD15", "sd21-arch": "SD21", "sdxl-arch": "SDXL"}
ARCH_LABELS = {"sd15-arch": "SD v1.5", "sd21-arch": "SD 2.1", "sdxl-arch": "SDXL base 1.0"}
SPECS = ("tiny", *ARCH_SPECS, "<local folder>", "<checkpoint.safetensors>", "<hub id>")
# Components diffusia never loads (they are passed as None): the rest of model_index.json must be on disk.
UNUSED = ("safety_checker", "feature_extractor", "image_encoder")

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise DiffusiaError(f"unknown dtype {dtype!r}: use one of fp32, fp16, bf16")
    return DTYPES[dtype]


def read_model_index(folder: Path) -> dict:
    """model_index.json of a pipeline folder, checked to describe a pipeline around a UNet2DConditionModel."""
    path = folder / "model_index.json"
    if not path.is_file():
        raise DiffusiaError(f"{folder} has no model_index.json: point --model at a diffusers pipeline folder")
    try:
        index = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DiffusiaError(f"{path} is not valid JSON ({e}): re-save the pipeline") from None
    unet = index.get("unet") if isinstance(index, dict) else None
    if not isinstance(unet, list) or unet[-1:] != ["UNet2DConditionModel"]:
        raise DiffusiaError(
            f"{folder} is a {index.get('_class_name', '?') if isinstance(index, dict) else '?'} "
            "without a UNet2DConditionModel unet: diffusia quantizes SD 1.x, SD 2.x and SDXL pipelines"
        )
    return index


def components(index: dict) -> list[str]:
    """The components a model_index.json lists (non-null), in order."""
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0]]


def pipeline_kwargs(cls) -> dict:
    """Keyword arguments that skip the safety checker and image encoder, for the pipeline classes that take them."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: None for k in UNUSED if k in params}
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    return kwargs


def pipeline_class(index: dict):
    import diffusers

    cls = getattr(diffusers, str(index.get("_class_name")), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.DiffusionPipeline):
        raise DiffusiaError(
            f"unknown pipeline class {index.get('_class_name')!r} in model_index.json: this "
            f"diffusers ({diffusers.__version__}) has no such pipeline"
        )
    return cls


def check_pipeline_folder(folder: Path) -> dict:
    """Check a pipeline folder before loading it; returns its model_index.json."""
    index = read_model_index(folder)
    missing = [c for c in components(index) if c not in UNUSED and not (folder / c).is_dir()]
    if missing:
        raise DiffusiaError(
            f"{folder} has no {'/, '.join(missing)}/ folder: it is not a complete Stable Diffusion pipeline"
        )
    check_folder(folder)
    return index


def _from_folder(
    folder: Path,
    dtype,
    low_cpu_mem_usage: bool,
    runtime: str = "torch",
    threads: int | None = None,
    runtime_precision: str = "f32",
):
    from diffusers import DiffusionPipeline

    index = check_pipeline_folder(folder)
    try:
        if (folder / "diffusia.json").is_file():
            from diffusia.quant.serialization import load_quantized_pipeline

            pipe = load_quantized_pipeline(
                folder, dtype=dtype, runtime=runtime, threads=threads, runtime_precision=runtime_precision
            )
        else:  # model_index.json names the class: StableDiffusionPipeline, StableDiffusionXLPipeline, ...
            pipe = DiffusionPipeline.from_pretrained(
                folder,
                torch_dtype=dtype,
                use_safetensors=True,
                low_cpu_mem_usage=low_cpu_mem_usage,
                **pipeline_kwargs(pipeline_class(index)),
            )
    except (OSError, ValueError, KeyError, TypeError) as e:  # malformed configs and tensor files
        raise DiffusiaError(f"could not load the pipeline in {folder}: {str(e).strip().splitlines()[0]}") from None
    return pipe


def check_components_fit(pipe, spec) -> None:
    """The U-Net must take what the pipeline's text encoder(s) and VAE give it; a U-Net from another base model
    would otherwise fail deep inside a kernel at the first step."""
    config = getattr(getattr(pipe, "unet", None), "config", None)
    encoders = [getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2")]
    text_dim = sum(e.config.hidden_size for e in encoders if e is not None)  # SDXL concatenates its two
    vae = getattr(pipe, "vae", None)
    pairs = [
        ("cross_attention_dim", text_dim, "the text encoder(s) give"),
        ("out_channels", vae.config.latent_channels if vae is not None else 0, "the VAE's latents have"),
    ]
    for key, theirs, what in pairs:
        ours = config.get(key) if config is not None else None
        if isinstance(ours, int) and theirs and ours != theirs:  # (per-block tuples are not checked)
            raise DiffusiaError(
                f"the U-Net of {spec} does not fit its pipeline: its {key} is {ours}, {what} {theirs} (a U-Net "
                "of another base model?): quantize the pipeline the U-Net belongs to"
            )


def _from_hub(repo_id: str, dtype, low_cpu_mem_usage: bool):
    from diffusers import DiffusionPipeline

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    try:
        return DiffusionPipeline.from_pretrained(
            repo_id,
            torch_dtype=dtype,
            use_safetensors=True,
            safety_checker=None,
            requires_safety_checker=False,
            low_cpu_mem_usage=low_cpu_mem_usage,
        )
    except Exception as e:  # network, auth and missing-file errors all end here
        raise DiffusiaError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub ({type(e).__name__}): without network, "
            f"download it elsewhere and pass the local folder, e.g. --model ./stable-diffusion-v1-5"
        ) from None


def build_arch(spec: str, dtype=None):
    """The exact SD v1.5 / 2.1 / XL pipeline architecture of `spec` with random weights (scale benchmarks only)."""
    from diffusia.models import architectures

    return architectures.build_pipeline(getattr(architectures, ARCH_SPECS[spec]), seed=0, dtype=dtype)


def build_sd15_arch(dtype=None):
    return build_arch("sd15-arch", dtype)


def describe(spec: str) -> str:
    """Human label of a spec for reports; random-weight models say so."""
    if spec in ARCH_SPECS:
        return f"{spec} ({ARCH_LABELS[spec]} architecture, random weights)"
    return str(spec)


def load_pipeline(
    spec: str | os.PathLike,
    device: str = "cpu",
    dtype=None,
    low_cpu_mem_usage: bool = True,
    progress: bool = True,
    runtime: str | None = None,
    threads: int | None = None,
    config: str | os.PathLike | None = None,
    runtime_precision: str = "f32",
):
    """Load a UNet2DCondition pipeline (the class model_index.json names) from a spec; every failure is a one-line
    DiffusiaError. `runtime` (see `diffusia.runtime`) is where the U-Net runs: a diffusia folder saved for it loads
    that graph, any other model is exported to it (and checked) now. `config` is a diffusers pipeline folder whose
    configs a single-file checkpoint is read with (default: the shipped config of the detected architecture).
    `runtime_precision` is what OpenVINO computes the float layers in: f32 (as the export check verified) or bf16
    (faster on CPUs with AMX or AVX-512 BF16, unchecked); `+dynamic` also quantizes the weight-only layers' float
    inputs on the fly (`diffusia.runtime.PRECISIONS`)."""
    from diffusia import runtime as runtimes

    dtype = resolve_dtype(dtype)
    runtime = runtimes.resolve(runtime, device)
    runtimes.check_precision(runtime, runtime_precision)
    if runtime != "torch" and dtype not in (None, torch.float32):
        raise DiffusiaError(f"the {runtime} U-Net computes in float32 (and INT8): drop --dtype, or use --runtime torch")
    spec_str = str(spec)
    single_file = Path(spec_str).expanduser().is_file()
    if config is not None and not single_file:
        raise DiffusiaError("--config applies to single-file checkpoints only: drop it for a pipeline folder or hub id")
    if spec_str == "tiny":
        if not (TINY_DIR / "model_index.json").is_file():
            raise DiffusiaError(f"the embedded pipeline is missing at {TINY_DIR}: run `python scripts/train_tiny.py`")
        pipe = _from_folder(TINY_DIR, dtype, low_cpu_mem_usage)
    elif spec_str == "sd15-arch":
        pipe = build_sd15_arch(dtype)
    elif spec_str in ARCH_SPECS:
        pipe = build_arch(spec_str, dtype)
    elif single_file:
        from diffusia.models.single_file import load_single_file

        pipe = load_single_file(Path(spec_str).expanduser(), config=config, dtype=dtype)
    elif Path(spec_str).expanduser().exists():
        pipe = _from_folder(Path(spec_str).expanduser(), dtype, low_cpu_mem_usage, runtime, threads, runtime_precision)
    elif HUB_ID.match(spec_str) and not spec_str.startswith((".", "/", "~")):
        pipe = _from_hub(spec_str, dtype, low_cpu_mem_usage)
    else:
        raise DiffusiaError(
            f"no such model {spec_str!r}: use `tiny`, `sd15-arch`, an existing pipeline folder, a "
            ".safetensors checkpoint or a hub id like runwayml/stable-diffusion-v1-5"
        )
    check_components_fit(pipe, spec_str)
    if device != "cpu" and device.startswith("cuda") and not torch.cuda.is_available():
        raise DiffusiaError(f"device {device!r} requested but CUDA is not available: use --device cpu")
    pipe = runtimes.deploy(pipe.to(device), runtime, device=device, threads=threads, precision=runtime_precision)
    release_before_decode(pipe)
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    pipe.diffusia_spec = describe(spec_str)
    return pipe
