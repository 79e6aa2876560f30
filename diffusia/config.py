"""Recipes: what to quantize and how, validated on construction, round-tripped through JSON.

A `Recipe` names a default precision for the quantizable layers of the U-Net, the activation range and
calibrator used by W8A8 layers, and an ordered list of `Rule`s (later rules override earlier ones).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from diffusia.errors import DiffusiaError
from diffusia.quant.cpu import TARGETS
from diffusia.quant.precisions import precision_names

RECIPE_VERSION = 1
# auto = uint8, with 7-bit weights where the target has no VNNI; int8 = symmetric ranges (zero point at mid-scale)
# balanced = int8 where a layer's calibrated range is balanced around 0 (qmath.is_balanced), uint8 elsewhere
ACTIVATIONS = ("auto", "uint8", "uint7", "int8", "balanced")
# int8 = the attention's matmuls on int8 Q/K/V and u8 probabilities where to_q/to_k/to_v are W8A8 (quant.attention)
ATTENTION = ("float", "int8")
CALIBRATORS = ("percentile", "minmax", "mse")
KEEP_AS = ("fp32", "fp16", "bf16")  # storage of the policy's high-precision layers (time embedding, conv_in/out)


def precisions() -> tuple[str, ...]:
    """Plan values a recipe accepts: fp32, keep and every registered precision (see diffusia.quant.precisions)."""
    return ("fp32", *precision_names(), "keep")


def _fail(msg: str) -> None:
    raise DiffusiaError(msg)


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"recipe field '{name}' must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        _fail(f"recipe field '{name}' must be {bound}, got {value}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(f"recipe field '{name}' is {value!r}; valid: {', '.join(choices)}")


@dataclass(frozen=True)
class Rule:
    """Set `precision` on layers whose name matches `pattern` (fnmatch glob, or `re:<regex>` full match)."""

    pattern: str
    precision: str

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern.strip():
            _fail(f"rule pattern must be a non-empty string, got {self.pattern!r}")
        if self.pattern.startswith("re:"):
            try:
                re.compile(self.pattern[3:])
            except re.error as exc:
                _fail(f"rule pattern {self.pattern!r} is not a valid regex: {exc}")
        if self.precision not in precisions():
            _fail(f"rule {self.pattern!r} has precision {self.precision!r}; valid: {', '.join(precisions())}")

    def matches(self, layer_name: str) -> bool:
        """True if `layer_name` matches this rule's pattern."""
        import fnmatch

        if self.pattern.startswith("re:"):
            return re.fullmatch(self.pattern[3:], layer_name) is not None
        return fnmatch.fnmatchcase(layer_name, self.pattern)

    @classmethod
    def coerce(cls, value: Any) -> Rule:
        """Accept a Rule, a (pattern, precision) pair or a {"pattern", "precision"} dict."""
        if isinstance(value, Rule):
            return value
        if isinstance(value, dict) and set(value) == {"pattern", "precision"}:
            return cls(value["pattern"], value["precision"])
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return cls(value[0], value[1])
        _fail(f"a rule must be (pattern, precision) or {{'pattern', 'precision'}}, got {value!r}")
        raise AssertionError  # unreachable


