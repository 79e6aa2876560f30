"""Backend benchmark: one U-Net step on FP32 eager / compiled / ONNX Runtime, BF16, diffusia W8A8 / W8 / W4 and
the peers a user would pick instead, side by side. Writes benchmarks/results/<class>/backends_<model>_<latent>.{json,md}.

Run from the repo root:
    python benchmarks/backends.py                                  # tiny and sd15-arch (32x32), 2 threads
    python benchmarks/backends.py --model sd15-arch --latent 64    # SD v1.5 at 512x512-image scale
    python benchmarks/backends.py --model tiny --quick --threads 1 # smoke run
    python benchmarks/backends.py --only diffusia_w8a8,quanto_w8a8 # a subset (fp32_eager always runs)

Protocol. Every backend runs in its own fresh process (`--worker`), one after another, in the order of BACKENDS.
A worker imports its libraries, takes the RSS baseline, builds the FP32 U-Net (tiny: the shipped weights, copied
once at the start of the run; sd15-arch: the SD v1.5 architecture with seed-0 random weights), converts and saves
it the way that backend ships it (bytes on disk = those files), then times one U-Net call (batch 2 = the two guidance branches) on the same
seeded input as every other backend: one warm-up call (two for compiled backends; the first call's time is
reported, for compiled backends it is the compile time), then up to --repeats calls, stopping early once
--budget seconds are spent (at least one), median reported. Peak RSS = VmHWM growth over the post-import
baseline while running (the high-water mark is reset after conversion, so it is the converted model resident plus
the step's peak); the conversion's own peak is in the notes. Output error = relative L2 of the step's output vs
the FP32 eager output. Calibrated backends (diffusia W8A8, quanto W8A8, ONNX Runtime static INT8) see the same
--calib inputs, never the timed one: tiny uses real U-Net inputs recorded along DPM-Solver trajectories (8 steps,
2 calibration prompts, guidance 7.5); sd15-arch uses seeded Gaussian latents/text embeddings at timesteps spread
over 980..20. The last backend, `fp32_eager_end`, runs FP32 eager again: its difference from the first row shows
how much the machine's load drifted during the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import isa_caps, results_dir  # noqa: E402

RESULTS = results_dir()
log = logging.getLogger("bench_backends")

FP32_PATHS = ("fp32_eager", "fp32_compile", "ort_fp32", "ov_fp32")
NNCF_INT8 = (  # the INT8 peers of diffusia on OpenVINO
    "nncf_int8",
    "nncf_int8_transformer",
    "nncf_hybrid",
    "nncf_int8_bf16",
    "nncf_int8_transformer_bf16",
)
PREIMPORT = {
    "ort_": ("onnx", "onnxruntime", "onnxruntime.quantization"),
    "torchao": ("torchao.quantization",),
    "quanto": ("optimum.quanto",),
    "diffusia": ("diffusia.quant.api", "diffusia.quant.kernels"),
    "ov_": ("openvino",),
    "nncf": ("openvino", "nncf"),
}
VERSIONS = ("torch", "diffusers", "onnxruntime", "onnx", "torchao", "optimum-quanto", "openvino", "nncf")


def backend_names(experiments: bool = True) -> list[str]:
    """Every row in run order; without `experiments`, the rows a run without --only takes (product rows and peers)."""
    from _backends_peers import BACKENDS, EXPERIMENTS

    return [n for n in BACKENDS if experiments or n not in EXPERIMENTS]


# ---------------------------------------------------------------- inputs and model


def load_unet(model: str, workdir: Path):
    import torch
    from diffusers import UNet2DConditionModel

    from diffusia.models.architectures import SD15_UNET

    if model == "tiny":  # the run's own copy: the shipped model may be retrained while the benchmark runs
        return UNet2DConditionModel.from_pretrained(workdir / "tiny" / "unet", use_safetensors=True).eval()
    torch.manual_seed(0)  # the same U-Net as load_pipeline("sd15-arch") builds
    return UNet2DConditionModel(**SD15_UNET).eval()


def gaussian_input(seed: int, t: int, latent: int):
    """An sd15-arch U-Net input of batch 2: seeded Gaussian latents and text embeddings at timestep `t`."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, latent, latent, generator=g), torch.tensor([t, t]), torch.randn(2, 77, 768, generator=g)


