"""Which layers' second activation digit buys the most error per millisecond: a per-layer `w8a8x2` plan for W8A8-MSE
(the AVX2 class's question: the fastest INT8 path at <= 3 % error; with VNNI: `w8a8x2`'s 2 % for less time).

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
    python benchmarks/x2_layer_gain.py --start w8a8x2 --attention int8 --target 0.019  # the preset, fewer layers
    python benchmarks/x2_layer_gain.py --activations balanced --attention int8 --target 0.0265  # VNNI, W8A8's half
    python benchmarks/x2_layer_gain.py --render OUT/x2_layer_gain.json --target 0.027 --out OUT  # re-choose the plan

`--start w8a8x2` goes the other way: from the `w8a8x2` preset (its full-resolution blocks in two digits), each of its
layers is put back to one digit alone; the gain is the squared error that adds, the cost the time it saves; the
plans keep the top k, shrinking k until the selection error passes --target, and the plan is the smallest k within.
The fourth line grows W8A8 (balanced, int8 attention) by the few layers that leave room under half NNCF's error
for the ~2 points bf16 float layers add on OpenVINO (`backends.py` row `diffusia_w8a8_x2_grown_ov_bf16`, reading
$X2_GROWN); the fifth re-chooses a result's plan at another target among the top-k lists it measured. Writes
OUT/x2_layer_gain.{json,md} (OUT: benchmarks/results/<class>/, or --out) and, when a plan reached the target,
OUT/x2_plan_recipe.json: `diffusia quantize --recipe OUT/x2_plan_recipe.json` quantizes with it.
"""

from __future__ import annotations

import argparse
import copy
import json
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
STEP_DOWN = 4  # --start w8a8x2: plans of the preset's layers measured with 4 fewer layers each


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


def _preset_layers(unet, **recipe) -> list[str]:
    """The layers the `w8a8x2` preset (with these settings) puts in two digits."""
    from diffusia.config import load_recipe
    from diffusia.quant.policy import plan

    return [n for n, p in plan(unet, load_recipe("w8a8x2").replace(**recipe)).items() if p == "w8a8x2"]


def _ladder(start: str, n: int) -> list[int]:
    """Plan sizes measured, in order: growing from none (start w8a8), or shrinking from all n (start w8a8x2)."""
    if start == "w8a8":
        return [k for k in LADDER if k <= n]
    return list(range(n, 0, -STEP_DOWN))


