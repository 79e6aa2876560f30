"""The verbs: quantize -> calibrate -> (fake quant / QAT) -> freeze; save/reload via a quantization map; a
summary table. (NaN/Inf localiser: `diffusia.quant.finite`.)"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from diffusia.config import Recipe
from diffusia.errors import DiffusiaError
from diffusia.quant import attention, cpu, qmath
from diffusia.quant import timestep as ts
from diffusia.quant.modules import QModuleMixin, QSettings, qclass_for
from diffusia.quant.policy import plan as make_plan
from diffusia.quant.precisions import get_precision

log = logging.getLogger(__name__)

QMAP_FORMAT, QMAP_VERSION = "diffusia.quantization_map", 1
_RECIPE_ATTR = "_diffusia_recipe"
_TARGET_ATTR = "_diffusia_target"  # {"requested", "cpu_class", "made_on"}: what the INT8 layout is for


def qmodules(model: nn.Module) -> dict[str, QModuleMixin]:
    """The quantized modules of `model` by name, in registration order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QModuleMixin)}


def observers(model: nn.Module) -> dict[str, Any]:
    """Everything holding static activation ranges, by module name: the W8A8 layers and the int8 attention's
    quantizers (`diffusia.quant.attention`); both calibrate, fake-quantize and freeze alike."""
    return {**{n: m for n, m in qmodules(model).items() if m.spec.act_digits}, **attention.quantizers(model)}


def _require_quantized(model: nn.Module) -> dict[str, QModuleMixin]:
    """The quantized modules; an error if quantize() never ran (a plan of only fp32/keep layers is fine)."""
    if ts.get_state(model) is None:
        raise DiffusiaError("model is not quantized: call quantize(model, recipe) first")
    return qmodules(model)


def layer_settings(precision: str, recipe: Recipe, cpu_class: str | None = None) -> QSettings:
    """A layer's QSettings under `recipe`, for the INT8 layout of `cpu_class` (default: the recipe's target): the
    recipe's calibration and grouping, with what the precision derives from them (see `Precision.settings`)."""
    cpu_class = cpu_class or cpu.resolve_target(recipe.target)
    spec = get_precision(precision)
    derived = spec.settings(recipe, cpu_class) if spec.settings else {}
    return QSettings(
        precision,
        **{
            **dict(
                act_qmax=127,
                weight_qmax=127,
                calibrator=recipe.calibrator,
                percentile=recipe.percentile,
                bins=recipe.histogram_bins,
                group_size=recipe.int4_group_size,
                timestep_groups=recipe.timestep_groups,
            ),
            **derived,
        },
    )


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize(unet: nn.Module, recipe: Recipe) -> dict[str, str]:
    """Swap the U-Net's Conv2d/Linear layers in place per the recipe's plan; returns the plan."""
    if qmodules(unet) or ts.get_state(unet) is not None:
        raise DiffusiaError("model is already quantized: start again from the float model")
    layer_plan = make_plan(unet, recipe)
    cpu_class = cpu.resolve_target(recipe.target)  # resolved once: every layer gets the same layout
    state = ts.TimestepState(recipe.timestep_groups, recipe.num_train_timesteps)
    for name, precision in layer_plan.items():
        if precision == "keep":
            continue
        module = unet.get_submodule(name)
        if precision == "fp32":
            module.float()
            continue
        settings = layer_settings(precision, recipe, cpu_class)
        _swap(unet, name, qclass_for(module).from_module(module, settings, state))
    if recipe.attention == "int8":
        names = attention.eligible(unet)
        if not names:
            raise DiffusiaError(
                "attention int8 quantizes attentions whose to_q/to_k/to_v are W8A8 layers, and this plan has none: "
                "use a W8A8 recipe or drop attention int8"
            )
        attention.install(unet, names, recipe.timestep_groups, state)
    ts.attach(unet, state)
    setattr(unet, _RECIPE_ATTR, recipe)
    setattr(unet, _TARGET_ATTR, {"requested": recipe.target, "cpu_class": cpu_class, "made_on": cpu.host_description()})
    log.info("quantized with recipe %r: %s", recipe.name, dict(Counter(layer_plan.values())))
    return layer_plan