def make_inputs(model: str, latent: int, n_calib: int, workdir: Path) -> dict[str, Any]:
    """The timed input and the calibration inputs, saved once per run for every worker (tiny: with a copy of the
    pipeline they come from); returns what identifies the weights."""
    import hashlib
    import shutil

    import torch

    def batch2(call):  # a recorded UnetCall (SD 1.x: no added conditioning)
        s, t, e = call.sample, call.timestep, call.encoder_hidden_states
        step = int(torch.as_tensor(t).reshape(-1)[0])
        return s.float(), torch.full((s.shape[0],), step, dtype=torch.int64), e.float()

    if model == "tiny":
        import diffusia
        from diffusia.calib.forward_loop import record_unet_inputs
        from diffusia.models.loading import TINY_DIR
        from diffusia.prompts import load_prompts

        shutil.copytree(TINY_DIR, workdir / "tiny")
        pipe = diffusia.load_pipeline(str(workdir / "tiny"), progress=False)
        prompts = load_prompts("tiny")
        calls = record_unet_inputs(pipe, prompts[:2], steps=8, progress=False)
        idx = [round(i * (len(calls) - 1) / max(n_calib - 1, 1)) for i in range(n_calib)]
        calib = [batch2(calls[i]) for i in idx]
        timed = batch2(record_unet_inputs(pipe, [prompts[-1]], steps=8, seed=42, progress=False)[4])
    else:
        timed = gaussian_input(0, 500, latent)
        calib = [gaussian_input(100 + i, round(980 - i * 960 / max(n_calib - 1, 1)), latent) for i in range(n_calib)]
    torch.save({"timed": timed, "calib": calib}, workdir / "inputs.pt")
    if model != "tiny":
        return {"weights": "random, torch.manual_seed(0) before UNet2DConditionModel(**SD15_UNET)"}
    weights = next((workdir / "tiny" / "unet").glob("*.safetensors"))
    return {
        "weights": f"diffusia/assets/tiny/unet/{weights.name}",
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }


# ---------------------------------------------------------------- worker (fresh process per backend)


