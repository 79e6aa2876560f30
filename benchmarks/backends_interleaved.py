"""The OpenVINO rows of `backends.py` (and diffusia's PyTorch-kernel rows) timed interleaved in ONE process: every
round calls each row in a seeded shuffled order (twice in a row, the second call timed), so a shift of the
machine's speed (this shared VM moves by up to 15 % between minutes and between processes, while one row's calls
agree to 1-3 %) hits every row of a round alike. Each diffusia row is compared with every NNCF row of the run
(INT8 or weight-compressed, whichever it times) and the fastest of them by the ratio of their calls *in the same
round* (paired), so the spread of those ratios is the measurement's own.

    python benchmarks/backends_interleaved.py --model sd15-arch --rounds 30 \\
        --only nncf_int8_transformer,nncf_int8_transformer_bf16,diffusia_w8a8_balanced_attn8_ov \\
        --out benchmarks/results/<class>/interleaved

Rows, inputs, calibration and artifacts are those of `backends.py` (same builders, same 4 calibration inputs, the
same timed input): each row is built in a fresh worker process that saves its artifact, as `backends.py` does, then
ONE process loads and compiles every artifact (a diffusia runtime row through `diffusia.runtime`, a PyTorch-kernel
row from its safetensors and quantization map, as the product loads them) and times them; rel-L2 of the reloaded
artifact against the FP32 eager output of that input. What differs from `backends.py`: the rows are timed in one
process (no peak RSS per row), every row compiled in memory while the others run: at sd15-arch a weight-only
or FP32 row holds several GB (OpenVINO widens their convolutions to f32: README, "In memory"), and six such rows
(FP32, two NNCF, three diffusia weight-only) outgrew 24 GiB and were OOM-killed (2026-12-07), so time them in
smaller sets. Writes OUT/interleaved_<model>_<latent>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402  (benchmarks/ is on sys.path when run)
from _results import quartiles, result_header, results_dir, write_results  # noqa: E402


def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def build(name: str, model: str, work: Path, threads: int) -> None:
    """Worker (fresh process per row): build the row with its `backends.py` builder from a fresh U-Net, save the
    artifact and write what `load_rows` needs to WORK/NAME.built.json; the first worker saves the FP32 reference."""
    import json

    import torch
    from _backends_peers import BACKENDS, Ctx

    torch.set_num_threads(threads)
    data = torch.load(work / "inputs.pt")
    builder, kind = BACKENDS[name]
    unet = backends.load_unet(model, work)
    if not (work / "ref_fp32.pt").is_file():
        with torch.no_grad():
            torch.save(unet(*data["timed"], return_dict=False)[0], work / "ref_fp32.pt")
    config = dict(unet.config)
    ctx = Ctx(calib=data["calib"], out=work / name, cache=work, threads=threads, calibrator="preset")
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        built = builder(unet, ctx)
    if not built.reload:
        raise SystemExit(f"{name}: its builder records no reloadable artifact (Built.reload)")
    nbytes = sum(p.stat().st_size for p in built.files)
    if "folder" in built.reload:  # a runtime folder: the rest (diffusia's safetensors) would fill the disk
        for p in ctx.out.iterdir():
            if p != Path(built.reload["folder"]):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    row = {
        "kind": kind,
        "notes": built.notes,
        "build_s": round(time.perf_counter() - t0, 1),
        "bytes": nbytes,
        "reload": built.reload,
        "config": config,
    }
    (work / f"{name}.built.json").write_text(json.dumps(row, default=str))


def build_rows(model: str, names: list[str], work: Path, threads: int) -> dict[str, Any]:
    """Each row built in its own worker process, one after another; returns their records by name."""
    import json
    import subprocess

    rows = {}
    for name in names:
        cmd = [sys.executable, __file__, "--build", name, "--work", str(work), "--model", model]
        log = work / f"{name}.build.log"
        with open(log, "w") as f:
            proc = subprocess.run([*cmd, "--threads", str(threads)], stdout=f, stderr=subprocess.STDOUT, check=False)
        if proc.returncode:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise SystemExit(f"building {name} failed (exit {proc.returncode}): {tail[0] if tail else ''}")
        rows[name] = json.loads((work / f"{name}.built.json").read_text())
        print(f"built {name} in {rows[name]['build_s']:.0f} s", flush=True)
    return rows


def _quantized_torch_unet(config: dict, spec: dict):
    import json

    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from diffusia.quant import api

    unet = UNet2DConditionModel.from_config(config).eval()
    qmap = json.loads(Path(spec["quantization_map"]).read_text())
    return api.load_quantized_state(unet, qmap, load_file(spec["safetensors"]))


def load_rows(rows: dict[str, Any], work: Path, threads: int) -> tuple[dict, Any]:
    """This process loads and compiles every saved artifact, warms each up and records its rel-L2; returns (the
    runners by name, the timed input)."""
    import torch
    from _backends_openvino import compiled
    from diffusers.configuration_utils import FrozenDict

    from diffusia.runtime import load_unet

    timed, ref = torch.load(work / "inputs.pt")["timed"], torch.load(work / "ref_fp32.pt")
    runners = {}
    for name, row in rows.items():
        spec = row["reload"]
        if "ir" in spec:
            run = compiled(Path(spec["ir"]), threads, spec["precision"], spec.get("dynamic_quantization", False))
        elif "safetensors" in spec:  # diffusia's PyTorch kernels, loaded as the product loads its U-Net
            qunet = _quantized_torch_unet(row["config"], spec)
            run = lambda x, u=qunet: u(*x, return_dict=False)[0]  # noqa: E731
        else:
            config, arena = FrozenDict(row["config"]), spec.get("arena")
            ru = load_unet(spec["runtime"], spec["folder"], config, threads, spec["precision"], arena)
            run = lambda x, ru=ru: ru(*x, return_dict=False)[0]  # noqa: E731
        with torch.no_grad():
            out = run(timed)
            run(timed)
        row.update(rel_l2=backends.rel_l2(out, ref), finite=bool(torch.isfinite(out).all()))
        runners[name] = run
        print(f"loaded {name}: rel-L2 {100 * row['rel_l2']:.2f} %", flush=True)
    return runners, timed


def interleave(runners: dict, timed, rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds of each row's call in every round; the order of the rows is shuffled anew each round, and each row
    is called twice in a row, the second call timed (the first brings its threads and caches back, as a pipeline's
    back-to-back U-Net calls have them)."""
    import torch

    rng, names = random.Random(seed), list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(rounds):
            rng.shuffle(names)
            for n in names:
                runners[n](timed)
                t0 = time.perf_counter()
                runners[n](timed)
                times[n].append(time.perf_counter() - t0)
    return times


