"""The "before" of `diffusia.export.head_slices`: diffusia's ONNX Runtime graphs with float attention traced whole,
for the benchmarks' experiment rows (runtime_exports.py, backends.py, generation_runtimes.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def attention_traced_whole() -> Iterator[None]:
    """While open, diffusia's exports trace float attention whole (one MatMul -> Softmax -> MatMul per attention)."""
    from diffusia.export import head_slices

    per_head = head_slices.one_head_at_a_time
    head_slices.one_head_at_a_time = contextlib.nullcontext
    try:
        yield
    finally:
        head_slices.one_head_at_a_time = per_head
