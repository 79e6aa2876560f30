"""Does empirical bias correction lower diffusia's W8A8 error? NNCF runs a bias correction after quantizing (its
"Fast Bias correction"); diffusia has none. Per W8A8 layer, the mean per output channel of (quantized output -
float output) over the calibration inputs is subtracted from the layer's bias (a bias is added where the layer has
none), which costs nothing at run time. Two ways to measure that mean:
- `float-input`: each layer's quantized and float outputs on the float model's input to that layer (per layer);
- `sequential`: in one pass of the fake-quantized model over all calibration inputs at once, each layer's
  fake-quantized output against its float output on the same (already quantized upstream) input, corrected before
  the next layer sees it, so the shift that accumulates downstream is corrected too.
Then the U-Net is frozen (diffusia's real kernels) and its rel-L2 against FP32 measured on `backends.py`'s timed
input, with its calibration inputs.

    python benchmarks/bias_correction.py                          # sd15-arch 32x32, W8A8-MSE balanced, int8 attention
    python benchmarks/bias_correction.py --model tiny --activations auto --attention float
Writes benchmarks/results/<class>/bias_correction_<model>.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("none", "float-input", "sequential")


def channel_mean_shift(module, x: torch.Tensor, out: torch.Tensor, sequential: bool) -> tuple[torch.Tensor, int]:
    """Sum over all but the channel dim of (quantized - float output) of `module` on input `x`, and the count."""
    if sequential:  # `out` is fake-quantized: compare with the float op on the same input
        diff = out - module._float_op(x, module.weight, module.bias)
    else:  # `out` is float: compare with the fake-quantized op on the same input
        spec = module.spec
        xq = spec.fake_quant_act(x, *module.act_qparams(module.group), module.settings.act_qmax)
        diff = module._float_op(xq, spec.fake_quant_weight(module.weight, module.settings), module.bias) - out
    channel = 1 if diff.dim() == 4 else diff.dim() - 1
    dims = [d for d in range(diff.dim()) if d != channel]
    return diff.double().sum(dims), diff.numel() // diff.shape[channel]


def correct_biases(unet, calib: list, sequential: bool) -> int:
    """Subtract each W8A8 layer's mean output shift from its bias; returns how many layers were corrected."""
    from diffusia.quant import api

    sums: dict = {}
    counts: dict = {}
    layers = {n: m for n, m in api.qmodules(unet).items() if m.spec.act_digits}

    def hook(name):
        def record(module, inputs, out):
            total, count = channel_mean_shift(module, inputs[0], out, sequential)
            sums[name] = sums.get(name, 0) + total
            counts[name] = counts.get(name, 0) + count
            if sequential:  # downstream layers see this layer corrected
                channel = 1 if out.dim() == 4 else out.dim() - 1
                shape = [1] * out.dim()
                shape[channel] = -1
                return out - (total / count).float().view(shape)
            return None

        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    api.enable_fake_quant(unet, sequential)
    try:
        with torch.no_grad():
            if sequential:
                unet(*[torch.cat(parts) for parts in zip(*calib, strict=True)])
            else:
                for x in calib:
                    unet(*x)
    finally:
        for h in hooks:
            h.remove()
        api.enable_fake_quant(unet, False)
    for name, m in layers.items():
        shift = (sums[name] / counts[name]).float()
        if m.bias is None:
            m.bias = torch.nn.Parameter(-shift, requires_grad=False)
        else:
            m.bias.data -= shift
    return len(layers)


def main() -> None:
    from _w8a8_error import frozen_error, parser, setup, write

    args = parser(__doc__).parse_args()
    recipe, base, timed, calib, reference = setup(args)
    rows = {}
    for mode in MODES:
        corrected = []

        def correct(unet, mode=mode, corrected=corrected):
            corrected.append(correct_biases(unet, calib, sequential=mode == "sequential"))

        error = frozen_error(
            base, recipe, calib, timed, reference, after_calibration=None if mode == "none" else correct
        )
        rows[mode] = {"corrected_layers": sum(corrected), "rel_l2": error}
        print(mode, rows[mode], flush=True)
    table = ["| bias correction | layers corrected | rel-L2 vs FP32 |", "|---|---|---|"]
    table += [f"| {mode} | {r['corrected_layers']} | {r['rel_l2'] * 100:.3f} % |" for mode, r in rows.items()]
    write(args, "bias_correction", "Bias correction of W8A8-MSE", rows, table)


if __name__ == "__main__":
    main()
