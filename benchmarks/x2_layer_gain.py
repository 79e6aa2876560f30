"""Which layers' second activation digit buys the most error per millisecond: a per-layer `w8a8x2` plan for W8A8-MSE
on diffusia's PyTorch kernels (the AVX2 class's question: the fastest INT8 path at <= 3 % error).

On the SD v1.5 U-Net (random weights) with `backends.py`'s inputs (the same 4 calibration inputs; its timed input is
the test input), two copies are quantized and calibrated: W8A8-MSE everywhere (A) and every one of A's W8A8 layers in
two digits (B). Calibration observes the float model, so a layer of B put into A is exactly what calibrating A with
that layer in `w8a8x2` gives. Per layer:
- *gain*: the drop of A's squared relative error when that one layer takes B's module, on four SELECTION inputs
  (other seeds and timesteps than the test input, so the plan is not fitted to the input it is judged on);
- *cost*: B's module time minus A's on the layer's input shape (median, torch.utils.benchmark).
Layers are ranked by gain per cost; the plans of the top k layers are measured (selection and test error, the sum of
their costs), and the plan is the smallest k whose selection error is <= --target. Its rule, exact layer names,
goes to `diffusia quantize --rule`; `backends.py`'s rows `diffusia_w8a8_mse_x2_plan` (PyTorch kernels) and
`diffusia_w8a8_mse_x2_plan_ov[_bf16]` (OpenVINO) time it with the same activations and attention (reading this
result's JSON, or $X2_PLAN). The layer costs are single-layer timings, not a step: a timed run decides.

    DIFFUSIA_CPU=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/x2_layer_gain.py  # ~30 min
    python benchmarks/x2_layer_gain.py --activations balanced --attention int8 --target 0.02  # VNNI, w8a8x2's 2 %
Writes OUT/x2_layer_gain.{json,md} (OUT: benchmarks/results/<class>/, or --out).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402
import torch  # noqa: E402
from _results import result_header, results_dir, write_results  # noqa: E402
from torch.utils.benchmark import Timer  # noqa: E402

# (seed, timestep): the inputs the plan is chosen on. A random-weight W8A8 network moves by ~1e-5 of squared error
# whenever one layer's rounding changes (ties), so single-layer gains are noisy: four inputs average some of it out.
SELECTION = ((300, 850), (301, 600), (302, 350), (303, 100))
LADDER = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 74)  # top-k plans measured; 74: the preset's two-digit layers


def rule_for(names: list[str]) -> str:
    """The `--rule` that puts exactly these layers in two digits."""
    return "re:^(" + "|".join(re.escape(n) for n in names) + ")$=w8a8x2"


def _quantized(unet, rules: list[str], calib, **recipe) -> torch.nn.Module:
    from diffusia.config import load_recipe
    from diffusia.quant import api

    q = copy.deepcopy(unet)
    api.quantize(q, load_recipe("w8a8", rules=rules).replace(calibrator="mse", **recipe))
    with api.calibrate(q):
        for c in calib:
            q(*c)
    api.freeze(q)
    return q


def _error(q, inputs, refs) -> float:
    """Relative L2 error pooled over the inputs."""
    with torch.no_grad():
        num = sum(float((q(*x).sample - r).square().sum()) for x, r in zip(inputs, refs, strict=True))
    return (num / sum(float(r.square().sum()) for r in refs)) ** 0.5


def _swap(model, name: str, module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, module)


def _ms(module, shape) -> float:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        module(x)
        return Timer("m(x)", globals={"m": module, "x": x}).blocked_autorange(min_run_time=0.3).median * 1e3


def run(latent: int, target: float, threads: int, **recipe) -> dict:
    """`recipe`: W8A8-MSE's other settings (`activations`, `attention`), as `diffusia quantize` takes them."""
    from diffusia.quant import api

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work:
        backends.make_inputs("sd15-arch", latent, 4, Path(work))
        data = torch.load(Path(work) / "inputs.pt")
        unet = backends.load_unet("sd15-arch", Path(work))
    select = [backends.gaussian_input(s, t, latent) for s, t in SELECTION]
    test = [data["timed"]]
    with torch.no_grad():
        ref_select, ref_test = [unet(*x).sample for x in select], [unet(*x).sample for x in test]
    a = _quantized(unet, [], data["calib"], **recipe)
    names = [n for n, m in api.qmodules(a).items() if m.precision == "w8a8"]
    b = _quantized(unet, [rule_for(names)], data["calib"], **recipe)
    shapes = {}

    def record(name):
        def hook(module, args):  # returns None: the inputs pass unchanged
            shapes.setdefault(name, args[0].shape)

        return hook

    hooks = [a.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    base_select, base_test = _error(a, select, ref_select), _error(a, test, ref_test)
    for h in hooks:
        h.remove()
    layers = []
    for i, n in enumerate(names):
        one, two = a.get_submodule(n), b.get_submodule(n)
        _swap(a, n, two)
        err = _error(a, select, ref_select)
        _swap(a, n, one)
        cost = _ms(two, shapes[n]) - _ms(one, shapes[n])
        layers.append({"layer": n, "gain": base_select**2 - err**2, "cost_ms": cost, "error": err})
        print(f"[{i + 1}/{len(names)}] {n}: {err:.4%} (+{cost:.2f} ms)", flush=True)
    ranked = sorted(layers, key=lambda r: -r["gain"] / max(r["cost_ms"], 0.05))
    plans = []
    for k in [k for k in LADDER if k <= len(ranked)]:
        chosen = [r["layer"] for r in ranked[:k]]
        originals = {n: a.get_submodule(n) for n in chosen}
        for n in chosen:
            _swap(a, n, b.get_submodule(n))
        plans.append(
            {
                "k": k,
                "layers": chosen,
                "cost_ms": sum(r["cost_ms"] for r in ranked[:k]),
                "select_error": _error(a, select, ref_select),
                "test_error": _error(a, test, ref_test),
            }
        )
        for n, m in originals.items():
            _swap(a, n, m)
        print(f"top {k}: select {plans[-1]['select_error']:.4%}, test {plans[-1]['test_error']:.4%}", flush=True)
        if plans[-1]["select_error"] <= target:
            break
    best = next((p for p in plans if p["select_error"] <= target), None)
    return {
        **result_header(model="sd15-arch", latent=latent, threads=threads, torch=torch.__version__),
        "target": target,
        "recipe": {"preset": "w8a8", "calibrator": "mse", **recipe},
        "selection_inputs": [list(s) for s in SELECTION],
        "w8a8_mse": {"select_error": base_select, "test_error": base_test},
        "layers": ranked,
        "plans": plans,
        "plan": best and {**best, "rule": rule_for(best["layers"])},
    }


def _settings(r: dict) -> str:
    recipe = r.get("recipe", {})  # results before --activations/--attention: the defaults
    return f"activations {recipe.get('activations', 'auto')}, attention {recipe.get('attention', 'float')}"


def render(r: dict) -> str:
    caps = ", ".join(f"{k}={v}" for k, v in r["isa_caps"].items()) or "none"
    lines = [
        f"# Second activation digit per layer: sd15-arch (random weights), latent {r['latent']}x{r['latent']}, batch 2",
        "",
        f"{r['cpu']} (class `{r['class']}`, instruction-set caps: {caps}), {r['threads']} threads, torch {r['torch']},"
        f" {r['date']}. W8A8-MSE ({_settings(r)}) on diffusia's PyTorch kernels: selection error {r['w8a8_mse']['select_error']:.2%}"
        f" (inputs (seed, t) {r['selection_inputs']}), test error {r['w8a8_mse']['test_error']:.2%} (`backends.py`'s"
        " timed input). Costs are single-layer timings (two digits minus one), not a step.",
        "",
        "| top k layers | est. added ms | selection error | test error |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['k']} | {p['cost_ms']:.1f} | {p['select_error']:.2%} | {p['test_error']:.2%} |" for p in r["plans"]
    ]
    plan = r["plan"]
    lines += ["", f"Plan (selection error <= {r['target']:.1%}): " + (f"top {plan['k']}" if plan else "none reached")]
    lines += ["", "| rank | layer | error with it in two digits | gain (squared) | cost ms |", "|---|---|---|---|---|"]
    lines += [
        f"| {i + 1} | {x['layer']} | {x['error']:.3%} | {x['gain']:.2e} | {x['cost_ms']:.2f} |"
        for i, x in enumerate(r["layers"][:40])
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--target", type=float, default=0.028, help="selection error of the plan (default 2.8 %%)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--activations", default="auto", help="as diffusia quantize --activations (e.g. balanced)")
    ap.add_argument("--attention", default="float", help="as diffusia quantize --attention (float or int8)")
    ap.add_argument("--out", type=Path, default=results_dir())
    args = ap.parse_args()
    r = run(args.latent, args.target, args.threads, activations=args.activations, attention=args.attention)
    write_results(args.out / "x2_layer_gain", r, render(r))


if __name__ == "__main__":
    main()
