"""Per-layer quantization sensitivity of a U-Net (SIMULATED: fake quantization, not the real kernels).

One pass of the pipeline over calibration prompts both calibrates every quantizable layer and records the U-Net
inputs of the sampling trajectories. Then, per quantizable layer, with the other layers toggled between float and
fake-quant (no re-calibration): (a) only this layer quantized, (b) every layer but this one quantized; the
noise-prediction SQNR (dB) against the FP32 U-Net over a subset of the recorded inputs (evenly spaced timesteps,
a few evenly spread inputs of each: the analysis costs one U-Net forward of that subset per layer and precision).
Optionally the SQNR of (a) at other precisions (inputs for `diffusia search`), image LPIPS for the top-k sensitive
layers and a per-layer latency microbenchmark of the real kernels (the search's cost model; MEASURED, unlike the
SQNRs).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from diffusia.analysis.layer_timing import time_layer
from diffusia.analysis.layers import layer_type, weight_bytes
from diffusia.calib.forward_loop import UnetCall, concat_calls, record_unet_inputs
from diffusia.config import Recipe, Rule
from diffusia.errors import DiffusiaError
from diffusia.generate import DEFAULT_GUIDANCE, DEFAULT_STEPS, GenerationConfig, generate
from diffusia.prompts import Prompt
from diffusia.quant import api
from diffusia.quant.modules import QModuleMixin, QSettings
from diffusia.quant.policy import layer_names, plan
from diffusia.quant.precisions import precision_names
from diffusia.quant.timestep import get_state

log = logging.getLogger(__name__)

FORMAT, VERSION = "diffusia.sensitivity", 1
SQNR_CAP_DB = 200.0  # |SQNR| is clipped here: identical outputs would be +inf, NaN outputs -inf
SIMULATED_NOTE = (
    "SIMULATED: fake quantization (quantize-dequantize in float32) of the noise prediction; "
    "not measured on the real INT8/INT4 kernels"
)
DEFAULT_PRECISIONS = ("w8a8", "w8a8x2", "w8", "w4", "fp16")


# ------------------------------------------------------------------ inputs
def _spread(n: int, k: int | None) -> list[int]:
    """`k` of `n` indices, evenly spaced from the first to the last (all of them when `k` is None or >= n)."""
    if k is None or k <= 0 or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def evaluation_batches(
    calls: Sequence[UnetCall],
    max_timesteps: int | None = None,
    max_batch: int = 16,
    samples_per_timestep: int | None = None,
    group_of: Callable[[float], int] | None = None,
) -> list[UnetCall]:
    """Recorded U-Net calls as evaluation batches: `max_timesteps` timesteps, evenly spaced along the trajectory,
    `samples_per_timestep` of each timestep's inputs, evenly spread (over prompts and both guidance branches).
    A batch holds at most `max_batch` samples, of timesteps in one activation-range group (`group_of(t)`; None: one
    group), so every sample is quantized with its own group's ranges."""
    by_t: dict[float, list[UnetCall]] = defaultdict(list)
    for call in calls:
        by_t[float(call.timestep.reshape(-1)[0])].append(call)
    keys = sorted(by_t, reverse=True)  # sampling order: noisy first
    by_group: dict[int, list[UnetCall]] = defaultdict(list)
    for k in [keys[i] for i in _spread(len(keys), max_timesteps)]:
        rows = _spread(sum(len(c.sample) for c in by_t[k]), samples_per_timestep)
        by_group[group_of(k) if group_of else 0].append(concat_calls(by_t[k], rows))
    batches = []
    for parts in by_group.values():
        whole = concat_calls(parts)
        for i in range(0, len(whole.sample), max_batch):
            batches.append(concat_calls([whole], list(range(i, min(i + max_batch, len(whole.sample))))))
    return batches


def _timesteps(batches: Sequence[UnetCall]) -> list[float]:
    return sorted({float(t) for b in batches for t in b.timestep}, reverse=True)


def _forward(unet: nn.Module, batches: Sequence[UnetCall]) -> list[Tensor]:
    device, dtype = unet.device, unet.dtype
    with torch.no_grad():
        return [unet(**b.kwargs(device, dtype)).sample.float().cpu() for b in batches]


