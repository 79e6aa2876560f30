"""Time one training step (U-Net + text encoder, forward + backward, batch 64) of the `tiny` architecture for
different attention-head layouts, and the share of attention in it (torch.profiler). The reason `tiny` uses heads
16 wide: 8 heads of width 4 made flash attention on CPU dominate the step.

    python benchmarks/train_step.py        # ~2 min on 2 cores
Writes benchmarks/results/<class>/train_step.json and .md.
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import results_dir  # noqa: E402  (benchmarks/ is on sys.path when run)
from torch.profiler import profile

from diffusia.fileio import write_json, write_text
from diffusia.models.architectures import TINY_TEXT, TINY_UNET, TINY_VAE, build_components
from diffusia.quant import cpu

RESULTS = results_dir()
HEADS = {"8 heads everywhere (SD v1.5's setting; width 4-16)": 8, "width 16 (2, 4, 6, 8 heads; shipped)": (2, 4, 6, 8)}


def measure(heads, batch: int, reps: int) -> dict:
    parts = build_components(dict(TINY_UNET, attention_head_dim=heads), TINY_VAE, TINY_TEXT)
    unet, text = parts["unet"].train(), parts["text_encoder"].train()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(batch, 4, 16, 16, generator=g), torch.randint(0, 1000, (batch,), generator=g)
    ids = torch.randint(0, 49000, (batch, 77), generator=g)

    def step() -> None:
        unet(x, t, text(ids).last_hidden_state).sample.square().mean().backward()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    seconds = (time.perf_counter() - t0) / reps
    with profile() as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    attn = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    return {"seconds_per_step": seconds, "attention_share": attn / total}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "train_step"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {name: measure(h, args.batch, args.reps) for name, h in HEADS.items()}
    res = {
        "batch": args.batch,
        "threads": args.threads,
        "cpu": cpu.cpu_model(),
        "torch": torch.__version__,
        "load_average": list(__import__("os").getloadavg()),
        "rows": rows,
    }
    write_json(args.out + ".json", res)
    lines = [
        f"# `tiny` training step (batch {args.batch}, {args.threads} threads, {res['cpu']}, torch {res['torch']}, "
        f"load average {res['load_average'][0]:.1f})",
        "",
        "| attention heads | s/step | attention share |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {r['seconds_per_step']:.2f} | {r['attention_share']:.0%} |" for n, r in rows.items()]
    write_text(args.out + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
