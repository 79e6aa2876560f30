"""PTQ W8A8 vs QAT W8A8 (data-free distillation, and the noise-prediction loss on coloured Fashion-MNIST) on `tiny`:
SSIM and LPIPS of every variant's images against the FP32 images of the same prompts and seeds
(the 80 class x colour prompts, 1 image each, seed 42, DPM-Solver 25 steps, guidance 7.5).

PTQ and QAT share the calibration (same prompts, trajectories and seeds), so QAT starts exactly at the PTQ model.

    python benchmarks/qat_vs_ptq.py [--steps 400 | --steps 200,400] [--lr 1e-5] [--batch 16] [--calib-size 32] [--no-lsq]
Writes benchmarks/results/<class>/qat_vs_ptq.json and .md; QAT folders and each variant's images are kept under --work,
so a rerun with the same settings skips the variants already done.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from _results import machine_class, results_dir  # noqa: E402  (benchmarks/ is on sys.path when run)

from diffusia import load_pipeline
from diffusia.calib.forward_loop import sampling_forward_loop
from diffusia.config import get_preset
from diffusia.eval.metrics import lpips_distance, ssim
from diffusia.fileio import atomic_path, write_json, write_text
from diffusia.generate import GenerationConfig, generate
from diffusia.prompts import load_prompts, take
from diffusia.qat.checkpoints import latest_checkpoint
from diffusia.qat.train import QATConfig, run_qat
from diffusia.quant import api, cpu
from diffusia.quant.pipeline import quantize_pipeline

OUT = results_dir()
TARGETS = {"ssim_min": 0.97, "lpips_max": 0.04}
log = logging.getLogger("qat_vs_ptq")


def images_of(pipe, prompts: list[str]) -> np.ndarray:
    return generate(pipe, prompts, 1, GenerationConfig(), progress=False, output_type="np")


def cached(work: Path, name: str, key: dict, make) -> tuple[np.ndarray, dict]:
    """Images (and facts) of a variant, reused from `work` when made with the same `key` (reruns skip it)."""
    npy, meta = work / f"{name}.npy", work / f"{name}.json"
    if npy.is_file() and meta.is_file():
        facts = json.loads(meta.read_text())
        if facts.get("key") == key:
            log.info("%s: reusing %s", name, npy)
            return np.load(npy), facts["facts"]
    images, facts = make()
    work.mkdir(parents=True, exist_ok=True)
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    write_json(meta, {"key": key, "facts": facts})
    return images, facts


def ptq_pipeline(model: str, calib, calib_size: int, kernels: str):
    """PTQ W8A8: real INT8 kernels (frozen), or the same calibrated model in simulated (fake-quant) INT8."""
    pipe = load_pipeline(model, progress=False)
    if kernels == "real":
        return quantize_pipeline(pipe, get_preset("w8a8"), calib, calib_size=calib_size, progress=False)
    api.quantize(pipe.unet, get_preset("w8a8"))
    with api.calibrate(pipe.unet):
        sampling_forward_loop(pipe, take(calib, calib_size), progress=False)()
    api.enable_fake_quant(pipe.unet)
    return pipe


def fake_quant_pipeline(model: str, folder: Path):
    """The QAT result in simulated INT8: float weights and ranges of the final checkpoint kept in `folder`."""
    from safetensors.torch import load_file

    from diffusia.config import Recipe
    from diffusia.quant.serialization import read_meta

    pipe = load_pipeline(model, progress=False)
    api.quantize(pipe.unet, Recipe.from_dict(read_meta(folder)["recipe"]))
    state = load_file(str(latest_checkpoint(folder) / "model.safetensors"))
    pipe.unet.load_state_dict({k[len("unet.") :]: v for k, v in state.items() if k.startswith("unet.")})
    api.enable_fake_quant(pipe.unet)
    pipe.unet.eval()
    return pipe


def finished_qat(folder: Path, cfg: QATConfig) -> dict | None:
    """The QAT record of `folder` when it holds a finished run with cfg's settings (and its final checkpoint)."""
    from diffusia.quant.serialization import read_meta

    try:
        qat = read_meta(folder).get("qat") or {}
    except Exception:
        return None
    same = {k: qat.get(k) for k in ("source", "steps", "lr", "lsq", "calib_size", "seed")} == {
        "source": cfg.source,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "lsq": cfg.lsq,
        "calib_size": cfg.calib_size,
        "seed": cfg.seed,
    } and qat.get("batch_per_process", 0) * qat.get("processes", 1) == cfg.batch
    return qat if same and latest_checkpoint(folder) is not None else None