@contextlib.contextmanager
def calibrate(unet: nn.Module) -> Iterator[nn.Module]:
    """Within the block, W8A8 layers observe their inputs (forward in float); on exit their ranges are set."""
    _require_quantized(unet)
    qm = {**qmodules(unet), **attention.quantizers(unet)}
    frozen = [n for n, m in qm.items() if m.mode == "real"]
    if frozen:
        raise DiffusiaError(f"cannot calibrate a frozen model (e.g. layer {frozen[0]!r})")
    previous = {n: m.mode for n, m in qm.items()}
    for m in qm.values():
        m.reset_calibration()
        m.mode = "calibrate"
    try:
        with torch.no_grad():
            yield unet
    finally:
        for n, m in qm.items():
            m.mode = previous[n]
    missing = [n for n, m in qm.items() if not m.compute_ranges()]
    if missing:
        log.warning(
            "%d W8A8 quantizer(s) saw no calibration data (e.g. %s); freeze will fail", len(missing), missing[0]
        )


def calibrate_from(unet: nn.Module, observed: Mapping[str, list]) -> int:
    """Set the W8A8 layers' ranges from calibrators that observed their inputs elsewhere (layer name -> one
    calibrator per timestep group, as `diffusia.calib.observations` records them); returns how many layers."""
    _require_quantized(unet)
    qm = observers(unet)
    missing = [n for n in qm if n not in observed]
    if missing:
        raise DiffusiaError(f"{len(missing)} W8A8 quantizer(s) were not observed (e.g. {missing[0]!r})")
    for name, m in qm.items():
        if m.mode == "real":
            raise DiffusiaError(f"cannot calibrate a frozen model (e.g. layer {name!r})")
        m.adopt_calibration(observed[name])
        m.compute_ranges()
    return len(qm)


def _check_calibrated(qm: Mapping[str, Any], verb: str) -> None:
    bad = [n for n, m in qm.items() if not m.calibrated]
    if bad:
        raise DiffusiaError(
            f"{len(bad)} W8A8 layer(s) have no activation range (e.g. {bad[0]!r}): "
            f"run `with calibrate(unet): unet(...)` before {verb}"
        )


def enable_fake_quant(unet: nn.Module, enabled: bool = True) -> None:
    """Simulated quantize-dequantize of weights (and W8A8 activations) in every quantized layer."""
    qm = {**_require_quantized(unet), **attention.quantizers(unet)}
    if enabled:
        _check_calibrated(qm, "enable_fake_quant")
    for m in qm.values():
        m.set_mode("fake" if enabled else "float")


def freeze(unet: nn.Module) -> None:
    """Real mode: weights become int8 / packed int4 / fp16 / bf16 buffers, float weights are dropped."""
    qm = _require_quantized(unet)
    _check_calibrated({**qm, **attention.quantizers(unet)}, "freeze")
    for m in qm.values():
        m.freeze()
    for q in attention.quantizers(unet).values():
        q.set_mode("real")
    _mark_frozen(unet, True)
    log.info("froze %d quantized layer(s)", len(qm))


def _mark_frozen(unet: nn.Module, frozen: bool) -> None:
    """diffusers' flags on a model holding real kernels: its `to(dtype)`, `half()` and `float()` then refuse before
    any layer is cast (the layers refuse too, but only once the casting reaches them)."""
    unet.is_quantized = frozen
    unet.quantization_method = "diffusia" if frozen else None


def quantization_map(unet: nn.Module) -> dict[str, Any]:
    """Plain-JSON description of the quantized layers, enough to rebuild them around a float skeleton."""
    qm = _require_quantized(unet)
    state = ts.get_state(unet)
    recipe = getattr(unet, _RECIPE_ATTR, None)
    layers = {
        n: {"type": m.base_type.__name__, "weight_shape": list(m.weight_shape), "mode": m.mode, **m.settings.to_dict()}
        for n, m in qm.items()
    }
    return {
        "format": QMAP_FORMAT,
        "version": QMAP_VERSION,
        "num_train_timesteps": state.num_train_timesteps if state else 1000,
        "recipe": recipe.to_dict() if recipe is not None else None,
        "target": getattr(unet, _TARGET_ATTR, None),
        "layers": layers,
        "attention": {n: p.probs.mode for n, p in attention.processors(unet).items()},  # int8 ones, their mode
    }


