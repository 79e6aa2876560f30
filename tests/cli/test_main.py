"""The entry points: `diffusia`, `python -m diffusia`, and `python -m diffusia.qat.train` (the `diffusia qat`
command line, which `accelerate launch` runs in each process); the process set-up happens there, not at import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from diffusia import cli


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("module", ["diffusia", "diffusia.cli"])
def test_python_dash_m_is_the_cli(module):
    proc = _python("-m", module, "recommend", "--results", "x", "--memory-mb", "-5")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("diffusia: error: --memory-mb -5.0: must be a finite number > 0")


def test_qat_train_module_is_the_qat_command(tmp_path):
    """One definition of the QAT options: the module takes `diffusia qat`'s (--lsq-lr, --timestep-groups, ...)
    and refuses what it refuses, in the same words."""
    out = tmp_path / "q"
    proc = _python("-m", "diffusia.qat.train", "--out", str(out), "--lsq-lr", "1e-3", "--timestep-groups", "nan")
    assert proc.returncode == 2 and "Invalid value for '--timestep-groups'" in proc.stderr, proc.stderr
    proc = _python("-m", "diffusia.qat.train", "--out", str(out), "--timestep-groups", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("diffusia: error: --timestep-groups 0:"), proc.stderr
    assert not out.exists()
    help_ = _python("-m", "diffusia.qat.train", "--help").stdout
    assert all(f"--{name}" in help_ for name in ("lsq-lr", "timestep-groups", "no-validate", "no-progress"))


def test_qat_defaults_are_one_set():
    import inspect

    from diffusia.cli.qat import qat
    from diffusia.qat.config import QATConfig

    shared = {
        "steps",
        "lr",
        "batch",
        "lsq",
        "lsq_lr",
        "checkpoint_every",
        "calib_size",
        "calib_prompts",
        "calib_steps",
        "timestep_groups",
        "seed",
        "model",
        "recipe",
        "validate",
        "progress",
    }
    options = {k: p.default.default for k, p in inspect.signature(qat).parameters.items() if k in shared}
    assert options == {k: getattr(QATConfig(out="x"), k) for k in shared}
    assert inspect.signature(qat).parameters["device"].default.default == "auto"  # CUDA when there is one


def test_import_leaves_the_process_alone():
    keys = ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY")
    env = {k: v for k, v in os.environ.items() if k not in keys}
    code = (
        "import logging, os, diffusia, diffusia.config; "
        f"print([os.environ.get(k) for k in {keys!r}], logging.getLogger('torchao').level)"
    )
    assert _python("-c", code, env=env).stdout.strip() == "[None, None] 0"
    code = "import os, diffusia.cli; diffusia.cli.setup_process(); print(os.environ['TRANSFORMERS_VERBOSITY'])"
    assert _python("-c", code, env=env).stdout.strip() == "error"


def test_no_args_prints_the_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and "quantize" in captured.out + captured.err
    assert "diffusia: error" not in captured.err


def test_an_unanticipated_io_error_is_one_line(monkeypatch, tmp_path, capsys):
    import errno

    import diffusia

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache"))

    monkeypatch.setattr(diffusia, "load_pipeline", full_disk)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "--prompt", "a red bag", "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and not (tmp_path / "o.png").exists()
    assert err.startswith(f"diffusia: error: I/O error on {tmp_path / 'cache'}: No space left on device")