def worker(task_path: Path) -> None:
    task = json.loads(task_path.read_text())
    name, threads = task["name"], task["threads"]
    import importlib

    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    import diffusers  # noqa: F401 - part of every backend's baseline
    from _backends_peers import BACKENDS, Ctx

    for prefix, mods in PREIMPORT.items():
        if name.startswith(prefix) or name.startswith("diffusia") and f"_{prefix.rstrip('_')}" in name:  # *_ov, *_ort
            for m in mods:
                importlib.import_module(m)
    from diffusia.eval.memory import PeakMemory, reset_peak_rss

    builder, kind = BACKENDS[name]
    result: dict[str, Any] = {"name": name, "kind": kind, "load_avg_start": os.getloadavg()[0]}
    mem = PeakMemory()
    try:
        data = torch.load(task["inputs"])
        out_dir = Path(task["workdir"]) / name
        out_dir.mkdir(parents=True, exist_ok=True)
        ctx = Ctx(
            calib=data["calib"],
            out=out_dir,
            cache=Path(task["workdir"]),
            threads=threads,
            calibrator=task["calibrator"],
        )
        t0 = time.perf_counter()
        unet = load_unet(task["model"], Path(task["workdir"]))
        with torch.no_grad():
            built = builder(unet, ctx)
        del unet
        gc.collect()
        result["convert_s"] = round(time.perf_counter() - t0, 1)
        result["peak_rss_convert_mb"] = round(mem.peak_mb(), 1)
        result["files"] = {p.name: p.stat().st_size for p in built.files}
        result["bytes"] = sum(result["files"].values())
        result.update(notes=built.notes, info=built.info)
        reset_peak_rss()
        result["resident_mb"] = round(mem.current_mb(), 1)
        timed = data["timed"]
        del data, ctx
        with torch.no_grad():
            t0 = time.perf_counter()
            out = built.run(timed)
            result["first_call_s"] = round(time.perf_counter() - t0, 2)
            if "compile" in name:
                built.run(timed)
            times: list[float] = []
            cpu_times: list[float] = []
            start = time.perf_counter()
            while len(times) < task["repeats"]:
                t0, c0 = time.perf_counter(), time.process_time()
                built.run(timed)
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
                if time.perf_counter() - start + times[-1] > task["budget"]:
                    break
        result["peak_rss_mb"] = round(mem.peak_mb(), 1)
        result["times_s"] = [round(t, 4) for t in times]
        result["median_ms"] = statistics.median(times) * 1e3
        result["cpu_ms"] = statistics.median(cpu_times) * 1e3  # process CPU time per call, all threads
        result["finite"] = bool(torch.isfinite(out).all())
        ref = Path(task["workdir"]) / "ref_fp32.pt"
        if name == "fp32_eager":
            torch.save(out, ref)
        result["rel_l2"] = rel_l2(out, torch.load(ref)) if ref.is_file() else None
        result["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - a failing backend is a row with its reason
        log.exception("backend %s failed", name)
        msg = str(e).strip().splitlines()
        result.update(status="failed", reason=f"{type(e).__name__}: {msg[0] if msg else ''}")
    result["load_avg_end"] = os.getloadavg()[0]
    Path(task["result"]).write_text(json.dumps(result, indent=2))


def rel_l2(a, b) -> float:
    """||a - b|| / ||b||, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def run_worker(task: dict[str, Any], timeout: float) -> dict[str, Any]:
    wd = Path(task["workdir"])
    task_path, result_path = wd / f"{task['name']}.task.json", wd / f"{task['name']}.result.json"
    task["result"] = str(result_path)
    task_path.write_text(json.dumps(task))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(task["threads"]),
        "MKL_NUM_THREADS": str(task["threads"]),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TORCHINDUCTOR_CACHE_DIR": str(wd / f"inductor_{task['name']}"),
    }  # cold compile every run
    logf = wd / f"{task['name']}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(task_path)]
    try:
        with open(logf, "w") as f:
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": task["name"], "status": "failed", "reason": f"timed out after {timeout:.0f} s"}
    if result_path.is_file():
        return json.loads(result_path.read_text())
    lines = [ln for ln in logf.read_text(errors="replace").splitlines() if ln.strip()]
    return {
        "name": task["name"],
        "status": "failed",
        "reason": f"worker died (exit {proc.returncode}): {lines[-1] if lines else 'no output'}",
    }


# ---------------------------------------------------------------- summary and report


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ratios vs FP32 eager / the fastest FP32 path and size vs FP32 to the successful rows."""
    ok = {r["name"]: r for r in rows if r.get("status") == "ok"}
    base = ok.get("fp32_eager")
    fastest = min((ok[n]["median_ms"] for n in FP32_PATHS if n in ok), default=None)
    for r in ok.values():
        if base:
            r["vs_fp32_eager"] = r["median_ms"] / base["median_ms"]
            if r.get("cpu_ms") and base.get("cpu_ms"):
                r["cpu_vs_fp32_eager"] = r["cpu_ms"] / base["cpu_ms"]
            r["size_pct_fp32"] = 100 * r["bytes"] / base["bytes"]
        if fastest:
            r["vs_fastest_fp32"] = r["median_ms"] / fastest
    return rows


def fastest_nncf(ok: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest NNCF INT8 row among the successful rows `ok` (by name), or None."""
    peers = [ok[n] for n in NNCF_INT8 if n in ok]
    return min(peers, key=lambda r: r["median_ms"]) if peers else None


def versus_nncf(rows: list[dict[str, Any]]) -> list[str]:
    """Each diffusia row on OpenVINO against the fastest NNCF INT8 row of the run: step time and error ratios."""
    ok = {r["name"]: r for r in rows if r.get("status") == "ok"}
    best = fastest_nncf(ok)
    if best is None:
        return []
    lines = [
        f"Against the fastest NNCF INT8 row (`{best['name']}`, {best['median_ms']:,.0f} ms, "
        f"{100 * best['rel_l2']:.2f} % rel-L2):",
        "",
    ]
    for r in ok.values():
        if r["name"].startswith("diffusia") and "_ov" in r["name"]:
            lines.append(
                f"- `{r['name']}`: step {r['median_ms'] / best['median_ms']:.2f}x, error "
                f"{r['rel_l2'] / best['rel_l2']:.2f}x ({100 * r['rel_l2']:.2f} %)"
            )
    return lines + [""]


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "backend",
        "kind",
        "step ms (median)",
        "vs FP32 eager",
        "CPU ms/call",
        "CPU vs FP32 eager",
        "vs fastest FP32",
        "disk MB",
        "% of FP32",
        "peak RSS MB",
        "rel-L2 vs FP32",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(
                f"| {r['name']} | {r.get('kind', '')} | failed |" + " |" * (len(head) - 4) + f" {r.get('reason', '')} |"
            )
            continue
        n = len(r["times_s"])
        notes = [f"{n} run{'s' * (n != 1)}"]
        if "compile" in r["name"]:
            notes.append(f"compile (1st call) {r['first_call_s']:.0f} s")
        notes += r.get("notes", [])
        if "convert_s" in r:
            notes.append(f"load+convert+save {r['convert_s']:.0f} s, peak RSS {r['peak_rss_convert_mb']:,.0f} MB")
        if not r.get("finite", True):
            notes.append("NON-FINITE output")
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    r["kind"],
                    f"{r['median_ms']:,.0f}",
                    _fmt(r.get("vs_fp32_eager"), ".2f"),
                    _fmt(r.get("cpu_ms"), ",.0f"),
                    _fmt(r.get("cpu_vs_fp32_eager"), ".2f"),
                    _fmt(r.get("vs_fastest_fp32"), ".2f"),
                    f"{r['bytes'] / 1e6:,.1f}",
                    _fmt(r.get("size_pct_fp32"), ".0f"),
                    f"{r['peak_rss_mb']:,.0f}",
                    "-" if r.get("rel_l2") is None else f"{100 * r['rel_l2']:.2f}%",
                    "; ".join(notes),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _class_of(env: dict[str, Any]) -> str:
    """The CPU class of a result's recorded flags (results written before the class was recorded)."""
    from diffusia.quant import cpu

    return cpu.host_class({"x86": True, **env["cpu_features"]})


def markdown(result: dict[str, Any]) -> str:
    env, m = result["environment"], result["model"]
    flags = ", ".join(k for k, v in env["cpu_features"].items() if v) or "none"
    vers = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return "\n".join(
        [
            f"# Backend benchmark: {m['label']} U-Net step, latent {m['latent']}x{m['latent']}, batch 2"
            + (" (quick smoke run)" if result["quick"] else ""),
            "",
            f"Machine: {env['cpu_model']}, CPU class **{env.get('cpu_class') or _class_of(env)}** "
            f"(flags: {flags}; {env['cores']} cores), "
            f"{env['threads']} thread{'s' * (env['threads'] != 1)}, "
            f"{vers}. Load average {env['load_avg_start']:.2f} at start, {env['load_avg_end']:.2f} at end "
            f"(the machine is shared: treat differences under ~10 % as noise). {env['date']}, "
            f"total {result['total_s']:.0f} s.",
            "",
            *(
                [
                    "**Instruction sets capped** ("
                    + ", ".join(f"`{k}={v}`" for k, v in env["isa_caps"].items())
                    + "): an emulation of that class on this CPU, whose cores, caches and memory are not that "
                    "machine's.",
                    "",
                ]
                if env.get("isa_caps")
                else []
            ),
            f"One fresh process per backend; median of up to {result['repeats']} calls after warm-up, stopped after "
            f"{result['budget_s']:.0f} s (the notes say how many). Disk = the files the backend ships (safetensors, "
            "torch.save for tensor subclasses/packed params, .onnx + external data); % of FP32 = of the FP32 "
            "safetensors. Peak RSS = growth over the post-import baseline while running (model resident + step peak); "
            "the notes give the peak while loading, converting and saving. "
            "rel-L2 = ||y - y_fp32|| / ||y_fp32|| of the U-Net output on the same seeded input. CPU ms/call = "
            "the process's CPU time per call over all its threads (less sensitive to other jobs than wall time, "
            "inflated by spinning threads at > 1 thread). "
            f"Calibration: {result['calibration']}.",
            "",
            *(
                [f"Weights: `{m['weights']}`, sha256 {m['weights_sha256'][:16]}...", ""]
                if m.get("weights_sha256")
                else []
            ),
            *(
                [
                    "**Random weights**: latency, disk and memory are those of the SD v1.5 U-Net; output errors are measured "
                    "on random weights and Gaussian inputs, not on a trained model.",
                    "",
                ]
                if m.get("random_weights")
                else []
            ),
            table(result["rows"]),
            "",
            *versus_nncf(result["rows"]),
            "Kinds: *real INT8 kernels* compute integer products; *weight-only* stores int8/int4 weights and "
            "dequantizes them for a float matmul/conv; *dequantized* = quantize-dequantize in float (no integer "
            "arithmetic). torchao and torch dynamic quantization touch Linear layers only (their defaults).",
            "",
        ]
    )


def environment(threads: int) -> dict[str, Any]:
    import torch

    from diffusia.quant import cpu
    from diffusia.versions import package_versions

    vers = package_versions(VERSIONS)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu.cpu_model(),
        "cpu_features": cpu.detected_features(),
        "cpu_class": cpu.host_class(cpu.detected_features()),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": isa_caps(),
        "cores": os.cpu_count(),
        "threads": threads,
        "versions": vers,
    }


def run_model(model: str, args: argparse.Namespace, names: list[str]) -> Path:
    from diffusia.config import get_preset
    from diffusia.fileio import write_json, write_text
    from diffusia.models.loading import describe

    latent = 16 if model == "tiny" else args.latent  # tiny is trained at 16x16 latents
    env = environment(args.threads)
    env["load_avg_start"] = os.getloadavg()[0]
    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"diffusia-backends-{model}-", dir=args.workdir))
    weights = make_inputs(model, latent, args.calib, workdir)
    rows = []
    for name in names:
        task = {
            "name": name,
            "model": model,
            "threads": args.threads,
            "workdir": str(workdir),
            "inputs": str(workdir / "inputs.pt"),
            "repeats": args.repeats,
            "budget": args.budget,
            "calibrator": args.calibrator,
        }
        log.info("[%s] %s ...", model, name)
        row = run_worker(task, args.timeout)
        rows.append(row)
        log.info(
            "[%s] %s: %s",
            model,
            name,
            f"{row['median_ms']:.0f} ms, rel-L2 {row['rel_l2']}" if row.get("status") == "ok" else row.get("reason"),
        )
        shutil.rmtree(workdir / name, ignore_errors=True)  # artifacts measured: free the disk (FP32 ONNX cache stays)
    env["load_avg_end"] = os.getloadavg()[0]
    calib = (
        "tiny: U-Net inputs recorded along DPM-Solver trajectories (2 prompts, 8 steps, cfg 7.5)"
        if model == "tiny"
        else "seeded Gaussian latents and text embeddings at timesteps 980..20"
    )
    preset = get_preset("w8a8")
    cal_name = (
        args.calibrator if args.calibrator != "preset" else f"the preset's ({preset.calibrator} {preset.percentile:g})"
    )
    result = {
        "model": {
            "spec": model,
            "label": describe(model),
            "latent": latent,
            "random_weights": model == "sd15-arch",
            **weights,
        },
        "environment": env,
        "quick": args.quick,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "calibration": f"{args.calib} inputs, {calib}; diffusia calibrator {cal_name} where a row names no other, "
        "quanto "
        "Calibration(), ONNX Runtime MinMax",
        "total_s": time.perf_counter() - t_start,
        "rows": summarize(rows),
    }
    out = args.out / f"backends_{model}_{latent}"
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), markdown(result))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("wrote %s.md (%.0f s)", out, result["total_s"])
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Backend benchmark: one U-Net step per backend (FP32, BF16, diffusia, "
        "peers), each in a fresh process; see the module docstring for the protocol."
    )
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", action="append", help="tiny, sd15-arch, or a comma list (repeatable); default both")
    ap.add_argument("--latent", type=int, choices=(32, 64), default=32, help="sd15-arch latent size (tiny: 16)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per backend (median reported)")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of timed calls per backend (>= 1 call)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=4, help="calibration inputs (batch 2 each)")
    ap.add_argument(
        "--calibrator",
        default="preset",
        choices=("preset", "minmax", "percentile", "mse"),
        help="diffusia W8A8 calibrator (preset = the recipe's)",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma list of backends (fp32_eager always runs; without it every row but the experiments of "
        "_backends_experiments.py); the result files of the model/latent are overwritten: use --out to keep a full run",
    )
    ap.add_argument("--quick", action="store_true", help="3 timed calls, 60 s budget: a smoke run")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per backend before it is a failed row")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--workdir", type=Path, default=None, help="where artifacts go while measured (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (artifacts, logs)")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md files from the .json in --out")
    return ap