def target_of(unet: nn.Module) -> dict[str, Any] | None:
    """What the quantized U-Net's INT8 layout is for: {"requested", "cpu_class", "made_on"} (None if unknown)."""
    return getattr(unet, _TARGET_ATTR, None)


def _fit_to_host(settings: QSettings) -> QSettings:
    """Settings whose INT8 kernels do not saturate on this host: activations narrowed to 7 bits where a layout made
    for int32 accumulation (VNNI) meets int16 pair sums; unchanged otherwise."""
    if not get_precision(settings.precision).act_digits or not cpu.saturates(settings.act_qmax, settings.weight_qmax):
        return settings
    return dataclasses.replace(settings, act_qmax=127)


def _narrow_act_qparams(m: QModuleMixin, old_qmax: int) -> None:
    """Re-derive a layer's activation qparams for its (narrowed) act_qmax from the range its old ones covered
    (exact for calibrated and for LSQ-learned scales alike)."""
    for g in range(len(m.act_scale)):
        scale, zp = m.act_qparams(g)
        lo, hi = -zp * scale, (old_qmax - zp) * scale
        m.act_scale[g], m.act_zero_point[g] = qmath.act_qparams(lo, hi, m.settings.act_qmax, m.settings.act_symmetric)


@dataclasses.dataclass
class _Skeleton:
    """What `rebuild_skeleton` leaves for `finish_loading`: the state, layer modes and layers fitted to this host."""

    state: ts.TimestepState
    modes: dict[str, str]
    frozen: list[QModuleMixin]
    narrowed: dict[str, int]  # layer -> its saved act_qmax, for layers fitted to this host


def _check_map(qmap: Mapping[str, Any]) -> None:
    if (
        not isinstance(qmap, Mapping)
        or qmap.get("format") != QMAP_FORMAT
        or qmap.get("version") != QMAP_VERSION
        or not isinstance(qmap.get("layers"), Mapping)
    ):
        raise DiffusiaError(
            f"not a diffusia quantization map (format {QMAP_FORMAT!r} version {QMAP_VERSION}): "
            "re-run `diffusia quantize`"
        )


def rebuild_skeleton(unet: nn.Module, qmap: Mapping[str, Any]) -> _Skeleton:
    """Swap in the quantized modules a map describes, frozen ones with empty buffers to be filled by a state dict
    (the first half of loading; `finish_loading` is the second)."""
    _check_map(qmap)
    if qmodules(unet) or ts.get_state(unet) is not None:
        raise DiffusiaError("the skeleton is already quantized: pass the float model")
    layers = qmap["layers"]
    groups = {int(spec["timestep_groups"]) for spec in layers.values()} or {1}
    skeleton = _Skeleton(ts.TimestepState(max(groups), int(qmap["num_train_timesteps"])), {}, [], {})
    for name, spec in layers.items():
        try:
            module = unet.get_submodule(name)
        except AttributeError:
            raise DiffusiaError(
                f"quantization map names layer {name!r}, absent from the U-Net: the folder was "
                "quantized from another model"
            ) from None
        if list(module.weight.shape) != list(spec["weight_shape"]):
            raise DiffusiaError(
                f"layer {name!r}: the U-Net's weight is {list(module.weight.shape)}, the quantization "
                f"map's {spec['weight_shape']}: the folder was quantized from another model"
            )
        if type(module).__name__ != spec["type"]:
            raise DiffusiaError(f"layer {name!r}: skeleton has {type(module).__name__}, map says {spec['type']}")
        saved = QSettings(**{k: v for k, v in spec.items() if k in QSettings.__dataclass_fields__})
        settings = _fit_to_host(saved)
        if settings != saved:
            skeleton.narrowed[name] = saved.act_qmax
        q = qclass_for(module).from_module(module, settings, skeleton.state)
        if spec.get("mode") == "real":
            q.prepare_frozen()
            skeleton.frozen.append(q)
        _swap(unet, name, q)
        skeleton.modes[name] = spec.get("mode", "float")
    attention.install(unet, list(qmap.get("attention", {})), skeleton.state.groups, skeleton.state)
    return skeleton


