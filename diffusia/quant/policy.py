"""Default layer policy for a diffusers U-Net and `plan()`: which precision each Conv2d/Linear layer gets."""

from __future__ import annotations

import difflib
import fnmatch
import logging

from torch import nn

from diffusia.config import Recipe
from diffusia.errors import DiffusiaError

log = logging.getLogger(__name__)

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)

# Kept in the compute dtype: sensitive, tiny, or both (checked before QUANTIZABLE, so they win). Patterns, not
# rules: one that matches nothing on an architecture is fine. `add_embedding` is SDXL's conditioning on pooled text
# and size/crop ids, the twin of the time embedding (its `add_time_proj` sinusoids have no weights).
HIGH_PRECISION = (
    "conv_in",
    "conv_out",
    "time_embedding.*",
    "*time_emb_proj*",
    "add_embedding*",
    "class_embedding*",
    "*norm*",
)
QUANTIZABLE = (
    "*.to_q",
    "*.to_k",
    "*.to_v",
    "*.to_out.0",  # attention
    "*.ff.net.*",  # feed-forward
    "*resnets.*.conv1",
    "*resnets.*.conv2",
    "*resnets.*.conv_shortcut",
    "*.proj_in",
    "*.proj_out",
    "*downsamplers.*.conv",
    "*upsamplers.*.conv",
)


def _any(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_high_precision(name: str) -> bool:
    return _any(name, HIGH_PRECISION)


def is_quantizable(name: str) -> bool:
    """True if the default policy quantizes the layer called `name`."""
    return not is_high_precision(name) and _any(name, QUANTIZABLE)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the Conv2d and Linear layers of `model`, in registration order."""
    return [n for n, m in model.named_modules() if n and isinstance(m, LAYER_TYPES)]


def full_resolution_blocks(names: list[str]) -> tuple[str, ...]:
    """Name prefixes of a diffusers U-Net's blocks at the latent's full resolution: the first down block and the
    last up block (where the output is formed)."""
    ups = sorted({int(n.split(".")[1]) for n in names if n.startswith("up_blocks.")})
    return ("down_blocks.0.",) + ((f"up_blocks.{ups[-1]}.",) if ups else ())


def default_plan(
    model: nn.Module, precision: str, keep_as: str = "fp32", full_res: str | None = None
) -> dict[str, str]:
    """`precision` for the quantizable layers (`full_res`, if given, for those of the full-resolution blocks); the
    high-precision ones stored as `keep_as` (fp32: `keep` untouched, fp16/bf16: half-precision storage computed in
    fp32); `keep` for every other layer."""
    high = "keep" if keep_as == "fp32" else keep_as
    names = layer_names(model)
    prefixes = full_resolution_blocks(names)

    def quantized(name: str) -> str:
        return full_res if full_res and name.startswith(prefixes) else precision

    return {n: quantized(n) if is_quantizable(n) else high if is_high_precision(n) else "keep" for n in names}


def plan(model: nn.Module, recipe: Recipe) -> dict[str, str]:
    """Map every Conv2d/Linear layer name to a precision: default policy, then the recipe's rules in order.

    A rule that matches no layer raises DiffusiaError naming the nearest layer names.
    """
    result = default_plan(model, recipe.weights, recipe.keep_as, recipe.full_res_weights)
    names = list(result)
    if (
        recipe.full_res_weights
        and recipe.full_res_weights != recipe.weights
        and recipe.full_res_weights not in result.values()
    ):
        raise DiffusiaError(
            "full_res_weights matches no layer: this model has no quantizable layer in "
            "down_blocks.0 or its last up block; set it to null"
        )
    for rule in recipe.rules:
        hits = [n for n in names if rule.matches(n)]
        if not hits:
            key = rule.pattern[3:] if rule.pattern.startswith("re:") else rule.pattern
            near = difflib.get_close_matches(key, names, n=3, cutoff=0.0)
            raise DiffusiaError(f"rule {rule.pattern!r} matches no layer; nearest: {', '.join(near) or '(none)'}")
        for n in hits:
            result[n] = rule.precision
        log.debug("rule %r -> %s on %d layer(s)", rule.pattern, rule.precision, len(hits))
    return result
