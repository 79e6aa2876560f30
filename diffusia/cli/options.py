"""Every number, device and choice of the command line, checked while the arguments are parsed, before any model
work: a bad value is a one-line DiffusiaError naming the option, the value and a valid example.

Options are built with the factories below (`integer`, `number`, `choice`, `device` and the shared ones: `steps`,
`guidance`, `seed`, ...). A new option takes one line in its command and, if it is new in kind, a factory here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import typer

from diffusia.errors import DiffusiaError
from diffusia.fileio import OVERWRITE_HELP

MODEL_HELP = (
    "`tiny` (embedded), `sd15-arch` / `sd21-arch` / `sdxl-arch` (random weights), a pipeline folder, a diffusia "
    "folder, a single-file checkpoint (.safetensors, original LDM layout) or a hub id."
)
CONFIG_HELP = (
    "For a single-file checkpoint: the diffusers pipeline folder whose configs it is read with (default: the "
    "config shipped for the detected architecture, SD 1.5, SD 2.1 or SDXL)."
)
RUNTIME_HELP = (
    "Where the U-Net runs: torch (diffusia's kernels in PyTorch), openvino, onnxruntime, or auto (the "
    "runtime measured fastest on this CPU class). A folder saved for it loads its graph; otherwise the "
    "U-Net is exported and checked first."
)
MAX_STEPS = 1000  # sampler steps: the schedulers' training timesteps; a typo beyond runs for hours
MAX_SEED = 2**32 - 1  # numpy's (and so accelerate's set_seed) range
Choices = Sequence[str] | Callable[[], Sequence[str]]


def flag(param: typer.CallbackParam) -> str:
    """The option's long name, e.g. `--steps`."""
    return max(param.opts, key=len)


def bad(param: typer.CallbackParam, value: Any, rule: str, example: Any) -> DiffusiaError:
    """The one-line error for a bad value: `--steps 0: must be an integer from 1 to 1000, e.g. --steps 25`."""
    return DiffusiaError(f"{flag(param)} {value}: {rule}, e.g. {flag(param)} {example}")


def _range(lo: Any, hi: Any, above: Any = None) -> str:
    low = f"above {above}" if above is not None else None if lo is None else f"from {lo}"
    if low and hi is not None:
        return f"{low} to {hi}"
    if low:
        return f"> {above}" if above is not None else f">= {lo}"
    return "" if hi is None else f"<= {hi}"


def _example(example: Any, default: Any, lo: Any) -> Any:
    if example is not None:
        return example
    return default if isinstance(default, (int, float)) else lo if lo is not None else 1


def integer(
    default: int | None, lo: int = 1, hi: int | None = None, help: str | None = None, example: int | None = None
) -> Any:
    """An int option in [lo, hi] (None passes: an unset optional)."""
    example = _example(example, default, lo)

    def check(param: typer.CallbackParam, value: int | None) -> int | None:
        if value is not None and not (lo <= value and (hi is None or value <= hi)):
            raise bad(param, value, f"must be an integer {_range(lo, hi)}", example)
        return value

    return typer.Option(default, help=help, callback=check)


def number(
    default: float | None,
    lo: float | None = None,
    hi: float | None = None,
    above: float | None = None,
    help: str | None = None,
    example: float | None = None,
) -> Any:
    """A finite float option in [lo, hi] (or (above, hi]); nan and inf are refused (None passes)."""
    example = _example(example, default, lo)

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is None:
            return value
        ok = math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
        if not ok or (above is not None and value <= above):
            raise bad(param, value, f"must be a finite number {_range(lo, hi, above)}".rstrip(), example)
        return value

    return typer.Option(default, help=help, callback=check)


def positive(default: float | None, help: str | None = None, example: float | None = None) -> Any:
    """A finite number > 0: budgets, limits, tolerances."""
    return number(default, above=0, help=help, example=example)


def choice(default: str | None, choices: Choices, help: str | None = None, sep: str | None = None) -> Any:
    """One of `choices` (a tuple, or a function giving it, called only for a value other than the default);
    with `sep`, a `sep`-separated list of them."""

    def check(param: typer.CallbackParam, value: str | None) -> str | None:
        if value is None or value == default:
            return value
        valid = tuple(choices() if callable(choices) else choices)
        items = [x.strip() for x in value.split(sep)] if sep else [value]
        for item in items:
            if item not in valid:
                raise bad(param, repr(value), f"{item!r} is not one of {', '.join(valid)}", valid[0])
        return value

    return typer.Option(default, help=help, callback=check)


