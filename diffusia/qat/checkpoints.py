"""QAT checkpoints: atomic `DIR/checkpoints/step-N/` folders (float weights + quantization ranges, optimizer,
RNG states of every process, step and loss history), the latest one, and the settings a resume must keep.

A checkpoint folder is user input (`--resume --out DIR`): it holds safetensors and JSON only, never a pickle."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
from collections.abc import Iterator
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
FORMAT, VERSION = "diffusia.qat.checkpoint", 2  # v1 pickled the optimizer and RNG states (rng.pt, optimizer.pt)
PICKLED = ("rng.pt", "optimizer.pt")
STATE_KEYS = {"step": int, "losses": list, "config": dict, "recipe": dict, "calibration": dict, "world_size": int}
# run settings that must not change across --resume
RESUME_KEYS = (
    "model",
    "recipe",
    "source",
    "batch",
    "seed",
    "lr",
    "lsq",
    "lsq_lr",
    "calib_size",
    "calib_prompts",
    "calib_steps",
    "guidance",
    "caption_dropout",
    "weight_decay",
    "grad_clip",
    "timestep_groups",
)


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


def _rng_files(states: list[dict[str, Any]]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Per-process RNG states as tensors (`RANK.torch`, `RANK.numpy`, `RANK.cuda.I`) and JSON (the rest)."""
    tensors, plain = {}, []
    for rank, s in enumerate(states):
        name, keys, pos, has_gauss, cached = s["numpy"]
        tensors[f"{rank}.torch"] = s["torch"]
        tensors[f"{rank}.numpy"] = torch.from_numpy(np.asarray(keys, np.uint32).view(np.int32).copy())
        for i, t in enumerate(s.get("cuda", [])):
            tensors[f"{rank}.cuda.{i}"] = t
        plain.append(
            {
                "python": list(s["python"]),
                "numpy": [name, int(pos), int(has_gauss), float(cached)],
                "cuda": len(s.get("cuda", [])),
            }
        )
    return tensors, plain


def _rng_states(tensors: dict[str, Tensor], plain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    states = []
    for rank, p in enumerate(plain):
        version, keys, gauss = p["python"]
        name, pos, has_gauss, cached = p["numpy"]
        s = {
            "python": (version, tuple(keys), gauss),
            "torch": tensors[f"{rank}.torch"],
            "numpy": (name, tensors[f"{rank}.numpy"].numpy().view(np.uint32), pos, has_gauss, cached),
        }
        if p["cuda"]:
            s["cuda"] = [tensors[f"{rank}.cuda.{i}"] for i in range(p["cuda"])]
        states.append(s)
    return states


def _optimizer_files(sd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer state dict as tensors (`state.PARAM.NAME`) and JSON (param_groups, non-tensor state)."""
    tensors, other = {}, {}
    for idx, entries in sd["state"].items():
        for k, v in entries.items():
            if isinstance(v, Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                other.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "state": other}


def _optimizer_state(tensors: dict[str, Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = t
    for idx, entries in plain["state"].items():
        state.setdefault(int(idx), {}).update(entries)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}  # betas
        for g in plain["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    out: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng_states: list[dict[str, Any]],
    state: dict[str, Any],
) -> Path:
    """Write checkpoint `step` atomically (safetensors and JSON only) and prune all but the last KEEP_CHECKPOINTS."""
    from safetensors.torch import save_file

    path = checkpoint_dir(out) / f"step-{step:07d}"
    with atomic_dir(path) as tmp:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        for name, (arrays, plain) in (
            ("optimizer", _optimizer_files(optimizer.state_dict())),
            ("rng", _rng_files(rng_states)),
        ):
            save_file(arrays, str(tmp / f"{name}.safetensors"))
            (tmp / f"{name}.json").write_text(json.dumps(plain) + "\n")
        state = {"format": FORMAT, "version": VERSION, **state}
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str) + "\n")
    for old in sorted(p for p in checkpoint_dir(out).glob("step-*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", path)
    return path


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(model state, optimizer state, per-process RNG states, state.json) of a checkpoint folder; one-line
    DiffusiaErrors for the old pickle format and for anything unreadable or malformed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    pickled = [n for n in PICKLED if (path / n).exists()]
    if pickled:
        raise DiffusiaError(
            f"checkpoint {path} is in the old pickle format ({pickled[0]}), which diffusia no longer "
            f"reads: start without --resume into a new --out, or delete {path.parents[1]}"
        )
    try:
        state = json.loads((path / "state.json").read_text())
        if not isinstance(state, dict) or (state.get("format"), state.get("version")) != (FORMAT, VERSION):
            raise ValueError(f"state.json is not a {FORMAT} v{VERSION}")
        bad = [k for k, kind in STATE_KEYS.items() if not isinstance(state.get(k), kind)]
        if bad:
            raise ValueError(f"state.json lacks a valid {', '.join(bad)}")
        model = load_file(str(path / "model.safetensors"))
        optim = _optimizer_state(
            load_file(str(path / "optimizer.safetensors")), json.loads((path / "optimizer.json").read_text())
        )
        rng = _rng_states(load_file(str(path / "rng.safetensors")), json.loads((path / "rng.json").read_text()))
        if len(rng) != state["world_size"]:
            raise ValueError(f"{len(rng)} RNG states for {state['world_size']} process(es)")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, SafetensorError) as e:
        raise DiffusiaError(
            f"checkpoint {path} is unreadable ({_one_line(e)}): delete it to resume from an earlier "
            "one, or start again with --overwrite instead of --resume"
        ) from None
    return model, optim, rng, state


@contextlib.contextmanager
def restoring(path: Path) -> Iterator[None]:
    """Map a checkpoint that does not fit the model or optimizer being restored to a one-line DiffusiaError."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DiffusiaError(
            f"checkpoint {path} does not fit this run ({_one_line(e)[:300]}): delete it to resume "
            "from an earlier one, or start again with --overwrite instead of --resume"
        ) from None


def config_subset(cfg: Any) -> dict[str, Any]:
    d = cfg if isinstance(cfg, dict) else asdict(cfg)
    return {k: d.get(k) for k in RESUME_KEYS}


def check_resumable(saved: dict[str, Any], cfg: Any, world: int) -> None:
    now = config_subset(cfg)
    for k, v in config_subset(saved["config"]).items():
        if now[k] != v:
            raise DiffusiaError(
                f"cannot resume: the checkpoint was made with {k}={v!r}, this run has {now[k]!r}; "
                "use the same settings, or start again with --overwrite instead of --resume"
            )
    if saved["world_size"] != world:
        raise DiffusiaError(
            f"cannot resume: the checkpoint was made with {saved['world_size']} process(es), this run has {world}"
        )
    if cfg.steps < saved["step"]:
        raise DiffusiaError(f"cannot resume: the checkpoint is at step {saved['step']} > --steps {cfg.steps}")
