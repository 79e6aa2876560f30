"""`diffusia study`: the whole quantization study of one model, end to end.

Sensitivity (simulated) -> mixed-precision search under a size budget -> QAT -> evaluation of every variant on
real kernels (tables I-IV, per category, image grid) -> Pareto fronts -> device recommendations, gathered into
report.md and a self-contained report.html.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from diffusia.errors import DiffusiaError
from diffusia.fileio import write_json, write_text

log = logging.getLogger(__name__)


@dataclass
class StudyConfig:
    model: str = "tiny"
    out: str = "out/study"
    num: int = 32  # evaluation images (the reference study used 100: pass --num 100)
    runs: int = 10  # timed runs per variant after a warm-up
    steps: int = 25
    calib_size: int = 16  # calibration prompts (x 25 steps x 2 guidance branches = 800 U-Net calls)
    sensitivity_calib: int = 4
    sensitivity_timesteps: int = 2  # timesteps of the calibration trajectories the per-layer SQNR is measured at
    qat_steps: int = 150
    budget_fraction: float = 0.35  # searched-mixed U-Net budget, as a fraction of the FP32 U-Net
    processes: int = 1
    quick: bool = False
    runtime: str = "torch"  # where the evaluated U-Nets run (diffusia.runtime)
    runtime_precision: str = "f32"  # OpenVINO's float layers, f32 or bf16, +dynamic (diffusia.runtime.PRECISIONS)
    activations: str = "auto"  # integer range of every W8A8 variant's activations (diffusia.config.ACTIVATIONS)
    attention: str = "float"  # attention of the W8A8 variants with W8A8 to_q/to_k/to_v (diffusia.config.ATTENTION)

    @classmethod
    def quick_config(cls, model: str, out: str) -> StudyConfig:
        return cls(
            model=model, out=out, num=2, runs=1, steps=3, calib_size=2, sensitivity_calib=1, qat_steps=2, quick=True
        )


def _sensitivity(cfg: StudyConfig, out: Path) -> dict:
    from diffusia import load_pipeline
    from diffusia.analysis.sensitivity import run_sensitivity
    from diffusia.analysis.sensitivity_report import write_sensitivity
    from diffusia.config import get_preset
    from diffusia.eval.variants import with_options
    from diffusia.prompts import load_prompts, take

    pipe = load_pipeline(cfg.model, progress=False)
    prompts = take(load_prompts("calibration", cfg.model), cfg.sensitivity_calib)
    lpips_prompts = [p.text for p in load_prompts("eval", cfg.model)][: 1 if cfg.quick else 2]
    sens = run_sensitivity(
        pipe,
        with_options(get_preset("w8a8"), cfg.activations),  # per-layer sensitivity: the layers, float attention
        prompts,
        steps=cfg.steps,
        top=1 if cfg.quick else 5,
        lpips_prompts=lpips_prompts,
        eval_timesteps=1 if cfg.quick else cfg.sensitivity_timesteps,
        timing=False,
        precisions=("w8a8",) if cfg.quick else ("w8a8", "w8", "fp16"),
        progress=not cfg.quick,
    )
    write_sensitivity(sens, out / "sensitivity")
    return sens


def _calibration(cfg: StudyConfig):
    """The calibration of the study's W8A8 variants (w8a8, mixed, the searched plan) and of its QAT (PTQ start
    and distillation data): one sampling pass (`diffusia.qat.data.SharedCalibration`)."""
    from diffusia import load_pipeline
    from diffusia.config import get_preset
    from diffusia.eval.variants import with_options
    from diffusia.generate import DEFAULT_GUIDANCE
    from diffusia.prompts import load_prompts, take
    from diffusia.qat.data import SharedCalibration
    from diffusia.quant.pipeline import CALIBRATION_BATCH

    pipe = load_pipeline(cfg.model, progress=False)
    prompts = take(load_prompts("calibration", cfg.model), cfg.calib_size)
    recipe = with_options(get_preset("w8a8"), cfg.activations, cfg.attention, pipe.unet)
    return SharedCalibration.record(
        pipe, recipe, prompts, cfg.steps, DEFAULT_GUIDANCE, batch=CALIBRATION_BATCH, progress=not cfg.quick
    )


def _searched_variant(cfg: StudyConfig, sens: dict, out: Path, observations) -> Path:
    """Search a per-layer plan under the budget and materialise it as a quantized folder."""
    from diffusia import load_pipeline
    from diffusia.analysis.search import search
    from diffusia.eval.variants import with_options
    from diffusia.prompts import load_prompts
    from diffusia.quant.pipeline import quantize_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline

    fp32_mb = search(sens, budget_mb=float("inf")).fp32_size_mb
    res = search(sens, budget_mb=cfg.budget_fraction * fp32_mb)
    pipe = load_pipeline(cfg.model, progress=False)
    recipe = with_options(res.recipe.replace(name="searched"), cfg.activations, cfg.attention, pipe.unet)
    write_text(out / "searched_recipe.json", recipe.to_json() + "\n")
    write_json(out / "searched_recipe.search.json", res.to_dict())
    quantize_pipeline(
        pipe,
        recipe,
        load_prompts("calibration", cfg.model),
        calib_size=cfg.calib_size,
        steps=cfg.steps,
        progress=not cfg.quick,
        observations=observations,
    )
    return save_quantized_pipeline(pipe, out / "sources" / "searched", base_model=cfg.model, runtimes=_saved(cfg))


def _saved(cfg: StudyConfig) -> tuple[str, ...]:
    """The runtime the study's own folders (QAT, the searched plan) are saved with, so its U-Nets load as the
    presets' do instead of being exported when loaded."""
    from diffusia.runtime import saved_runtimes

    return saved_runtimes(cfg.runtime)


