"""The pipeline's other parts per runtime: does `--runtime openvino` gain by moving the text encoder and the VAE
decoder too (issue 14: "text encoder, scheduler and VAE unchanged, or also on that runtime where that measures
faster")? Each part of `--model` runs on PyTorch FP32 eager and on OpenVINO (f32, and bf16 where the CPU has BF16
units), all in ONE process, timed interleaved as `backends_interleaved.py` times U-Nets: every round calls each row
twice in a shuffled order and times the second call, so the machine's drifts hit every row alike, and each
OpenVINO row is compared with its PyTorch row by the per-round ratio (paired).

    python benchmarks/pipeline_parts.py                          # sd15-arch: 512x512 image (64x64 latent)
    python benchmarks/pipeline_parts.py --model tiny --rounds 30

A generation calls the text encoder twice (prompt and negative prompt, batch 1 each) and the VAE decoder once.
Writes OUT/pipeline_parts_<model>.{json,md} (OUT: benchmarks/results/<class>/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import quartiles, result_header, results_dir, write_results  # noqa: E402
from backends_interleaved import _paired, interleave  # noqa: E402


def parts(pipe) -> dict[str, tuple[Any, Any]]:
    """part -> (a module with one tensor input and one tensor output, that input for one generation)."""
    import torch
    from torch import nn

    class TextEncoder(nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, ids):
            return self.encoder(ids, return_dict=False)[0]

    class VAEDecoder(nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, latents):
            return self.vae.decode(latents, return_dict=False)[0]

    tok = pipe.tokenizer
    ids = tok(["a photo of a red sneaker"], padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    size = pipe.unet.config.sample_size
    latents = torch.randn(1, pipe.vae.config.latent_channels, size, size, generator=torch.Generator().manual_seed(0))
    return {
        "text_encoder": (TextEncoder(pipe.text_encoder).eval(), ids.input_ids),
        "vae_decoder": (VAEDecoder(pipe.vae).eval(), latents),
    }


def runners(module, example, precisions: list[str], threads: int) -> tuple[dict, dict]:
    """row -> callable(input) -> tensor, and row -> seconds to convert and compile it."""
    import openvino as ov
    import torch

    from diffusia.export.openvino import compile_model

    rows, build = {"torch": module}, {"torch": 0.0}
    t0 = time.perf_counter()
    with torch.no_grad():
        model = ov.convert_model(module, example_input=example)
    convert = time.perf_counter() - t0
    for precision in precisions:
        t0 = time.perf_counter()
        request = compile_model(model, precision, threads).create_infer_request()

        def run(x, request=request):
            request.infer([x.numpy()])
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        rows[f"openvino_{precision}"] = run
        build[f"openvino_{precision}"] = round(convert + time.perf_counter() - t0, 1)
    return rows, build


def rel_l2(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def measure(model: str, rounds: int, threads: int) -> dict[str, Any]:
    import torch

    from diffusia import load_pipeline
    from diffusia.quant.cpu import has_native_half

    torch.set_num_threads(threads)
    pipe = load_pipeline(model, progress=False)
    precisions = ["f32", *(["bf16"] if has_native_half("bf16") else [])]
    result: dict[str, Any] = {}
    for part, (module, example) in parts(pipe).items():
        calls, build = runners(module, example, precisions, threads)
        with torch.no_grad():
            reference = module(example)
            errors = {n: rel_l2(f(example), reference) for n, f in calls.items()}
        times = interleave(calls, example, rounds, seed=len(part))
        rows = {}
        for name, t in times.items():
            ms = [round(1e3 * s, 2) for s in t]
            q1, q2, q3 = quartiles(ms)
            rows[name] = {"ms": {"q1": q1, "median": q2, "q3": q3}, "times_ms": ms, "rel_l2": errors[name]}
            rows[name]["build_s"] = build[name]
            if name != "torch":
                rows[name]["vs_torch"] = _paired(t, times["torch"])
        result[part] = {"input": list(example.shape), "rows": rows}
    return result


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# The pipeline's other parts per runtime: {res['model']}",
        "",
        f"{res['rounds']} interleaved rounds in one process (each row called twice per round in a shuffled order, "
        f"the second call timed), {res['threads']} threads. Machine: {res['cpu']} (class `{res['class']}`); "
        f"{res['date']}; torch {res['torch']}, openvino {res['openvino']}.",
        "",
        "| part | input | row | ms (median) | IQR | vs PyTorch (paired median, IQR) | rel-L2 vs PyTorch | build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for part, p in res["parts"].items():
        for name, r in p["rows"].items():
            vs = r.get("vs_torch")
            paired = f"{vs['median']:.3f} ({vs['q1']:.3f}-{vs['q3']:.3f})" if vs else "1"
            lines.append(
                f"| {part} | {'x'.join(map(str, p['input']))} | {name} | {r['ms']['median']:,.1f} | "
                f"{r['ms']['q1']:,.1f}-{r['ms']['q3']:,.1f} | {paired} | {r['rel_l2']:.2e} | {r['build_s']} |"
            )
    lines += [
        "",
        "A generation calls the text encoder twice (prompt and negative prompt) and the VAE decoder once; build s is "
        "OpenVINO's conversion and compilation (once per process).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sd15-arch")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import openvino
    import torch

    t0 = time.perf_counter()
    res = result_header(
        model=args.model,
        rounds=args.rounds,
        threads=args.threads,
        torch=torch.__version__,
        openvino=openvino.__version__,
    )
    res["parts"] = measure(args.model, args.rounds, args.threads)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    out = args.out or results_dir()
    write_results(out / f"pipeline_parts_{args.model}", res, markdown(res))


if __name__ == "__main__":
    main()
