"""The same `backends.py` rows run several rounds over, for a machine whose speed shifts from one minute to the next
(a shared VM): one row's calls agree to 1-3 %, but the same row can be 15 % slower ten minutes later.

Each round is a full `backends.py` run (one fresh process per row, in BACKENDS order) written to OUT/round<i>/.
Every diffusia row on OpenVINO is compared with the fastest NNCF INT8 row *of its own round*, so a shift between
rounds cancels out; the result gives those per-round ratios and each row's median step over the rounds.

    python benchmarks/backends_rounds.py --model sd15-arch --rounds 3 --budget 40 \\
        --only nncf_int8_transformer,diffusia_w8a8_mse_ov --out benchmarks/results/<class>/rounds

Writes OUT/rounds_<model>_<latent>.json and .md. Same options as backends.py, plus --rounds.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402  (benchmarks/ is on sys.path when run)


def _ok(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    result = json.loads(path.read_text())
    return result, {r["name"]: r for r in result["rows"] if r.get("status") == "ok"}


def aggregate(paths: list[Path]) -> dict[str, Any]:
    """Per row: its step in each round; per diffusia row on OpenVINO: its step and error ratios to the round's
    fastest NNCF INT8 row."""
    rounds = [_ok(p) for p in paths]
    names = list(dict.fromkeys(n for _, ok in rounds for n in ok))
    steps = {n: [ok[n]["median_ms"] if n in ok else None for _, ok in rounds] for n in names}
    errors = {n: next(ok[n]["rel_l2"] for _, ok in rounds if n in ok) for n in names}
    versus: dict[str, dict[str, list]] = {}
    best = []
    for _, ok in rounds:
        peer = backends.fastest_nncf(ok)
        best.append(None if peer is None else {k: peer[k] for k in ("name", "median_ms", "rel_l2")})
        for n, r in ok.items():
            if peer and n.startswith("diffusia") and "_ov" in n:
                v = versus.setdefault(n, {"step": [], "error": []})
                v["step"].append(r["median_ms"] / peer["median_ms"])
                v["error"].append(r["rel_l2"] / peer["rel_l2"])
    first = rounds[0][0]
    return {
        "model": first["model"],
        "environment": first["environment"],
        "dates": [r["environment"]["date"] for r, _ in rounds],
        "budget_s": first["budget_s"],
        "repeats": first["repeats"],
        "rounds": [f"{p.parent.name}/{p.name}" for p in paths],
        "steps_ms": steps,
        "rel_l2": errors,
        "fastest_nncf": best,
        "versus_fastest_nncf": versus,
    }


def _spread(values: list[float], spec: str) -> str:
    return f"{format(statistics.median(values), spec)} ({format(min(values), spec)}-{format(max(values), spec)})"


def _ms(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def markdown(res: dict[str, Any]) -> str:
    env, n = res["environment"], len(res["rounds"])
    cls = "amx" if env["cpu_features"].get("amx") else env["cpu_class"]
    lines = [
        f"# Backend rounds: {res['model']['label']}, latent {res['model']['latent']}, {n} rounds",
        "",
        f"Machine: {env['cpu_model']}, class **{cls}**, {env['threads']} threads; rounds started "
        f"{', '.join(res['dates'])}. Each round is one `backends.py` run (fresh process per row, median of up to "
        f"{res['repeats']} calls within {res['budget_s']:.0f} s); the rounds' own tables are in round*/.",
        "",
        "| backend | step ms per round | median | rel-L2 vs FP32 |",
        "|---|---|---|---|",
    ]
    for name, steps in res["steps_ms"].items():
        got = [s for s in steps if s is not None]
        per_round = " / ".join("-" if s is None else _ms(s) for s in steps)
        lines.append(f"| {name} | {per_round} | {_ms(statistics.median(got))} | {100 * res['rel_l2'][name]:.2f} % |")
    best = " / ".join("-" if b is None else f"`{b['name']}` {_ms(b['median_ms'])} ms" for b in res["fastest_nncf"])
    lines += [
        "",
        f"Against the fastest NNCF INT8 row of each round ({best}): median (min-max) over the rounds.",
        "",
        "| diffusia on OpenVINO | step ratio per round | step ratio | error ratio |",
        "|---|---|---|---|",
    ]
    for name, v in res["versus_fastest_nncf"].items():
        per_round = " / ".join(f"{x:.2f}" for x in v["step"])
        lines.append(f"| {name} | {per_round} | {_spread(v['step'], '.2f')}x | {_spread(v['error'], '.2f')}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from diffusia.fileio import write_json, write_text

    ap = backends.parser()
    ap.add_argument("--rounds", type=int, default=3, help="full runs of the selected rows, one after another")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: give 1 or more")
    names, models = backends.selected(ap, args)
    out = args.out
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    for model in models:
        paths = []
        for i in range(args.rounds):
            args.out = out / f"round{i + 1}"
            paths.append(backends.run_model(model, args, names).with_suffix(".json"))
        res = aggregate(paths)
        stem = out / f"rounds_{model}_{res['model']['latent']}"
        write_json(stem.with_suffix(".json"), res)
        write_text(stem.with_suffix(".md"), markdown(res))
        print(f"wrote {stem}.md")


if __name__ == "__main__":
    main()
