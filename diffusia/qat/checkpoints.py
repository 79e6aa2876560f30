"""QAT checkpoints: atomic `DIR/checkpoints/step-N/` folders (float weights + quantization ranges, optimizer,
RNG states of every process, step and loss history), the latest one, and the settings a resume must keep."""
from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from diffusia.errors import DiffusiaError
from diffusia.fileio import atomic_dir

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
# run settings that must not change across --resume
RESUME_KEYS = ("model", "recipe", "source", "batch", "seed", "lr", "lsq", "lsq_lr", "calib_size", "calib_prompts",
               "calib_steps", "guidance", "caption_dropout", "weight_decay", "grad_clip", "timestep_groups")


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINTS


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint with the highest step (folders appear atomically, so any listed one is complete)."""
    folder = checkpoint_dir(out)
    found = sorted(p for p in folder.glob("step-*") if p.is_dir() and (p / "state.json").is_file())
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    rng_states: list[dict[str, Any]], state: dict[str, Any]) -> Path:
    """Write checkpoint `step` atomically and prune all but the last KEEP_CHECKPOINTS."""
    from safetensors.torch import save_file

    path = checkpoint_dir(out) / f"step-{step:07d}"
    with atomic_dir(path) as tmp:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(rng_states, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str) + "\n")
    for old in sorted(p for p in checkpoint_dir(out).glob("step-*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", path)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(model state, optimizer state, per-process RNG states, state.json) of a checkpoint folder."""
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_text())
        model = load_file(str(path / "model.safetensors"))
        optim = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)  # our own file: python RNG tuples
    except (OSError, RuntimeError, ValueError, EOFError) as e:
        raise DiffusiaError(f"checkpoint {path} is unreadable ({e}): delete it to resume from an earlier one") from None
    return model, optim, rng, state


def config_subset(cfg: Any) -> dict[str, Any]:
    d = cfg if isinstance(cfg, dict) else asdict(cfg)
    return {k: d.get(k) for k in RESUME_KEYS}


def check_resumable(saved: dict[str, Any], cfg: Any, world: int) -> None:
    now = config_subset(cfg)
    for k, v in config_subset(saved["config"]).items():
        if now[k] != v:
            raise DiffusiaError(f"cannot resume: the checkpoint was made with {k}={v!r}, this run has {now[k]!r}; "
                                "use the same settings or start without --resume")
    if saved["world_size"] != world:
        raise DiffusiaError(f"cannot resume: the checkpoint was made with {saved['world_size']} process(es), "
                            f"this run has {world}")
    if cfg.steps < saved["step"]:
        raise DiffusiaError(f"cannot resume: the checkpoint is at step {saved['step']} > --steps {cfg.steps}")