@dataclass
class Recipe:
    """A quantization recipe. Fields are validated on construction; errors are one-line DiffusiaErrors."""

    name: str = "custom"
    weights: str = "w8a8"  # default precision of the quantizable layers (see quant.policy)
    full_res_weights: str | None = None  # precision of the quantizable layers of the full-resolution blocks (the
    # first down block and the last up block), if not `weights`
    keep_as: str = "fp32"  # the layers the policy keeps in high precision: untouched (fp32) or stored fp16/bf16
    activations: str = "auto"  # integer range of W8A8 activations: auto, uint8, uint7, int8 (symmetric), balanced
    attention: str = "float"  # float, or int8: Q/K/V and the attention probabilities quantized (ATTENTION)
    target: str = "auto"  # CPU class the INT8 layout is for: auto (this host), portable, avx2, vnni (quant.cpu)
    calibrator: str = "percentile"
    percentile: float = 99.9
    histogram_bins: int = 2048
    int4_group_size: int = 64
    timestep_groups: int = 1
    num_train_timesteps: int = 1000
    rules: list[Rule] = field(default_factory=list)
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail(f"recipe field 'name' must be a non-empty string, got {self.name!r}")
        _check_choice("weights", self.weights, precisions())
        if self.full_res_weights is not None:
            _check_choice("full_res_weights", self.full_res_weights, precisions())
        _check_choice("keep_as", self.keep_as, KEEP_AS)
        _check_choice("activations", self.activations, ACTIVATIONS)
        _check_choice("attention", self.attention, ATTENTION)
        _check_choice("target", self.target, TARGETS)
        _check_choice("calibrator", self.calibrator, CALIBRATORS)
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)):
            _fail(f"recipe field 'percentile' must be a number, got {self.percentile!r}")
        if not 50.0 < float(self.percentile) <= 100.0:
            _fail(f"recipe field 'percentile' must be in (50, 100], got {self.percentile}")
        self.percentile = float(self.percentile)
        _check_int("histogram_bins", self.histogram_bins, 16, 1 << 16)
        _check_int("int4_group_size", self.int4_group_size, 2)
        if self.int4_group_size % 2:
            _fail(f"recipe field 'int4_group_size' must be even (two int4 per byte), got {self.int4_group_size}")
        _check_int("num_train_timesteps", self.num_train_timesteps, 1)
        _check_int("timestep_groups", self.timestep_groups, 1, self.num_train_timesteps)
        if self.version != RECIPE_VERSION:
            _fail(f"recipe version {self.version!r} is not supported; this diffusia reads version {RECIPE_VERSION}")
        if not isinstance(self.rules, (list, tuple)):
            _fail(f"recipe field 'rules' must be a list of (pattern, precision), got {self.rules!r}")
        self.rules = [Rule.coerce(r) for r in self.rules]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        d = dataclasses.asdict(self)
        d["rules"] = [{"pattern": r.pattern, "precision": r.precision} for r in self.rules]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Build from `to_dict()` output; unknown keys are an error."""
        if not isinstance(data, dict):
            _fail(f"a recipe must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            _fail(f"unknown recipe field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DiffusiaError(f"recipe is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Recipe:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# Attention projections and feed-forward linears of the transformer blocks.
_ATTN_FF_RULES = [
    Rule("*.attn?.to_q", "fp16"),
    Rule("*.attn?.to_k", "fp16"),
    Rule("*.attn?.to_v", "fp16"),
    Rule("*.attn?.to_out.0", "fp16"),
    Rule("*.ff.net.*", "fp16"),
]

# The integer presets store the kept layers (time embedding, time_emb_proj, conv_in/out) in fp16, computed in
# fp32: the SD v1.5 INT8 U-Net is 25.9 % of the FP32 bytes so stored, 27.5 % with them in fp32 (generation_memory.py).
_PRESETS: dict[str, Recipe] = {
    "fp32": Recipe(name="fp32", weights="fp32"),
    "fp16": Recipe(name="fp16", weights="fp16"),
    "bf16": Recipe(name="bf16", weights="bf16"),
    "w8a8": Recipe(name="w8a8", weights="w8a8", keep_as="fp16"),
    # W8A8 whose full-resolution blocks take their activations in two INT8 digits (w8a8x2: two INT8 calls,
    # ~14-bit activations without VNNI): on SD v1.5 those 74 of 256 layers carry most of the W8A8 error
    # (benchmarks/w8a8_schemes.py)
    "w8a8x2": Recipe(name="w8a8x2", weights="w8a8", full_res_weights="w8a8x2", keep_as="fp16", calibrator="mse"),
    "w8": Recipe(name="w8", weights="w8", keep_as="fp16"),
    "w4": Recipe(name="w4", weights="w4", keep_as="fp16"),
    # convolutions W8A8; attention and feed-forward linears stored in fp16 (computed in fp32 on CPU)
    "mixed": Recipe(name="mixed", weights="w8a8", keep_as="fp16", rules=list(_ATTN_FF_RULES)),
    # convolutions W8A8; attention and feed-forward linears weight-only INT8 (the split of NNCF's "hybrid" recipe):
    # OpenVINO without VNNI runs INT8 Linears on a generic gemm. Results in benchmarks/results/vnni/: AVX2-capped, on
    # tiny, 0.88x OpenVINO FP32's step where W8A8 took 1.00x (avx2_capped/targets/tiny_hybrid; the Linears' kernels
    # in avx2_capped/openvino_profile_tiny_w8a8-hybrid); no faster than W8A8 on sd15-arch
    # (avx2_capped/targets/sd15_hybrid) or with VNNI (targets/tiny_hybrid)
    "hybrid": Recipe(
        name="hybrid", weights="w8a8", keep_as="fp16", rules=[Rule(r.pattern, "w8") for r in _ATTN_FF_RULES]
    ),
}
PRESETS = tuple(_PRESETS)


def get_preset(name: str) -> Recipe:
    """A fresh copy of a named preset recipe."""
    if name not in _PRESETS:
        raise DiffusiaError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return copy.deepcopy(_PRESETS[name])


def load_recipe(recipe: str | Recipe, timestep_groups: int | None = None, rules: list[str] | None = None) -> Recipe:
    """A recipe from a preset name or a recipe .json file (a Recipe passes through), with optional overrides:
    `timestep_groups` and extra `rules` written PATTERN=PRECISION (appended: they override the recipe's)."""
    from pathlib import Path

    if isinstance(recipe, Recipe):
        r = copy.deepcopy(recipe)
    elif recipe in _PRESETS:
        r = get_preset(recipe)
    elif str(recipe).endswith(".json") and Path(recipe).is_file():
        try:
            r = Recipe.from_json(Path(recipe).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DiffusiaError(f"recipe {recipe} is not UTF-8 text: save it as UTF-8 JSON") from None
        except OSError as e:
            raise DiffusiaError(f"cannot read recipe {recipe}: {e.strerror or e}") from None
        except DiffusiaError as e:  # name the file
            raise DiffusiaError(f"recipe {recipe}: {e}") from None
    else:
        raise DiffusiaError(f"unknown recipe {recipe!r}: use a preset ({', '.join(PRESETS)}) or a recipe .json file")
    changes: dict[str, Any] = {}
    if timestep_groups is not None:
        changes["timestep_groups"] = timestep_groups
    if rules:
        parsed = []
        for text in rules:
            pattern, sep, precision = text.rpartition("=")
            if not sep:
                raise DiffusiaError(f"rule {text!r} must look like PATTERN=PRECISION, e.g. '*attn2*=fp16'")
            parsed.append(Rule(pattern, precision))
        changes["rules"] = list(r.rules) + parsed
    return r.replace(**changes) if changes else r