def text(default: str | None, help: str | None = None, example: str = "'a red bag'") -> Any:
    """A free-text option: not blank, and UTF-8 (bytes that are not arrive from the shell as surrogates)."""

    def check(param: typer.CallbackParam, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad(
                param, ascii(value), "is not UTF-8 text (check the encoding of your terminal or script)", example
            ) from None
        if not value.strip():
            raise bad(param, repr(value), "must not be empty", example)
        return value

    return typer.Option(default, help=help, callback=check)


_CUDA = re.compile(r"cuda(:(\d+))?")


def device(default: str = "cpu", auto: bool = False, help: str | None = None) -> Any:
    """cpu, cuda or cuda:N; with `auto` (QAT, where accelerate gives each process its GPU): cpu, cuda or auto.
    A CUDA device must exist on this machine."""
    valid = "cpu, cuda or auto (CUDA when available)" if auto else "cpu, cuda or cuda:N"

    def check(param: typer.CallbackParam, value: str) -> str:
        if value == "cpu" or (auto and value == "auto"):
            return value
        m = _CUDA.fullmatch(value)
        if m is None or (auto and m.group(1)):
            raise bad(param, repr(value), f"unknown device; valid: {valid}", "cpu")
        import torch

        index = int(m.group(2) or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise bad(param, value, f"no such CUDA device on this machine ({torch.cuda.device_count()} found)", "cpu")
        return value

    return typer.Option(default, help=help or f"Device: {valid}.", callback=check)


# ------------------------------------------------------------------------------------- options shared by commands
def steps(default: int = 25, help: str = "DPM-Solver multistep steps.") -> Any:
    return integer(default, 1, MAX_STEPS, help)


def guidance(default: float = 7.5, help: str = "Classifier-free guidance scale (<= 1: no guidance).") -> Any:
    return number(default, 0, 100, help=help)


def seed(default: int, help: str | None = None) -> Any:
    return integer(default, 0, MAX_SEED, help)


def calib_size(default: int, help: str = "Calibration prompts (the set is cycled if smaller).") -> Any:
    return integer(default, 1, 10_000, help)


def calib_steps(default: int = 25, help: str = "Sampler steps per calibration prompt.") -> Any:
    return integer(default, 1, MAX_STEPS, help)


def resolution(help: str) -> Any:
    """A square image size in pixels: a multiple of 8 (the VAE's factor) from 64 to 2048; None is the model's."""

    def check(param: typer.CallbackParam, value: int | None) -> int | None:
        if value is not None and not (64 <= value <= 2048 and value % 8 == 0):
            raise bad(param, value, "must be a multiple of 8 from 64 to 2048", 512)
        return value

    return typer.Option(None, help=help, callback=check)


def timestep_groups(help: str = "Separate activation ranges per K timestep groups.") -> Any:
    return integer(None, 1, 1000, help, example=4)


def runtime(default: str | None = "torch", help: str = RUNTIME_HELP, sep: str | None = None) -> Any:
    def choices() -> tuple[str, ...]:
        from diffusia.runtime import CHOICES

        return CHOICES

    return choice(default, choices, help, sep)


def runtime_precision() -> Any:
    def choices() -> tuple[str, ...]:
        from diffusia.runtime import PRECISIONS

        return PRECISIONS

    return choice(
        "f32",
        choices,
        "With --runtime openvino: what the float layers compute in, f32 (as the export check verified) or bf16 "
        "(faster on CPUs with AMX or AVX-512 BF16); +dynamic also quantizes the float inputs of weight-only (w8, "
        "w4) layers to int8 on the fly, as OpenVINO runs NNCF's weight-compressed models. Only f32 is checked "
        "against diffusia's kernels.",
    )


def model(default: str | None = "tiny", help: str = MODEL_HELP) -> Any:
    return typer.Option(default, help=help)


def config() -> Any:
    return typer.Option(None, help=CONFIG_HELP)


def overwrite() -> Any:
    return typer.Option(False, help=OVERWRITE_HELP)


def attention(scope: str = "") -> Any:
    def choices() -> tuple[str, ...]:
        from diffusia.config import ATTENTION

        return ATTENTION

    return choice(
        None,
        choices,
        "Attention: float, or int8: Q/K/V quantized to int8 and the attention probabilities to uint8 (ranges "
        "calibrated like the layers'), where to_q/to_k/to_v are W8A8, so OpenVINO runs both attention matmuls on "
        f"integers (in PyTorch it is computed in float: no faster there).{scope} Default: the recipe's.",
    )


def activations(subject: str = "W8A8 activations") -> Any:
    def choices() -> tuple[str, ...]:
        from diffusia.config import ACTIVATIONS

        return ACTIVATIONS

    return choice(
        None,
        choices,
        f"Integer range of {subject}: auto (uint8), uint8, uint7, int8: ranges symmetric around 0, which "
        "OpenVINO runs as signed INT8 without zero point (faster there, at more error), or balanced: int8 where a "
        "layer's calibrated range is balanced around 0, uint8 elsewhere. Default: the recipe's.",
    )