def selected(ap: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(backend names in run order, models) of the command line; unknown ones are argparse errors."""
    names = backend_names()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - set(names)
        if unknown:
            ap.error(f"unknown backend(s) {', '.join(sorted(unknown))}; valid: {', '.join(names)}")
        names = [n for n in names if n in wanted or n == "fp32_eager"]
    else:
        names = backend_names(experiments=False)
    models = [m.strip() for v in (args.model or ["tiny,sd15-arch"]) for m in v.split(",") if m.strip()]
    for m in models:
        if m not in ("tiny", "sd15-arch"):
            ap.error(f"--model {m!r}: use tiny or sd15-arch")
    return names, models


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        worker(args.worker)
        return
    if args.render:
        from diffusia.fileio import write_text

        for path in sorted(args.out.glob("backends_*.json")):
            result = json.loads(path.read_text())
            result["rows"] = summarize(result["rows"])
            write_text(path.with_suffix(".md"), markdown(result))
        return
    if args.quick:
        args.repeats, args.budget = min(args.repeats, 3), min(args.budget, 60.0)
    names, models = selected(ap, args)
    import torch

    torch.set_num_threads(args.threads)  # the inputs are recorded here (tiny) with the same thread count
    for m in models:
        run_model(m, args, names)


if __name__ == "__main__":
    main()