def sqnr_db(refs: Sequence[Tensor], outs: Sequence[Tensor]) -> float:
    """10*log10(sum ref^2 / sum (out - ref)^2) over all batches, clipped to +-SQNR_CAP_DB (NaN -> -cap)."""
    signal = sum(float(r.double().pow(2).sum()) for r in refs)
    noise = sum(float((o.double() - r.double()).pow(2).sum()) for r, o in zip(refs, outs))
    if not math.isfinite(noise):
        return -SQNR_CAP_DB
    if noise <= 0:
        return SQNR_CAP_DB
    return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, 10 * math.log10(signal / noise)))


# ------------------------------------------------------------------ mode / precision toggles
def _set_fake(qm: dict[str, QModuleMixin], fake: Iterable[str]) -> None:
    fake = set(fake)
    for n, m in qm.items():
        m.set_mode("fake" if n in fake else "float")


def _settings_for(base: QSettings, precision: str, recipe: Recipe) -> QSettings:
    """`base` (a calibrated W8A8 layer's settings) re-targeted to another precision for simulation: what that
    precision derives from the recipe (w8a8x2: its digits' integer range and its min-max calibrator)."""
    if precision == "w8a8":
        return base
    return dataclasses.replace(api.layer_settings(precision, recipe), timestep_groups=base.timestep_groups)


def _simulate_at(m: QModuleMixin, settings: QSettings) -> None:
    """Switch `m` to `settings`, with the activation ranges their calibrator gives for what `m` observed."""
    m.settings = settings
    if m.spec.act_digits:
        m.compute_ranges()


# ------------------------------------------------------------------ images
def _images(pipe, prompts: Sequence[str], steps: int, guidance: float) -> Tensor:
    ims = generate(
        pipe, list(prompts), 1, GenerationConfig(steps=steps, guidance=guidance), progress=False, output_type="np"
    )
    return torch.from_numpy(ims).permute(0, 3, 1, 2).float()


def lpips_vs(ref: Tensor, other: Tensor) -> tuple[float, int | None]:
    """Mean LPIPS-alex of two image batches; images under LPIPS' minimum side are upsampled (bilinear) first.
    Returns (lpips, upsampled side or None)."""
    from diffusia.eval.metrics.lpips import MIN_SIZE, lpips_distance

    side = None
    if min(ref.shape[-2:]) < MIN_SIZE:
        side = 32 * math.ceil(MIN_SIZE / 32)
        ref = torch.nn.functional.interpolate(ref, size=(side, side), mode="bilinear", align_corners=False)
        other = torch.nn.functional.interpolate(other, size=(side, side), mode="bilinear", align_corners=False)
    return float(lpips_distance(ref.clamp(0, 1), other.clamp(0, 1)).mean()), side


