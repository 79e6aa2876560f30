"""Peak memory as `diffusia eval` measures it, with the libraries made resident before the baseline and without,
from one or more virtual environments (one whose files the page cache holds whole, e.g. freshly installed, and one
long used): does the figure depend on what the page cache held?

    python benchmarks/resident_libraries.py --python .venv/bin/python /tmp/fresh_clone/.venv/bin/python

Each (environment, setting) runs `diffusia eval --model tiny --variants fp32,w8a8 --num 32 --runs 1` in a fresh
process, `DIFFUSIA_RESIDENT_LIBRARIES=1` or `0`, one after the other. Writes
benchmarks/results/<class>/resident_libraries/resident_libraries_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import result_header, results_dir, write_results  # noqa: E402

SETTINGS = ("1", "0")


def eval_memory(python: str, setting: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [python, "-m", "diffusia", "eval", "--model", args.model, "--variants", args.variants]
    cmd += ["--num", str(args.num), "--runs", "1", "--warmup", "0", "--calib-size", "4", "--no-quality"]
    cmd += ["--no-progress", "--out", str(out), "--overwrite"]
    env = {**os.environ, "DIFFUSIA_RESIDENT_LIBRARIES": setting}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    results = json.loads((out / "results.json").read_text())
    return {name: v["memory"] for name, v in results["variants"].items()}


def diffusia_commit(python: str) -> str:
    """The commit of the diffusia checkout `python` imports."""
    code = "import diffusia, pathlib; print(pathlib.Path(diffusia.__file__).parent)"
    where = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    git = ["git", "-C", where, "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, capture_output=True, text=True).stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", nargs="+", default=[sys.executable], help="interpreters of the environments")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--variants", default="fp32,w8a8")
    ap.add_argument("--num", type=int, default=32)
    ap.add_argument("--out", type=Path, default=results_dir() / "resident_libraries")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for i, python in enumerate(args.python):
            commit = diffusia_commit(python)
            for setting in SETTINGS:
                memory = eval_memory(python, setting, args, Path(work) / f"{i}-{setting}")
                rows += [
                    {"python": python, "commit": commit, "resident": setting == "1", "variant": k, **m}
                    for k, m in memory.items()
                ]
                print(python, setting, {k: m["peak_mb"] for k, m in memory.items()}, flush=True)
    result = {**result_header(model=args.model, num=args.num), "rows": rows}
    lines = [
        f"# Peak memory with and without the libraries resident ({args.model})",
        "",
        f"`diffusia eval --variants {args.variants} --num {args.num}` per environment and setting, one after the "
        f"other. Machine: {result['cpu']} (class `{result['class']}`), {result['date']}. MB = 2^20 bytes; peak = "
        "VmHWM growth over the baseline after imports (with the libraries wholly resident where `resident`).",
        "",
        "| environment | commit | resident | variant | baseline MB | peak after load MB | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['python']}` | {r['commit']} | {'yes' if r['resident'] else 'no'} | {r['variant']} | {r['baseline_mb']} | "
            f"{r.get('peak_load_mb')} | {r['peak_mb']} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out / f"resident_libraries_{args.model}", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
