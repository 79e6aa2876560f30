"""Running the command line in the test process, and the inputs the bad-input tests damage copies of."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffusia import cli


def diffusia(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run `diffusia ARGS` in this process: (exit code, stderr)."""
    monkeypatch.setattr("sys.argv", ["diffusia", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def refused(monkeypatch, capsys, args, message: str) -> str:
    code, err = diffusia(monkeypatch, capsys, *args)
    last = err.rstrip("\n").rpartition("\n")[2].rpartition("\r")[2]  # after any loading progress bars
    assert code == 2 and last.startswith("diffusia: error: ") and err.endswith(last + "\n"), err
    assert "Traceback" not in err and err.count("diffusia: error") == 1 and message in last, err
    return last


def snapshot(*roots: Path) -> dict[str, bytes | None]:
    """Every path below `roots` with its bytes (None for folders)."""
    return {str(p): None if p.is_dir() else p.read_bytes() for r in roots for p in sorted(r.rglob("*"))}


@dataclass
class Inputs:
    tmp: Path
    pipe: Path  # float micro pipeline (shared, read-only)
    quantized: Path  # its w8a8 folder (shared, read-only)
    qat: Path  # a QAT output with its checkpoints (shared, read-only)

    def copy(self, which: str) -> Path:
        dst = self.tmp / f"{which}-copy"
        shutil.copytree(getattr(self, which), dst)
        return dst


@pytest.fixture(scope="session")
def saved_models(micro_pipeline_dir, tmp_path_factory):
    """The micro pipeline, its w8a8 folder and a QAT output with checkpoints, made by the CLI (treat as read-only)."""
    root = tmp_path_factory.mktemp("inputs")
    mp = pytest.MonkeyPatch()
    cap = _Capture()
    q, qat = root / "q", root / "qat"
    common = ["--model", micro_pipeline_dir, "--calib-prompts", "tiny", "--calib-size", "1", "--calib-steps", "1"]
    assert diffusia(mp, cap, "quantize", *common, "--recipe", "w8a8", "--out", q)[0] == 0, cap.err
    args = ["qat", *common, "--batch", "1", "--steps", "1", "--checkpoint-every", "1", "--keep-checkpoints"]
    assert diffusia(mp, cap, *args, "--out", qat)[0] == 0, cap.err
    mp.undo()
    return micro_pipeline_dir, q, qat


class _Capture:
    """capsys for a session fixture."""

    err = ""

    def readouterr(self):
        return self


@pytest.fixture
def inputs(saved_models, tmp_path, monkeypatch):
    """The saved models, and tmp_path as the current directory."""
    monkeypatch.chdir(tmp_path)
    return Inputs(tmp_path, *saved_models)