def _paired(times: list[float], peer: list[float]) -> dict[str, float]:
    """Quartiles of the per-round ratios of two rows' calls."""
    return dict(zip(("q1", "median", "q3"), quartiles([a / b for a, b in zip(times, peer)])))


def summarize(rows: dict[str, Any], times: dict[str, list[float]], against: str | None = None) -> dict[str, Any]:
    """Per row its quartiles of step ms; per diffusia row its paired step ratios to every NNCF row, and the count
    of rounds at or under 1.0 against the fastest one (the issue's reference); with `against` (a row), every other
    row's paired step ratio to it (an experiment against the product's row)."""
    for name, row in rows.items():
        row["times_ms"] = [round(1e3 * t, 2) for t in times[name]]
        row["step_ms"] = dict(zip(("q1", "median", "q3"), quartiles(row["times_ms"])))
    nncf = [n for n in rows if n.startswith("nncf_")]
    best = min(nncf, key=lambda n: rows[n]["step_ms"]["median"]) if nncf else None
    for name, row in rows.items():
        if best and name.startswith("diffusia"):
            row["versus"] = {
                p: {"step_ratio": _paired(times[name], times[p]), "error_ratio": row["rel_l2"] / rows[p]["rel_l2"]}
                for p in nncf
            }
            row["rounds_at_or_under_fastest"] = sum(a <= b for a, b in zip(times[name], times[best]))
        if against and name != against:
            row["versus_against"] = _paired(times[name], times[against])
    return {"fastest_nncf": best, "nncf": nncf, "rows": rows, "against": against}


def _caps_line(res: dict[str, Any]) -> list[str]:
    caps = res.get("isa_caps")
    if not caps:
        return []
    named = ", ".join(f"`{k}={v}`" for k, v in caps.items())
    return ["", f"**Instruction sets capped** ({named}): an emulation of that class on this CPU, not that machine."]


