"""The loss curve of a QAT run as a PNG (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def running_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (the first points average what exists)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_loss_curve(losses: Sequence[float], path: str | Path, title: str = "QAT loss", ylabel: str = "loss") -> Path:
    """Per-step loss and its running mean (window: 5% of the run, at least 10 steps), log scale when positive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffusia.fileio import atomic_path

    path = Path(path)
    steps = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    try:
        if len(losses):
            ax.plot(steps, losses, lw=0.8, alpha=0.35, color="tab:blue", label="per step")
            window = min(len(losses), max(10, len(losses) // 20))
            if window > 1:
                ax.plot(steps, running_mean(losses, window), lw=1.8, color="tab:blue", label=f"running mean ({window})")
            if min(losses) > 0:
                ax.set_yscale("log")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