def compare(images: np.ndarray, reference: np.ndarray, prompts: list[str] | None = None) -> dict:
    """SSIM and LPIPS against the reference; with `prompts`, also the median and the three least similar prompts."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(reference).permute(0, 3, 1, 2).float()
    s, lp = ssim(x, y).numpy(), lpips_distance(x, y).numpy()
    facts = {
        "ssim": float(s.mean()),
        "ssim_min": float(s.min()),
        "lpips": float(lp.mean()),
        "lpips_max": float(lp.max()),
    }
    if prompts is not None:
        facts["ssim_median"] = float(np.median(s))
        facts["least_similar"] = [[prompts[i], round(float(s[i]), 4)] for i in np.argsort(s)[:3]]
    return facts


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--num", type=int, default=80, help="prompts (1 image each)")
    p.add_argument(
        "--steps",
        default="400",
        help="QAT steps per variant (~1 s each with LSQ on 2 idle cores); a comma list trains one variant per count",
    )
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--lsq",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learnable activation step sizes (LSQ), as `diffusia qat` by default",
    )
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--sources", default="distill,fashion-mnist")
    p.add_argument("--work", default="out/qat_vs_ptq", help="QAT pipelines and cached images of every variant")
    p.add_argument("--out", default=str(OUT / "qat_vs_ptq"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--kernels",
        choices=["real", "fake"],
        default="real",
        help="real INT8 kernels, or simulated INT8 (same weights and ranges; for CPUs where the INT8 "
        "kernels are slow on tiny layers); `fake` also checks the agreement on --agree images",
    )
    p.add_argument("--agree", type=int, default=2, help="images for the real-vs-fake agreement check")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    prompts = [q.text for q in load_prompts("tiny" if args.model == "tiny" else "eval", model=args.model)][: args.num]
    calib = load_prompts("calibration", model=args.model)
    t0 = time.time()
    work = Path(args.work)
    base = {"model": args.model, "num": len(prompts)}

    def fp32():
        t = time.time()
        return images_of(load_pipeline(args.model, progress=False), prompts), {"seconds": round(time.time() - t, 1)}

    reference, _ = cached(work, "fp32", base, fp32)

    def ptq():
        t = time.time()
        pipe = ptq_pipeline(args.model, calib, args.calib_size, args.kernels)
        return images_of(pipe, prompts), {"method": "PTQ", "quantize_seconds": round(time.time() - t, 1)}

    variants: dict[str, dict] = {}
    images, facts = cached(work, "ptq-w8a8", {**base, "calib_size": args.calib_size, "kernels": args.kernels}, ptq)
    variants["ptq-w8a8"] = {**facts, **compare(images, reference, prompts)}
    log.info("ptq: %s", variants["ptq-w8a8"])
    step_counts = [int(n) for n in str(args.steps).split(",") if n.strip()]
    runs = [(source, n) for source in args.sources.split(",") if source for n in step_counts]
    for source, steps in runs:
        suffix = f"-{steps}" if len(step_counts) > 1 else ""
        folder = work / f"qat-{source}{suffix}"
        cfg = QATConfig(
            out=str(folder),
            model=args.model,
            source=source,
            steps=steps,
            lr=args.lr,
            batch=args.batch,
            lsq=args.lsq,
            calib_size=args.calib_size,
            checkpoint_every=100,
            keep_checkpoints=True,
            progress=False,
            overwrite=True,
        )

        def qat(cfg=cfg, folder=folder, source=source):
            info = finished_qat(folder, cfg)  # e.g. trained beforehand with `diffusia qat` in another process
            if info is None:
                info = run_qat(cfg).info
            facts = {
                "method": "QAT",
                "source": source,
                "steps": cfg.steps,
                "lr": cfg.lr,
                "batch": cfg.batch,
                "lsq": cfg.lsq,
                "train_seconds": info["train_seconds_this_run"],
                "train_cpu_seconds": info.get("train_cpu_seconds_this_run"),
                "loss_first": info["loss_first"],
                "loss_last_mean20": info["loss_last_mean20"],
                "folder": str(folder),
            }
            pipe = (
                load_pipeline(folder, progress=False)
                if args.kernels == "real"
                else fake_quant_pipeline(args.model, folder)
            )
            return images_of(pipe, prompts), facts

        key = {
            **base,
            "calib_size": args.calib_size,
            "steps": steps,
            "lr": args.lr,
            "batch": args.batch,
            "lsq": args.lsq,
            "kernels": args.kernels,
        }
        name = f"qat-w8a8-{source}{suffix}"
        images, facts = cached(work, name, key, qat)
        variants[name] = {**facts, **compare(images, reference, prompts)}
        log.info("%s: %s", name, variants[name])

    agreement = None
    qat_folders = [Path(v["folder"]) for v in variants.values() if v.get("folder")]
    if args.kernels == "fake" and args.agree > 0 and qat_folders:
        # the simulated INT8 images against the real INT8 kernels' images of the same saved model
        n = min(args.agree, len(prompts))
        real = images_of(load_pipeline(qat_folders[0], progress=False), prompts[:n])
        fake = images_of(fake_quant_pipeline(args.model, qat_folders[0]), prompts[:n])
        agreement = {"folder": str(qat_folders[0]), "images": n, **compare(fake, real)}
        log.info("real vs simulated INT8: %s", agreement)

    ptq_row = variants["ptq-w8a8"]
    for _name, v in variants.items():
        v["meets_targets"] = v["ssim"] >= TARGETS["ssim_min"] and v["lpips"] <= TARGETS["lpips_max"]
        if v["method"] == "QAT":
            v["beats_ptq"] = v["ssim"] > ptq_row["ssim"] and v["lpips"] < ptq_row["lpips"]
    result = {
        "model": args.model,
        "images": len(prompts),
        "reference": "FP32 images of the same prompts and seeds",
        "sampler": "DPMSolverMultistep",
        "steps": 25,
        "guidance": 7.5,
        "seed": 42,
        "calib_size": args.calib_size,
        "targets": TARGETS,
        "kernels": args.kernels,
        "real_vs_simulated": agreement,
        "variants": variants,
        "total_seconds": round(time.time() - t0, 1),
        "machine": f"{cpu.cpu_model()} (class `{machine_class()}`), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), report(result))
    print(report(result))
    return result


def report(r: dict) -> str:
    lines = [
        f"# PTQ vs QAT (W8A8) on `{r['model']}`",
        "",
        f"{r['images']} prompts x 1 image (seed {r['seed']}, DPM-Solver {r['steps']} steps, guidance "
        f"{r['guidance']}), compared with the FP32 images of the same prompts and seeds. Calibration: "
        f"{r['calib_size']} prompts on their sampling trajectories (shared by PTQ and QAT). "
        f"Targets: SSIM >= {r['targets']['ssim_min']}, LPIPS <= {r['targets']['lpips_max']}.",
        "",
        "| variant | QAT steps | train s (wall / CPU) | SSIM mean (min) | LPIPS mean (max) | beats PTQ | meets targets |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in r["variants"].items():
        lines.append(
            f"| {name} | {v.get('steps', '-')} | {v.get('train_seconds', '-')} / {v.get('train_cpu_seconds', '-')} | {v['ssim']:.4f} "
            f"({v['ssim_min']:.3f}) | {v['lpips']:.4f} ({v['lpips_max']:.3f}) | "
            f"{'yes' if v.get('beats_ptq') else ('-' if v['method'] == 'PTQ' else 'no')} | "
            f"{'yes' if v['meets_targets'] else 'no'} |"
        )
    worst = [(name, v["least_similar"]) for name, v in r["variants"].items() if v.get("least_similar")]
    if worst:
        lines += ["", "Median SSIM and the least similar prompts (SSIM):", ""]
        for name, prompts in worst:
            listed = "; ".join(f"{p} ({s:.3f})" for p, s in prompts)
            lines.append(f"- {name}: median {r['variants'][name]['ssim_median']:.4f}; {listed}")
    if r["kernels"] == "fake":
        a = r.get("real_vs_simulated") or {}
        lines += [
            "",
            "Images computed in simulated INT8 (fake quantization with the saved weights and ranges: the same "
            "integer grid as the INT8 kernels)"
            + (
                f"; on {a['images']} images the simulated and the real INT8 "
                f"kernels' images agree to SSIM {a['ssim']:.4f}, LPIPS {a['lpips']:.4f}."
                if a
                else "."
            ),
        ]
    lines += ["", f"Machine: {r['machine']}; whole benchmark {r['total_seconds']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
