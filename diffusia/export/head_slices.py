"""Large float attentions traced one head at a time, for ONNX Runtime.

Exported whole, `F.scaled_dot_product_attention` becomes MatMul -> Softmax -> MatMul over [batch, heads, tokens,
tokens], and ONNX Runtime's CPU kernels hold those scores and probabilities in full: 2.1 GB for one full-resolution
attention of SD at a 64x64 latent, batch 2, where PyTorch's SDPA works a tile at a time.
Traced per head, ONNX Runtime runs the slices one after another and holds one head's. Each slice adds a few
operators, for nothing where the scores are small, so only an attention whose scores exceed `SCORES_AT_ONCE` at the
traced size (the U-Net's own sample size, batch 2) is sliced: SD's full-resolution self-attentions, none of tiny's.
Measured in benchmarks/results/vnni/onnxruntime_heads/. Not for OpenVINO: it fuses the whole pattern.

diffusia's int8 attention (`quant/attention.py`, quantized mode) computes its own matmuls and stays whole."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from diffusia.quant.attention import SCORES_AT_ONCE


def _head(t: torch.Tensor | None, i: int) -> torch.Tensor | None:
    """Head `i` of a [batch, heads, ...] tensor; a mask broadcast over heads (or absent) as it is."""
    return t if t is None or t.dim() < 4 or t.shape[1] == 1 else t[:, i : i + 1]


@contextlib.contextmanager
def one_head_at_a_time() -> Iterator[None]:
    """While open, `F.scaled_dot_product_attention` on [batch, heads, tokens, dim] inputs with more than
    `SCORES_AT_ONCE` scores computes each head on its own and concatenates them: the same values, traced as one
    MatMul -> Softmax -> MatMul per head. The head count is the model's (static), so batch and token counts stay
    dynamic in the graph; which attentions are sliced is decided at the traced shapes."""
    whole = F.scaled_dot_product_attention

    def per_head(query, key, value, attn_mask=None, *args, **kwargs):
        heads = query.shape[1] if query.dim() == 4 else 1
        same_heads = heads > 1 and key.dim() == 4 and key.shape[1] == heads and value.shape[1] == heads
        if not same_heads or query.shape[0] * heads * query.shape[2] * key.shape[2] <= SCORES_AT_ONCE:
            return whole(query, key, value, attn_mask, *args, **kwargs)
        slices = [
            whole(_head(query, i), _head(key, i), _head(value, i), _head(attn_mask, i), *args, **kwargs)
            for i in range(heads)
        ]
        return torch.cat(slices, dim=1)

    F.scaled_dot_product_attention = per_head
    try:
        yield
    finally:
        F.scaled_dot_product_attention = whole
