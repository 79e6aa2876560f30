"""Does SmoothQuant lower diffusia's W8A8 error? NNCF applies it to transformer models (`model_type=TRANSFORMER`);
diffusia does not. Per input channel j of a linear, s_j = max|x_j|^alpha / max|W_:j|^(1-alpha) moves the
activations' range into the weights: x_j / s_j, W_:j * s_j, the same product in float. Only where the division can
be folded into the op before, so it costs nothing at run time, in every transformer block of the U-Net:
- `norm1` -> `attn1.to_q/to_k/to_v`, `norm2` -> `attn2.to_q`, `norm3` -> `ff.net.0.proj` (the LayerNorm's affine);
- `to_v` -> `to_out.0` of both attentions (a channel of the attention's output is that channel of V, mixed);
- the GEGLU's value half of `ff.net.0.proj` -> `ff.net.2` (value * gelu(gate) is linear in the value).
Activation maxima from a float pass over the calibration inputs; the smoothed float U-Net is checked to compute
what the original does; then W8A8-MSE as `bias_correction.py` measures it (same inputs, diffusia's kernels).

    python benchmarks/smooth_quant.py                          # sd15-arch 32x32, W8A8-MSE balanced, int8 attention
    python benchmarks/smooth_quant.py --model tiny --activations auto --attention float
Writes benchmarks/results/<class>/smooth_quant_<model>.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


def smoothing_pairs(unet: nn.Module) -> list[tuple[nn.Module, slice | None, list[nn.Linear]]]:
    """(producer, its output rows to scale or None for all, consumer linears) of every foldable pair."""
    from diffusers.models.attention import BasicTransformerBlock

    pairs = []
    for block in unet.modules():
        if not isinstance(block, BasicTransformerBlock):
            continue
        a1, a2, proj = block.attn1, block.attn2, block.ff.net[0].proj
        pairs += [(block.norm1, None, [a1.to_q, a1.to_k, a1.to_v]), (block.norm3, None, [proj])]
        if a2 is not None:
            pairs += [(block.norm2, None, [a2.to_q]), (a2.to_v, None, [a2.to_out[0]])]
        pairs += [(a1.to_v, None, [a1.to_out[0]]), (proj, slice(0, proj.out_features // 2), [block.ff.net[2]])]
    return pairs


def input_maxima(unet: nn.Module, consumers: list[nn.Linear], calib: list) -> dict[nn.Linear, torch.Tensor]:
    """max |x_j| per input channel of each consumer over the calibration inputs (float pass)."""
    maxima: dict = {}

    def record(module, inputs):
        x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
        maxima[module] = x if module not in maxima else torch.maximum(maxima[module], x)

    hooks = [c.register_forward_pre_hook(record) for c in consumers]
    try:
        with torch.no_grad():
            for x in calib:
                unet(*x)
    finally:
        for h in hooks:
            h.remove()
    return maxima


def smooth(unet: nn.Module, calib: list, alpha: float) -> int:
    """Apply SmoothQuant with `alpha` to every foldable pair of `unet` in place; returns how many pairs."""
    pairs = smoothing_pairs(unet)
    maxima = input_maxima(unet, [c for _, _, consumers in pairs for c in consumers], calib)
    with torch.no_grad():
        for producer, rows, consumers in pairs:
            act = torch.stack([maxima[c] for c in consumers]).amax(0)
            weight = torch.stack([c.weight.abs().amax(0) for c in consumers]).amax(0)
            s = (act.clamp(min=1e-5) ** alpha / weight.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
            for c in consumers:
                c.weight.mul_(s)
            rows = rows or slice(0, producer.weight.shape[0])
            producer.weight[rows].div_(s.view(-1, *([1] * (producer.weight.dim() - 1))))
            if producer.bias is not None:
                producer.bias[rows].div_(s)
    return len(pairs)


def main() -> None:
    from _w8a8_error import frozen_error, parser, setup, write
    from backends import rel_l2

    ap = parser(__doc__)
    ap.add_argument("--alphas", default="0.5,0.75", help="migration strengths, comma list")
    args = ap.parse_args()
    recipe, base, timed, calib, reference = setup(args)
    rows = {"none": {"pairs": 0, "float_change": 0.0, "rel_l2": frozen_error(base, recipe, calib, timed, reference)}}
    print("none", rows["none"], flush=True)
    for alpha in (float(a) for a in args.alphas.split(",")):
        row = {}

        def prepare(unet, alpha=alpha, row=row):
            row["pairs"] = smooth(unet, calib, alpha)
            with torch.no_grad():
                row["float_change"] = rel_l2(unet(*timed).sample, reference)  # float-equivalent: ~1e-6

        row["rel_l2"] = frozen_error(base, recipe, calib, timed, reference, before=prepare)
        rows[f"alpha {alpha:g}"] = row
        print(alpha, row, flush=True)
    table = ["| SmoothQuant | pairs smoothed | float change | rel-L2 vs FP32 |", "|---|---|---|---|"]
    table += [
        f"| {name} | {r['pairs']} | {r['float_change']:.1e} | {r['rel_l2'] * 100:.3f} % |" for name, r in rows.items()
    ]
    note = " *float change*: the smoothed float U-Net against the original (folding is exact up to rounding)."
    write(args, "smooth_quant", "SmoothQuant before W8A8-MSE", rows, table, note)


if __name__ == "__main__":
    main()