def markdown(res: dict[str, Any]) -> str:
    rows, n = res["rows"], res["rounds"]
    lines = [
        f"# Interleaved rows: {res['model']}, latent {res['latent']}x{res['latent']}, batch 2, {n} rounds",
        "",
        f"{res['cpu']} (class `{res['class']}`), {res['threads']} threads, {res['versions']}; {res['date']}, load "
        f"average {res['load_avg'][0]:.2f} at the start of the timing, {res['load_avg'][1]:.2f} at its end; timing "
        f"{res['timing_s']:.0f} s. Each row built by its `backends.py` builder in a worker process (same calibration "
        "and input), then all loaded in one process and each called twice per round in a shuffled order of rows, "
        f"the second call timed. Step ms: median (IQR) of the {n} calls.",
        *_caps_line(res),
        "",
        "| backend | step ms | rel-L2 vs FP32 | disk MB | build s |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        s = r["step_ms"]
        lines.append(
            f"| {name} | {_ms(s['median'])} ({_ms(s['q1'])}-{_ms(s['q3'])}) | {100 * r['rel_l2']:.2f} %"
            f"{'' if r['finite'] else ' NON-FINITE'} | {r['bytes'] / 1e6:,.0f} | {r['build_s']:.0f} |"
        )
    best = res["fastest_nncf"]
    if best:
        lines += [
            "",
            f"Against the fastest NNCF row (`{best}`, median {_ms(rows[best]['step_ms']['median'])} ms, "
            f"{100 * rows[best]['rel_l2']:.2f} %), and against each NNCF row: the ratio of the two calls of each "
            "round, median (IQR) over the rounds, and the ratio of the errors.",
            "",
            "| diffusia row | vs fastest: step | rounds <= 1.0 | error | "
            + " | ".join(f"vs `{p}`: step, error" for p in res["nncf"])
            + " |",
            "|---|---|---|---|" + "---|" * len(res["nncf"]),
        ]
        for name, r in rows.items():
            if "versus" in r:
                cells = [
                    f"{v['step_ratio']['median']:.3f}x ({v['step_ratio']['q1']:.3f}-{v['step_ratio']['q3']:.3f})"
                    for v in (r["versus"][p] for p in [best, *res["nncf"]])
                ]
                errors = [f"{r['versus'][p]['error_ratio']:.2f}x" for p in [best, *res["nncf"]]]
                others = [f"{c}, {e}" for c, e in zip(cells[1:], errors[1:])]
                lines.append(
                    f"| {name} | {cells[0]} | {r['rounds_at_or_under_fastest']} of {n} | {errors[0]} | "
                    + " | ".join(others)
                    + " |"
                )
    if res.get("against"):
        lines += [
            "",
            f"Against `{res['against']}`: the ratio of the two calls of each round, median (IQR) over the rounds.",
            "",
            "| row | step ratio |",
            "|---|---|",
        ]
        for name, r in rows.items():
            if "versus_against" in r:
                v = r["versus_against"]
                lines.append(f"| {name} | {v['median']:.3f}x ({v['q1']:.3f}-{v['q3']:.3f}) |")
    lines += ["", "Notes per row:", ""] + [f"- `{k}`: {'; '.join(r['notes'])}" for k, r in rows.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15-arch", choices=("sd15-arch", "tiny"))
    ap.add_argument("--latent", type=int, choices=(32, 64), default=32, help="sd15-arch latent size (tiny: 16)")
    ap.add_argument("--only", help="comma list of rows of backends.py with a saved artifact (nncf_*, ov_*, diffusia_*)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--against", help="a row of --only: every other row's paired step ratio to it as well")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=4, help="calibration inputs (batch 2 each)")
    ap.add_argument("--out", type=Path, default=results_dir() / "interleaved")
    ap.add_argument("--render", type=Path, help="only rewrite the .md (and the summary) of a result .json")
    ap.add_argument("--build", help=argparse.SUPPRESS)  # worker: build this row
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build(args.build, args.model, args.work, args.threads)
        return
    if args.render:
        import json

        res = json.loads(args.render.read_text())
        times = {n: [t / 1e3 for t in r["times_ms"]] for n, r in res["rows"].items()}
        res.update(summarize(res["rows"], times, res.get("against")))
        write_results(args.render.with_suffix(""), res, markdown(res))
        return
    names = [n.strip() for n in (args.only or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in backends.backend_names()]
    if unknown or not names:
        ap.error(f"unknown backend(s) {', '.join(unknown) or '(none given)'}; valid: {backends.backend_names()}")
    unsaved = [n for n in names if not n.startswith(("nncf_", "ov_", "diffusia_"))]
    if unsaved:
        ap.error(
            f"{', '.join(unsaved)}: no saved artifact to reload (nncf_*, ov_*, diffusia_*); time it with backends.py"
        )
    if args.against and args.against not in names:
        ap.error(f"--against {args.against}: not a row of --only; give one of {', '.join(names)}")
    if args.rounds < 4:
        ap.error(f"--rounds {args.rounds}: give 4 or more (quartiles)")
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    latent = 16 if args.model == "tiny" else args.latent
    work = Path(tempfile.mkdtemp(prefix="diffusia-interleaved-"))
    try:
        backends.make_inputs(args.model, latent, args.calib, work)
        rows = build_rows(args.model, names, work, args.threads)
        runners, timed = load_rows(rows, work, args.threads)
        load = [os.getloadavg()[0]]
        t0 = time.perf_counter()
        times = interleave(runners, timed, args.rounds)
        timing_s, load = time.perf_counter() - t0, load + [os.getloadavg()[0]]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in rows.values():
        del row["config"], row["reload"]
    env = backends.environment(args.threads)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k in ("torch", "openvino", "nncf"))
    header = dict(model=args.model, latent=latent, threads=args.threads, rounds=args.rounds, versions=versions)
    res = {**result_header(**header), "load_avg": load, "timing_s": timing_s, **summarize(rows, times, args.against)}
    write_results(args.out / f"interleaved_{args.model}_{latent}", res, markdown(res))


if __name__ == "__main__":
    main()