# ------------------------------------------------------------------ the analysis
def run_sensitivity(
    pipe,
    recipe: Recipe,
    prompts: Sequence[Prompt],
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    top: int = 5,
    lpips_prompts: Sequence[str] | None = None,
    lpips_steps: int | None = None,
    eval_timesteps: int | None = 8,
    eval_samples: int | None = 4,
    eval_batch: int = 16,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    timing: bool = True,
    timing_reps: int = 5,
    progress: bool = True,
) -> dict[str, Any]:
    """Sensitivity of every layer the recipe quantizes; returns the sensitivity.json dict (see module doc).

    `pipe` must hold a float U-Net; it is float again on return. SQNRs are SIMULATED (fake quant); latencies
    (with `timing`) are measured per layer on the real kernels of this machine."""
    unet = pipe.unet
    if api.qmodules(unet):
        raise DiffusiaError("sensitivity needs the float pipeline: load the model again without quantizing it")
    if not prompts:
        raise DiffusiaError("sensitivity needs calibration prompts: pass --calib-prompts / --calib-size >= 1")
    t_start = time.perf_counter()
    recipe = recipe.replace(keep_as="fp32")  # the policy's high-precision layers stay float and out of the analysis
    layer_plan = plan(unet, recipe)
    cands = [n for n, p in layer_plan.items() if p in precision_names()]
    if not cands:
        raise DiffusiaError(f"recipe {recipe.name!r} quantizes no layer: nothing to analyse")
    for p in precisions:
        if p not in precision_names():
            raise DiffusiaError(f"precision {p!r} cannot be simulated; valid: {', '.join(precision_names())}")
    float_bytes = next(unet.parameters()).element_size()
    total_bytes = sum(t.numel() * t.element_size() for t in list(unet.parameters()) + list(unet.buffers()))
    originals = {n: unet.get_submodule(n) for n in cands}
    # every candidate is built as W8A8 so it has an activation range, whatever precision it is simulated at
    calib_recipe = recipe.replace(rules=list(recipe.rules) + [Rule(n, "w8a8") for n in cands])
    shapes: dict[str, list[int]] = {}
    api.quantize(unet, calib_recipe)
    hooks = []
    try:
        qm = api.qmodules(unet)
        if timing:  # input shape of each layer in the first (batch-2, CFG) U-Net call

            def shape_hook(name: str):
                def hook(module: nn.Module, args: tuple) -> None:
                    shapes.setdefault(name, list(args[0].shape))

                return hook

            hooks = [qm[n].register_forward_pre_hook(shape_hook(n)) for n in cands]
        base = {n: m.settings for n, m in qm.items()}
        for n in cands:
            if layer_plan[n] != "w8a8":
                qm[n].settings = _settings_for(base[n], layer_plan[n], recipe)
        # 1. calibrate and record in one pass of the sampler (calibrate mode computes in float)
        t0 = time.perf_counter()
        with api.calibrate(unet):
            calls = record_unet_inputs(pipe, list(prompts), steps, guidance, progress=progress)
        for h in hooks:
            h.remove()
        calib_s = time.perf_counter() - t0
        state = get_state(unet)
        batches = evaluation_batches(calls, eval_timesteps, eval_batch, eval_samples, state and state.group_of)
        n_eval = sum(len(b.sample) for b in batches)
        log.info(
            "calibrated on %d prompts (%d U-Net calls, %.1f s); SQNR over %d samples at %d timesteps",
            len(prompts),
            len(calls),
            calib_s,
            n_eval,
            len(_timesteps(batches)),
        )
        # 2. reference and all-quantized outputs
        _set_fake(qm, ())
        refs = _forward(unet, batches)
        _set_fake(qm, cands)
        sqnr_all = sqnr_db(refs, _forward(unet, batches))
        # 3. per layer: only this one (at the recipe's precision and at the others), all but this one
        from tqdm.auto import tqdm

        rows = []
        for n in tqdm(cands, desc="sensitivity", disable=not progress):
            m = qm[n]
            rec_p = layer_plan[n]
            by_p: dict[str, float] = {}
            _set_fake(qm, [n])
            for p in dict.fromkeys([rec_p, *precisions]):
                _simulate_at(m, _settings_for(base[n], p, recipe))
                by_p[p] = sqnr_db(refs, _forward(unet, batches))
            _simulate_at(m, _settings_for(base[n], rec_p, recipe))
            _set_fake(qm, [c for c in cands if c != n])
            all_but = sqnr_db(refs, _forward(unet, batches))
            rows.append(
                dict(
                    name=n,
                    type=layer_type(n),
                    module=type(originals[n]).__name__,
                    precision=rec_p,
                    weight_shape=list(m.weight_shape),
                    params=int(m.weight.numel()),
                    bias_params=0 if m.bias is None else int(m.bias.numel()),
                    fp32_weight_bytes=weight_bytes(m.weight_shape, "keep", float_bytes),
                    sqnr_only_db=by_p[rec_p],
                    sqnr_all_but_db=all_but,
                    gain_db=all_but - sqnr_all,
                    sqnr_only_db_by_precision=by_p,
                    lpips_only=None,
                    time_s=None,
                )
            )
        rows.sort(key=lambda r: r["sqnr_only_db"])
        for i, r in enumerate(rows, 1):
            r["rank"] = i
        # 4. images: FP32 reference, all quantized, and only-this-layer for the top-k
        images: dict[str, Any] = {"simulated": True, "prompts": [], "steps": None, "lpips_all": None}
        timing_info: dict[str, Any] | None = None
        texts = list(lpips_prompts) if lpips_prompts else list(dict.fromkeys(p.text for p in prompts))[:2]
        if top > 0 or timing:
            isteps = lpips_steps or steps
            counter = [0]

            def count(*_: Any) -> None:
                counter[0] += 1

            h = unet.register_forward_pre_hook(count)
            _set_fake(qm, ())
            t0 = time.perf_counter()
            try:
                ref_images = _images(pipe, texts, isteps, guidance)
            finally:
                h.remove()
            image_s = (time.perf_counter() - t0) / len(texts)
            calls_per_image = counter[0] / len(texts)
            if top > 0:
                _set_fake(qm, cands)
                lp_all, side = lpips_vs(ref_images, _images(pipe, texts, isteps, guidance))
                images.update(
                    prompts=texts, steps=isteps, lpips_all=lp_all, upsampled_to=side, seed=GenerationConfig().seed
                )
                for r in tqdm(rows[:top], desc="lpips", disable=not progress):
                    _set_fake(qm, [r["name"]])
                    r["lpips_only"], _ = lpips_vs(ref_images, _images(pipe, texts, isteps, guidance))
            if timing:
                _set_fake(qm, ())
                layer_times = {}
                for n in tqdm(cands, desc="timing", disable=not progress):
                    if n in shapes:
                        ps = dict.fromkeys([layer_plan[n], *precisions])
                        settings = {p: _settings_for(base[n], p, recipe) for p in ps}
                        layer_times[n] = time_layer(originals[n], qm[n], shapes[n], settings, timing_reps)
                for r in rows:
                    r["time_s"] = layer_times.get(r["name"])
                timing_info = dict(
                    measured=True,
                    image_s_fp32=image_s,
                    unet_calls_per_image=calls_per_image,
                    image_steps=isteps,
                    reps=timing_reps,
                    threads=torch.get_num_threads(),
                    device=str(unet.device),
                    note="MEASURED: median seconds of one layer forward at the batch-2 (CFG) input "
                    "shape, float and frozen real kernels; the pipeline image time is FP32",
                )
        _set_fake(qm, ())
    finally:
        for h in hooks:
            h.remove()
        api.dequantize(unet)  # the float layers back, so the pipeline is float again
    noise_sum = sum(10 ** (-r["sqnr_only_db"] / 10) for r in rows)
    additive = -10 * math.log10(noise_sum) if noise_sum > 0 else SQNR_CAP_DB
    return {
        "format": FORMAT,
        "version": VERSION,
        "simulated": True,
        "note": SIMULATED_NOTE,
        "model": getattr(pipe, "diffusia_spec", None),
        "recipe": recipe.to_dict(),
        "calibration": dict(
            prompts=[p.text for p in prompts],
            size=len(prompts),
            steps=steps,
            guidance=guidance,
            unet_calls=len(calls),
            eval_samples=n_eval,
            eval_batches=len(batches),
            eval_timesteps=_timesteps(batches),
        ),
        "sqnr_all_db": sqnr_all,
        "sqnr_all_additive_estimate_db": additive,
        "precisions": list(dict.fromkeys([*(r["precision"] for r in rows), *precisions])),
        "unet": dict(
            total_bytes=total_bytes,
            float_bytes=float_bytes,
            layers=layer_names(unet),
            candidate_weight_bytes=sum(r["fp32_weight_bytes"] for r in rows),
            int4_group_size=recipe.int4_group_size,
            timestep_groups=recipe.timestep_groups,
        ),
        "images": images,
        "timing": timing_info,
        "layers": rows,
        "by_type": aggregate_by_type(rows),
        "seconds": time.perf_counter() - t_start,
    }


def aggregate_by_type(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per layer type: count, parameters, mean/min SQNR (only this layer), mean gain when kept in float, and the
    type's share of the summed per-layer noise (additive model)."""
    total = sum(10 ** (-r["sqnr_only_db"] / 10) for r in rows) or 1.0
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["type"]].append(r)
    out = {}
    for kind, rs in sorted(groups.items(), key=lambda kv: min(r["sqnr_only_db"] for r in kv[1])):
        s = [r["sqnr_only_db"] for r in rs]
        out[kind] = dict(
            layers=len(rs),
            params=sum(r["params"] for r in rs),
            mean_sqnr_only_db=statistics.fmean(s),
            min_sqnr_only_db=min(s),
            mean_gain_db=statistics.fmean(r["gain_db"] for r in rs),
            noise_share=sum(10 ** (-x / 10) for x in s) / total,
            most_sensitive=min(rs, key=lambda r: r["sqnr_only_db"])["name"],
        )
    return out


# ------------------------------------------------------------------ outputs