def finish_loading(unet: nn.Module, qmap: Mapping[str, Any], skeleton: _Skeleton) -> nn.Module:
    """Once the state dict is in: fit narrowed layers, build the kernels, attach the timestep state and recipe."""
    qm = qmodules(unet)
    for name, old_qmax in skeleton.narrowed.items():
        _narrow_act_qparams(qm[name], old_qmax)
    if skeleton.narrowed:
        made_for = (qmap.get("target") or {}).get("cpu_class", "a CPU with VNNI")
        log.warning(
            "%d layer(s) were quantized for %s (8-bit activations with 8-bit weights); on this CPU (%s) their "
            "int16 pair sums would saturate, so they run with 7-bit activations. For full precision here, "
            "re-quantize with `diffusia quantize --target auto`",
            len(skeleton.narrowed),
            made_for,
            cpu.host_class(),
        )
    for q in skeleton.frozen:
        q.build_kernels()
        q.release_packed_source()
    if skeleton.frozen:
        _mark_frozen(unet, True)
    for name, q in qm.items():
        if skeleton.modes[name] == "fake":
            q.set_mode("fake")
    for name, mode in qmap.get("attention", {}).items():
        for q in attention.processors(unet)[name].quantizers().values():
            q.mode = mode  # ranges come with the state dict
    ts.attach(unet, skeleton.state)
    if qmap.get("recipe"):
        setattr(unet, _RECIPE_ATTR, Recipe.from_dict(qmap["recipe"]))
    target = dict(qmap.get("target") or {})
    if skeleton.narrowed:
        target["converted_on_load"] = {"to": cpu.host_class(), "layers": len(skeleton.narrowed), "act_qmax": 127}
    setattr(unet, _TARGET_ATTR, target or None)
    return unet


def load_quantized_state(unet: nn.Module, qmap: Mapping[str, Any], state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Rebuild a quantized (frozen or not) U-Net from a float skeleton, its quantization map and a state dict."""
    skeleton = rebuild_skeleton(unet, qmap)
    result = unet.load_state_dict(dict(state_dict), strict=False, assign=any(p.is_meta for p in unet.parameters()))
    if result.missing_keys or result.unexpected_keys:
        raise DiffusiaError(
            f"state dict does not fit the quantization map: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return finish_loading(unet, qmap, skeleton)


def dequantize(unet: nn.Module) -> nn.Module:
    """Undo `quantize`: every quantized layer becomes a plain float layer again (the very float weight if it was
    not frozen, the dequantized weight if it was), and the timestep state and recipe are dropped."""
    for name, m in _require_quantized(unet).items():
        _swap(unet, name, m.dequantized())
    attention.uninstall(unet)
    ts.detach(unet)
    _mark_frozen(unet, False)
    for attr in (_RECIPE_ATTR, _TARGET_ATTR):
        if hasattr(unet, attr):
            delattr(unet, attr)
    return unet


def _range_text(m: Any) -> str:
    lo, hi = m.act_range[:, 0], m.act_range[:, 1]
    if not m.calibrated:
        return "uncalibrated"
    if len(lo) == 1:
        return f"[{float(lo[0]):.4g}, {float(hi[0]):.4g}]"
    return f"{len(lo)} groups, lo {float(lo.min()):.4g}..{float(lo.max()):.4g}, hi {float(hi.min()):.4g}..{float(hi.max()):.4g}"


def summary(unet: nn.Module) -> str:
    """A text table of every quantized layer (precision, weight/activation bits, mode, activation range) and of
    every int8 attention quantizer (Q/K/V int8, probabilities uint8)."""
    rows = [("layer", "precision", "w bits", "a bits", "mode", "activation range")]
    for n, m in _require_quantized(unet).items():
        spec = m.spec
        abits, rng, wbits = "-", "-", spec.weight_bits
        if spec.act_digits:
            if m.settings.weight_qmax < 127:  # narrowed int8 weights: +-64 is 7 bits
                wbits = int(m.settings.weight_qmax).bit_length()
            abits = "+".join([str(int(m.settings.act_qmax).bit_length())] * spec.act_digits)  # 7+7: two digits
            rng = _range_text(m)
        rows.append((n, m.precision, str(wbits), abits, m.mode, rng))
    for n, q in attention.quantizers(unet).items():
        rows.append((n, "int8 attention", "-", "8", q.mode, _range_text(q)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
