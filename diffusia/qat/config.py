"""Settings and result of one QAT run (`diffusia qat` / `python -m diffusia.qat.train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusia.errors import DiffusiaError
from diffusia.qat.data import SOURCES


@dataclass
class QATConfig:
    """Settings of one QAT run (`diffusia qat` / `python -m diffusia.qat.train`)."""

    out: str
    model: str = "tiny"
    recipe: str = "w8a8"
    source: str = "distill"  # distill | fashion-mnist
    steps: int = 100
    lr: float = 1e-5
    batch: int = 16  # per process
    lsq: bool = True  # learn the activation step sizes too
    lsq_lr: float = 1e-3  # Adam lr of the log activation step sizes
    checkpoint_every: int = 50  # 0: only the final state
    resume: bool = False
    overwrite: bool = False  # replace an earlier diffusia output at `out` (resuming needs no overwrite)
    calib_size: int = 32
    calib_prompts: str = "calibration"
    calib_steps: int = 25
    guidance: float = 7.5
    timestep_groups: int | None = None
    seed: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    caption_dropout: float = 0.1
    device: str = "cpu"  # cpu | cuda | auto (cuda when available)
    keep_checkpoints: bool = False  # copy the last checkpoint into the finished folder
    validate: bool = True
    progress: bool = True
    stop_after: int | None = None  # end (as if killed) after this many steps: for tests
    runtimes: tuple[str, ...] = ()  # also save the U-Net exported for these (`diffusia.runtime.saved_runtimes`)

    def check(self) -> None:
        if self.source not in SOURCES:
            raise DiffusiaError(f"unknown QAT data source {self.source!r}; valid: {', '.join(SOURCES)}")
        for name in ("steps", "batch", "calib_size", "calib_steps"):
            if int(getattr(self, name)) < 1:
                raise DiffusiaError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise DiffusiaError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if not self.lr > 0 or not self.lsq_lr > 0:
            raise DiffusiaError(f"learning rates must be > 0, got --lr {self.lr}, lsq lr {self.lsq_lr}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise DiffusiaError(f"--device must be cpu, cuda or auto, got {self.device!r}")


@dataclass
class QATResult:
    out: Path
    losses: list[float]
    seconds: float
    start_step: int
    info: dict[str, Any] = field(default_factory=dict)