def run(latent: int, target: float, threads: int, start: str = "w8a8", **recipe) -> dict:
    """`recipe`: W8A8-MSE's other settings (`activations`, `attention`), as `diffusia quantize` takes them.
    `start`: "w8a8" ranks every W8A8 layer by what its second digit buys and adds the best ones to W8A8-MSE;
    "w8a8x2" ranks the preset's two-digit layers by what their second digit buys and drops the worst ones while
    the selection error stays <= target."""
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
    base_x2 = _preset_layers(unet, **recipe) if start == "w8a8x2" else []
    a = _quantized(unet, [], data["calib"], **recipe)
    names = [n for n, m in api.qmodules(a).items() if m.precision == "w8a8"]
    b = _quantized(unet, [rule_for(names)], data["calib"], **recipe)
    one_digit = {n: a.get_submodule(n) for n in names}
    shapes = {}

    def record(name):
        def hook(module, args):  # returns None: the inputs pass unchanged
            shapes.setdefault(name, args[0].shape)

        return hook

    def with_x2(chosen) -> tuple[float, float]:
        """(selection, test) error of A with the chosen layers in two digits (A is restored after)."""
        for n in chosen:
            _swap(a, n, b.get_submodule(n))
        errors = _error(a, select, ref_select), _error(a, test, ref_test)
        for n in chosen:
            _swap(a, n, one_digit[n])
        return errors

    hooks = [a.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    w8a8_select, w8a8_test = _error(a, select, ref_select), _error(a, test, ref_test)
    for h in hooks:
        h.remove()
    for n in base_x2:
        _swap(a, n, b.get_submodule(n))
    base_select = _error(a, select, ref_select) if base_x2 else w8a8_select
    candidates = base_x2 or names
    layers = []
    for i, n in enumerate(candidates):
        one, two = one_digit[n], b.get_submodule(n)
        _swap(a, n, one if base_x2 else two)  # the one layer toggled from the base
        err = _error(a, select, ref_select)
        _swap(a, n, two if base_x2 else one)
        gain = err**2 - base_select**2 if base_x2 else base_select**2 - err**2  # squared error its 2nd digit removes
        cost = _ms(two, shapes[n]) - _ms(one, shapes[n])
        layers.append({"layer": n, "gain": gain, "cost_ms": cost, "error": err})
        print(f"[{i + 1}/{len(candidates)}] {n}: {err:.4%} ({cost:+.2f} ms)", flush=True)
    for n in base_x2:
        _swap(a, n, one_digit[n])
    ranked = sorted(layers, key=lambda r: -r["gain"] / max(r["cost_ms"], 0.05))
    plans = []
    for k in _ladder(start, len(ranked)):
        chosen = [r["layer"] for r in ranked[:k]]
        select_error, test_error = with_x2(chosen)
        cost = sum(r["cost_ms"] for r in ranked[:k])
        plans.append(
            {"k": k, "layers": chosen, "cost_ms": cost, "select_error": select_error, "test_error": test_error}
        )
        print(f"top {k}: select {select_error:.4%}, test {test_error:.4%}", flush=True)
        if (select_error <= target) == (start == "w8a8"):  # growing: reached; shrinking: went past
            break
    result = {
        **result_header(model="sd15-arch", latent=latent, threads=threads, torch=torch.__version__),
        "start": start,
        "recipe": {"preset": "w8a8", "calibrator": "mse", **recipe},
        "selection_inputs": [list(s) for s in SELECTION],
        "w8a8_mse": {"select_error": w8a8_select, "test_error": w8a8_test},
        "start_select_error": base_select,
        "layers": ranked,
        "plans": plans,
    }
    return choose(result, target)


def choose(r: dict, target: float) -> dict:
    """Result `r` with its plan: the smallest top-k list it measured whose selection error is <= target (None if
    none is). Growing stops at the first list that reaches its target, so a later, looser one chooses among those."""
    within = [p for p in r["plans"] if p["select_error"] <= target]
    best = min(within, key=lambda p: p["k"]) if within else None
    return {**r, "target": target, "plan": best and _as_plan(best)}


def _as_plan(top_k: dict) -> dict:
    """A measured top-k list as a plan: its layers, errors and the rule that quantizes them."""
    return {**top_k, "rule": rule_for(top_k["layers"])}


def measured_plan(r: dict, top: int | None = None) -> dict | None:
    """Result `r`'s plan, or with `top` the top-`top` list it measured as one (its layers, errors and rule)."""
    if top is None:
        return r["plan"]
    plans = [p for p in r["plans"] if p["k"] == top]
    if not plans:
        raise SystemExit(f"no top-{top} list in this layer ranking: it measured {[p['k'] for p in r['plans']]}")
    return _as_plan(plans[0])


def plan_settings(r: dict) -> dict:
    """What W8A8-MSE needs besides its preset to be the plan of result `r`: the plan's rule, and the activations
    and attention it was measured with (results from before those options: the defaults)."""
    recipe = r.get("recipe", {})
    return {
        "rules": (r["plan"]["rule"],),
        "activations": recipe.get("activations", "auto"),
        "attention": recipe.get("attention", "float"),
    }


def plan_recipe(r: dict):
    """The plan as a recipe file's content (`diffusia quantize --recipe x2_plan_recipe.json`): W8A8-MSE with the
    plan's layers in two digits and the activations and attention it was measured with."""
    from diffusia.config import load_recipe

    settings = plan_settings(r)
    name = f"w8a8x2-plan-{r['class']}-{r['plan']['k']}"
    return load_recipe("w8a8", rules=list(settings.pop("rules"))).replace(name=name, calibrator="mse", **settings)


def write(out: Path, r: dict) -> None:
    """OUT/x2_layer_gain.{json,md}, and the plan's recipe as OUT/x2_plan_recipe.json when there is a plan."""
    from diffusia.fileio import write_text

    write_results(out / "x2_layer_gain", r, render(r))
    if r["plan"]:
        write_text(out / "x2_plan_recipe.json", plan_recipe(r).to_json() + "\n")


def _settings(r: dict) -> str:
    recipe = r.get("recipe", {})  # results before --activations/--attention: the defaults
    return f"activations {recipe.get('activations', 'auto')}, attention {recipe.get('attention', 'float')}"


def _start_line(r: dict) -> str:
    if r.get("start") != "w8a8x2":
        return "Layers ranked by the squared error their second digit removes from W8A8-MSE, per millisecond."
    n = len(r["layers"])
    return (
        f"Start: the `w8a8x2` preset's {n} two-digit layers (selection error {r['start_select_error']:.2%}); each"
        " ranked by the squared error it adds back when it alone takes one digit, per millisecond saved; the plans"
        " keep the top k."
    )


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
        _start_line(r),
        "",
        "| top k layers in two digits | est. added ms | selection error | test error |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['k']} | {p['cost_ms']:.1f} | {p['select_error']:.2%} | {p['test_error']:.2%} |" for p in r["plans"]
    ]
    plan = r["plan"]
    lines += ["", f"Plan (selection error <= {r['target']:.2%}): " + (f"top {plan['k']}" if plan else "none reached")]
    toggled = "one digit (from the preset)" if r.get("start") == "w8a8x2" else "two digits (from W8A8-MSE)"
    lines += ["", f"| rank | layer | error with it in {toggled} | gain (squared) | cost ms |", "|---|---|---|---|---|"]
    lines += [
        f"| {i + 1} | {x['layer']} | {x['error']:.3%} | {x['gain']:.2e} | {x['cost_ms']:.2f} |"
        for i, x in enumerate(r["layers"][:40])
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument(
        "--target", type=float, help="selection error of the plan (default 2.8 %%; with --render: re-chooses it)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--activations", default="auto", help="as diffusia quantize --activations (e.g. balanced)")
    ap.add_argument("--attention", default="float", help="as diffusia quantize --attention (float or int8)")
    ap.add_argument(
        "--start", choices=("w8a8", "w8a8x2"), default="w8a8", help="grow from W8A8-MSE, or shrink the preset"
    )
    ap.add_argument("--out", type=Path, default=results_dir())
    ap.add_argument("--render", type=Path, help="only rewrite the report and recipe from this result JSON (into --out)")
    args = ap.parse_args()
    if args.render:
        r = json.loads(args.render.read_text())
        write(args.out, r if args.target is None else choose(r, args.target))
        return
    recipe = dict(activations=args.activations, attention=args.attention)
    target = 0.028 if args.target is None else args.target
    write(args.out, run(args.latent, target, args.threads, args.start, **recipe))


if __name__ == "__main__":
    main()