STUDIED_PRESETS = ("w8a8", "mixed", "w8a8x2")  # W8A8 presets evaluated beside QAT and the searched plan


def _quantizing_variants(cfg: StudyConfig, out: Path) -> dict[str, str]:
    """The study's W8A8 presets as evaluation variants: their names, or with non-default options recipe files
    that set them (labelled e.g. `w8a8-int8-attn8`)."""
    from diffusia.eval.variants import with_option_recipes

    items = with_option_recipes(list(STUDIED_PRESETS), cfg.activations, cfg.attention, cfg.model, out / "recipes")
    return dict(zip(STUDIED_PRESETS, items))


def _qat_variant(cfg: StudyConfig, out: Path, recipe: str, shared) -> Path:
    from diffusia.config import load_recipe
    from diffusia.eval.variants import options_label
    from diffusia.qat.train import QATConfig, run_qat

    qcfg = QATConfig(
        out=str(out / "sources" / f"w8a8-qat{options_label(load_recipe(recipe))}"),
        model=cfg.model,
        recipe=recipe,
        steps=cfg.qat_steps,
        calib_size=cfg.calib_size,
        calib_steps=cfg.steps,
        checkpoint_every=0,
        progress=not cfg.quick,
        runtimes=_saved(cfg),
    )
    result = run_qat(qcfg, shared)
    if result is None:
        raise DiffusiaError("QAT did not finish: see the log above")
    return result.out


def _embed_images(markdown: str, folder: Path) -> str:
    """A self-contained HTML page: markdown lines as text, PNG references inlined as data URIs."""
    import html
    import re

    body = []
    for line in markdown.splitlines():
        m = re.match(r"!\[(.*?)\]\((.*?\.png)\)", line.strip())
        if m and (folder / m.group(2)).is_file():
            data = base64.b64encode((folder / m.group(2)).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    text = "\n".join(body)
    text = re.sub(
        r"(?:<tr>.*?</tr>\n?)+", lambda m: "<table border=1 cellspacing=0>" + m.group(0) + "</table>", text, flags=re.S
    )
    return f"<!doctype html><meta charset=utf-8><title>diffusia study</title><body>{text}</body>"


def run_study(cfg: StudyConfig) -> Path:
    from diffusia.analysis.pareto import write_pareto
    from diffusia.analysis.recommend import device_report
    from diffusia.analysis.results import load_results
    from diffusia.eval.harness import evaluate

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings = {}
    sens = _sensitivity(cfg, out)
    timings["sensitivity_s"] = time.perf_counter() - t0
    shared = _calibration(cfg)
    timings["observe_s"] = time.perf_counter() - t0 - timings["sensitivity_s"]
    searched = _searched_variant(cfg, sens, out, shared.observations)
    timings["search_s"] = time.perf_counter() - t0 - sum(timings.values())
    quantizing = _quantizing_variants(cfg, out)
    qat = _qat_variant(cfg, out, quantizing["w8a8"], shared)
    timings["qat_s"] = time.perf_counter() - t0 - sum(timings.values())
    variants = ["fp32", "fp16", "bf16", quantizing["w8a8"], str(qat), quantizing["w8a8x2"], quantizing["mixed"]]
    variants += [str(searched), "w8", "w4"]
    evaluate(
        cfg.model,
        variants,
        prompts="eval",
        num=cfg.num,
        out=out / "eval",
        runs=cfg.runs,
        warmup=0 if cfg.quick else 1,
        steps=cfg.steps,
        calib_size=cfg.calib_size,
        processes=cfg.processes,
        progress=not cfg.quick,
        runtime=cfg.runtime,
        runtime_precision=cfg.runtime_precision,
        observations=shared.observations,
    )
    timings["eval_s"] = time.perf_counter() - t0 - sum(timings.values())
    results = load_results(out / "eval" / "results.json")
    write_pareto(results, out / "pareto")
    devices = device_report(results)
    timings["total_s"] = time.perf_counter() - t0
    parts = [
        f"# diffusia study: `{cfg.model}`\n",
        f"Variants: {', '.join(Path(v).name for v in variants)}. Evaluation: {cfg.num} images, {cfg.steps} steps; "
        f"wall time {timings['total_s'] / 60:.1f} min{' (--quick smoke test: numbers are not meaningful)' if cfg.quick else ''}.\n",
        _read(out / "eval" / "report.md", "eval/"),
        "## Layer sensitivity (SIMULATED fake quantization)\n",
        _read(out / "sensitivity" / "sensitivity.md", "sensitivity/"),
        "## Pareto fronts\n",
        _read(out / "pareto" / "pareto.md", "pareto/"),
        "## Recommendations by device class\n",
        devices,
    ]
    report = "\n".join(parts)
    write_text(out / "report.md", report)
    write_text(out / "report.html", _embed_images(report, out))
    write_json(out / "study.json", {"config": cfg.__dict__, "timings": timings, "variants": variants})
    return out / "report.md"


def _read(path: Path, prefix: str) -> str:
    """A sub-report, its heading levels pushed down and relative image links rebased to the study folder."""
    import re

    if not path.is_file():
        return f"(missing: {path.name})\n"
    text = path.read_text()
    text = re.sub(r"^(#+)", lambda m: "#" + m.group(1), text, flags=re.M)
    return re.sub(r"\]\((?!https?:|/)([^)]+\.png)\)", lambda m: f"]({prefix}{m.group(1)})", text)
