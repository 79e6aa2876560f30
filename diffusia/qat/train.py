"""Quantization-aware training of the U-Net, on accelerate.

PTQ start (quantize with the recipe, calibrate on sampling trajectories of calibration prompts, not frozen) ->
fake quantization of weights and W8A8 activations (straight-through estimator) -> fine-tune the U-Net's float
weights and, by default, LSQ-style learnable activation step sizes (`--no-lsq` to fix them) -> freeze -> the same INT8 folder as PTQ.

One CPU process by default; several processes or GPUs with no code change:

    accelerate launch --multi_gpu --num_processes 2 -m diffusia.qat.train --model tiny --out DIR --steps 100

(`python -m diffusia.qat.train` takes the options of `diffusia qat`, defined once in diffusia/cli/qat.py)

(on a machine without GPUs this starts 2 CPU processes over gloo; with accelerate 1.x `--cpu --num_processes N`
starts one process unless MPI is configured).

Checkpoints (`DIR/checkpoints/step-N/`, atomic): float weights + quantization ranges (+ LSQ scales), optimizer,
RNG states of every process, step and loss history. Batches depend only on (seed, step), so `--resume` after a
kill reproduces the losses of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusia.calib.forward_loop import UnetCall
from diffusia.errors import DiffusiaError
from diffusia.fileio import QUANTIZED, atomic_dir, check_output_dir, mark_output_dir, resumable_output, write_json
from diffusia.qat.checkpoints import (
    check_resumable,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    restoring,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from diffusia.qat.config import QATConfig, QATResult
from diffusia.qat.data import Batch, DistillData, FashionMNISTData, SharedCalibration
from diffusia.qat.lsq import LearnableActScales, QATModel

log = logging.getLogger(__name__)

DISTILL_FILE = "distill_data.safetensors"
LOSS_PNG, LOSS_JSON = "loss_curve.png", "qat_losses.json"


# ----------------------------------------------------------------------------------------------- setup
def _make_accelerator(device: str):
    from accelerate import Accelerator

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise DiffusiaError("--device cuda requested but CUDA is not available: use --device cpu")
    return Accelerator(cpu=cpu)


def _resolve_recipe(cfg: QATConfig):
    """The recipe as `diffusia quantize --recipe` reads it, with the timestep-groups override."""
    from diffusia.config import load_recipe

    recipe = load_recipe(cfg.recipe, cfg.timestep_groups)
    if recipe.weights in ("fp32", "keep") and not recipe.rules:
        raise DiffusiaError(f"recipe {recipe.name!r} quantizes nothing: QAT needs quantized layers (e.g. w8a8)")
    return recipe


def _calibrate(unet: nn.Module, calls: list[UnetCall]) -> float:
    """Replay the recorded sampler calls through the quantized U-Net in calibration mode (float compute: the
    same inputs the sampler would give it); returns seconds."""
    from diffusia.quant import api

    t0 = time.perf_counter()
    device = next(unet.parameters()).device
    with api.calibrate(unet):
        for call in calls:
            unet(**call.kwargs(device))
    return time.perf_counter() - t0


def _train_step(model: nn.Module, accelerator, batch: Batch, timestep_state) -> Tensor:
    """MSE of the noise prediction; with several timestep groups, one forward per group present in the batch
    (the quantized layers pick their activation range from the group of the first timestep of a call)."""
    n = len(batch)
    if timestep_state is None or timestep_state.groups == 1:
        groups = [torch.arange(n)]
    else:
        g = torch.tensor([timestep_state.group_of(float(t)) for t in batch.timestep.cpu()])
        groups = [torch.nonzero(g == k).flatten() for k in torch.unique(g)]
    total = torch.zeros((), device=batch.sample.device)
    for i, idx in enumerate(groups):
        idx = idx.to(batch.sample.device)
        pred = model(batch.sample[idx], batch.timestep[idx], batch.encoder_hidden_states[idx], batch.added_rows(idx))
        loss = F.mse_loss(pred.float(), batch.target[idx].float()) * (len(idx) / n)
        if i < len(groups) - 1:
            with accelerator.no_sync(model):
                accelerator.backward(loss)
        else:
            accelerator.backward(loss)
        total = total + loss.detach()
    return total


def _finish(
    cfg: QATConfig, pipe, model: QATModel, recipe, calibration, losses: list[float], meta: dict[str, Any], out: Path
) -> None:
    """Freeze, validate, save the INT8 folder (atomically) with the loss curve and the QAT settings."""
    from diffusia.qat.plot import plot_loss_curve
    from diffusia.quant import api
    from diffusia.quant.pipeline import validate_pipeline
    from diffusia.quant.serialization import save_quantized_pipeline

    unet = model.unet
    if model.lsq is not None:
        model.lsq.sync_buffers()
        model.lsq.remove()
    unet.eval().requires_grad_(False)
    api.freeze(unet)
    pipe.unet = unet
    pipe.diffusia_recipe, pipe.diffusia_calibration = recipe, calibration
    pipe.diffusia_validation = validate_pipeline(pipe) if cfg.validate else None
    last = latest_checkpoint(out)
    with atomic_dir(out) as tmp:
        save_quantized_pipeline(pipe, tmp / "pipeline", base_model=cfg.model, runtimes=tuple(cfg.runtimes))
        for item in (tmp / "pipeline").iterdir():
            os.replace(item, tmp / item.name)
        (tmp / "pipeline").rmdir()
        meta_path = tmp / "diffusia.json"
        full = json.loads(meta_path.read_text())
        full["qat"] = meta
        meta_path.write_text(json.dumps(full, indent=2, default=str) + "\n")
        write_json(tmp / LOSS_JSON, {"losses": losses})
        plot_loss_curve(
            losses,
            tmp / LOSS_PNG,
            title=f"QAT {recipe.name} ({cfg.source}) on {cfg.model}",
            ylabel="noise-prediction MSE" if cfg.source != "distill" else "student-teacher MSE",
        )
        if cfg.keep_checkpoints and last is not None:
            shutil.copytree(last, checkpoint_dir(tmp) / last.name)
            if (checkpoint_dir(out) / DISTILL_FILE).is_file():
                shutil.copy2(checkpoint_dir(out) / DISTILL_FILE, checkpoint_dir(tmp) / DISTILL_FILE)


# ----------------------------------------------------------------------------------------------- the run
def run_qat(cfg: QATConfig, shared: SharedCalibration | None = None) -> QATResult | None:
    """Run QAT per `cfg`; returns the result on the main process (None on others, or when stopped early). A run
    that fails before its first checkpoint leaves no output folder behind; after one, --resume continues it.
    `shared`: the calibration sampling pass a study recorded once (PTQ start and teacher from it, when it
    matches this run's prompts, steps, guidance, calibrator and U-Net; otherwise QAT samples its own)."""
    out = Path(cfg.out)
    with resumable_output(out, lambda: latest_checkpoint(out) is not None):
        return _run(cfg, shared)


def _usable(shared: SharedCalibration | None, cfg: QATConfig, recipe, prompts, unet: nn.Module):
    """`shared` when it can start this run (same prompts, steps, guidance, calibrator settings and float U-Net;
    QAT does not mind how the pass was batched), else None (logged why)."""
    from diffusia.calib.observations import Sampling, unet_id

    if shared is None:
        return None
    seen = shared.observations.sampling
    wanted = Sampling(tuple(p.text for p in prompts), cfg.calib_steps, cfg.guidance, seen.seed, seen.batch)
    why = shared.observations.mismatch(recipe, wanted, unet_id(unet))
    if why:
        log.info("QAT samples its own calibration: the shared recording %s", why)
        return None
    return shared


def _run(cfg: QATConfig, shared: SharedCalibration | None) -> QATResult | None:
    from accelerate.utils import gather_object, set_seed
    from tqdm.auto import tqdm

    from diffusia import load_pipeline
    from diffusia.prompts import load_prompts, take
    from diffusia.quant import api
    from diffusia.quant import timestep as ts
    from diffusia.quant.pipeline import CalibrationInfo

    cfg.check()
    t_start = time.perf_counter()
    accelerator = _make_accelerator(cfg.device)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    out = Path(cfg.out)
    set_seed(cfg.seed)
    recipe = _resolve_recipe(cfg)

    ckpt = latest_checkpoint(out) if cfg.resume else None
    saved_state: dict[str, Any] | None = None
    if ckpt is not None:
        model_state, optim_state, rng_states, saved_state = load_checkpoint(ckpt)
        check_resumable(saved_state, cfg, world)
    elif cfg.resume and main:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", checkpoint_dir(out))
    # resuming continues this output on purpose; anything else replaces an earlier output only with --overwrite
    check_output_dir(out, QUANTIZED, cfg.overwrite or ckpt is not None, (cfg.model, cfg.recipe, cfg.calib_prompts))
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if main:
        mark_output_dir(out, QUANTIZED)
    if ckpt is None and main and checkpoint_dir(out).exists():
        shutil.rmtree(checkpoint_dir(out))  # stale checkpoints of an earlier run would be resumed later
    accelerator.wait_for_everyone()

    pipe = load_pipeline(cfg.model, progress=False)
    pipe.to(accelerator.device)
    for part in (pipe.vae, pipe.text_encoder):
        part.requires_grad_(False).eval()
    unet = pipe.unet.float()

    if saved_state is not None:
        with restoring(ckpt):
            recipe = type(recipe).from_dict(saved_state["recipe"])
            calibration = CalibrationInfo(**saved_state["calibration"])
            distill = DistillData.load(checkpoint_dir(out) / DISTILL_FILE) if cfg.source == "distill" else None
            api.quantize(unet, recipe)
            unet.load_state_dict({k[len("unet.") :]: v for k, v in model_state.items() if k.startswith("unet.")})
    else:
        prompts = take(load_prompts(cfg.calib_prompts, model=cfg.model), cfg.calib_size)
        shared = _usable(shared, cfg, recipe, prompts, unet)
        if shared is not None:
            distill, calls = shared.distill, []
            api.quantize(unet, recipe)
            t0 = time.perf_counter()
            api.calibrate_from(unet, shared.observations.layers)
            seconds, unet_calls = time.perf_counter() - t0, shared.observations.unet_calls
        else:
            distill, calls = DistillData.record(
                pipe, prompts, cfg.calib_steps, cfg.guidance, progress=cfg.progress and main
            )
            api.quantize(unet, recipe)
            seconds, unet_calls = _calibrate(unet, calls), len(calls)
        calibration = CalibrationInfo(
            [p.text for p in prompts],
            len(prompts),
            cfg.calib_steps,
            cfg.guidance,
            distill.info["seed"],
            unet_calls,
            seconds,
            batch=int(distill.info.get("batch", 1)),
            shared=shared is not None,
        )
        del calls
        if cfg.source != "distill":
            distill = None
        elif main:
            distill.save(checkpoint_dir(out) / DISTILL_FILE)
    data = distill if cfg.source == "distill" else FashionMNISTData(pipe, caption_dropout=cfg.caption_dropout)

    api.enable_fake_quant(unet)
    unet.train()
    unet.requires_grad_(True)
    lsq = LearnableActScales(unet) if cfg.lsq else None
    model = QATModel(unet, lsq)
    groups = [{"params": list(unet.parameters()), "lr": cfg.lr}]
    if lsq is not None:
        groups.append({"params": list(lsq.parameters()), "lr": cfg.lsq_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, losses = 0, []
    if saved_state is not None:
        with restoring(ckpt):
            model.load_state_dict(model_state)
            if lsq is not None:
                lsq.sync_buffers()
            optimizer.load_state_dict(optim_state)
            start, losses = int(saved_state["step"]), [float(x) for x in saved_state["losses"]]
            set_rng_state(rng_states[rank])
        if main:
            log.info("resumed from %s at step %d", ckpt, start)
    model, optimizer = accelerator.prepare(model, optimizer)
    tstate = ts.get_state(unet)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def state_json(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "losses": losses,
            "config": asdict(cfg),
            "recipe": recipe.to_dict(),
            "calibration": asdict(calibration),
            "world_size": world,
        }

    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=f"qat {cfg.source}",
        disable=not (main and cfg.progress),
        dynamic_ncols=True,
    )
    t_train, cpu_train = time.perf_counter(), time.process_time()
    try:
        for step in range(start, cfg.steps):
            batch = data.batch(step, cfg.seed, cfg.batch, rank, world).to(accelerator.device)
            loss = _train_step(model, accelerator, batch, tstate)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if lsq is not None:
                lsq.sync_buffers()
            value = float(accelerator.gather(loss.reshape(1)).mean().item())
            if not math.isfinite(value):
                raise DiffusiaError(f"QAT loss became {value} at step {step + 1}: lower --lr")
            losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.5f}")
            done = step + 1
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                rngs = gather_object([rng_state()])
                if main:
                    save_checkpoint(out, done, accelerator.unwrap_model(model), optimizer, rngs, state_json(done))
                accelerator.wait_for_everyone()
            if cfg.stop_after is not None and done >= cfg.stop_after and done < cfg.steps:
                log.warning("stopping after step %d (stop_after)", done)
                return None
    finally:
        bar.close()
    train_seconds, train_cpu = time.perf_counter() - t_train, time.process_time() - cpu_train
    rngs = gather_object([rng_state()])
    result = None
    if main:
        inner = accelerator.unwrap_model(model)
        if cfg.keep_checkpoints and start < cfg.steps:  # kept in the folder: a longer --resume run continues
            save_checkpoint(out, cfg.steps, inner, optimizer, rngs, state_json(cfg.steps))
        meta = {
            "source": cfg.source,
            "steps": cfg.steps,
            "lr": cfg.lr,
            "batch_per_process": cfg.batch,
            "processes": world,
            "global_batch": cfg.batch * world,
            "lsq": cfg.lsq,
            "lsq_lr": cfg.lsq_lr if cfg.lsq else None,
            "seed": cfg.seed,
            "weight_decay": cfg.weight_decay,
            "grad_clip": cfg.grad_clip,
            "calib_size": cfg.calib_size,
            "calib_steps": cfg.calib_steps,
            "caption_dropout": cfg.caption_dropout if cfg.source != "distill" else None,
            "distill_items": len(data) if cfg.source == "distill" else None,
            "resumed_from_step": start if saved_state is not None else None,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss_last_mean20": float(np.mean(losses[-20:])) if losses else None,
            "train_seconds_this_run": round(train_seconds, 2),
            "train_cpu_seconds_this_run": round(train_cpu, 2),
            "threads": torch.get_num_threads(),
            "device": str(accelerator.device),
        }
        _finish(cfg, pipe, inner, recipe, calibration, losses, meta, out)
        result = QATResult(out, losses, time.perf_counter() - t_start, start, meta)
        log.info("QAT done: %d steps, loss %.5f -> %.5f, saved %s", cfg.steps, losses[0], losses[-1], out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


# ----------------------------------------------------------------------------------------------- entry point
if __name__ == "__main__":  # `python -m diffusia.qat.train ARGS` is `diffusia qat ARGS` (one command line)
    from diffusia.cli import main

    main(["qat", *sys.argv[1:]])
