"""Outputs on failing disks, end to end for every command that writes: a read-only file system, a full one, and
one that fills up in the middle of a save. Each ends in one line naming the output and the fix, exit code 2, and
leaves nothing on the disk. The disks are real tmpfs mounts where the machine allows it (root with mount rights,
as in CI); elsewhere the same kernel errors come another way: a file-size limit (EFBIG) for the full disk, a
read-only folder for a user other than root."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import subprocess
from pathlib import Path

import pytest

from tests._cli_support import refused, snapshot

# failure -> (tmpfs mount options, file-size limit without a mount, the strerror of either)
DISKS = {
    "read-only": ("size=1m,ro", None, ("Read-only file system", "Permission denied")),
    "full": ("size=64k", 0, ("No space left on device", "File too large")),
    "fills up mid-save": ("size=128k", 128 * 1024, ("No space left on device", "File too large")),
}


def _mount(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)]
    return os.geteuid() == 0 and subprocess.run(cmd, capture_output=True).returncode == 0


def _fill(where: Path) -> None:
    with contextlib.suppress(OSError), open(where / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


@contextlib.contextmanager
def _file_size_limit(limit: int | None):
    if limit is None:
        yield
        return
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, before[1]))  # Python ignores SIGXFSZ: writes raise EFBIG
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)


@pytest.fixture
def disk(request, tmp_path):
    """(folder on the failing disk, context the command runs in, accepted error texts)."""
    options, limit, errors = DISKS[request.param]
    where = tmp_path / "disk"
    if _mount(where, options):
        if request.param == "full":
            _fill(where)
        yield where, contextlib.nullcontext(), errors
        subprocess.run(["umount", "-l", str(where)], check=True)
    elif request.param == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root without mount rights: no read-only file system to write to")
        where.chmod(0o555)
        yield where, contextlib.nullcontext(), errors
        where.chmod(0o755)
    else:
        yield where, _file_size_limit(limit), errors


def _results(c) -> Path:
    run = c.tmp / "run"
    run.mkdir(exist_ok=True)
    variants = [
        {"name": "fp32", "precision": "fp32", "size_mb": 10, "peak_mb": 300, "latency_s": 1.0, "lpips": 0.0},
        {"name": "w8a8", "precision": "w8a8", "size_mb": 3, "peak_mb": 200, "latency_s": 0.7, "lpips": 0.05},
    ]
    (run / "results.json").write_text(json.dumps({"device": "cpu", "variants": variants}))
    return run


def _sensitivity(c) -> Path:
    from tests.analysis._support import fake_sensitivity, micro_unet

    folder = c.tmp / "sens"
    folder.mkdir(exist_ok=True)
    (folder / "sensitivity.json").write_text(json.dumps(fake_sensitivity(micro_unet())))
    return folder


CALIB = ["--calib-prompts", "tiny", "--calib-size", "1", "--calib-steps", "1"]
SENSITIVITY = ["--steps", "2", "--eval-timesteps", "1", "--top", "0"]  # ~150 KB of outputs: over 128 KB
# command -> (arguments given the inputs and the output, output name)
COMMANDS = {
    "generate": (lambda c, out: ["generate", "--prompt", "a bag", "--model", c.pipe, "--steps", "1"], "a.png"),
    "quantize": (lambda c, out: ["quantize", "--model", c.pipe, *CALIB], "q"),
    "export onnx": (lambda c, out: ["export", "--model", c.quantized], "unet.onnx"),
    "export openvino": (lambda c, out: ["export", "--model", c.quantized, "--format", "openvino"], "ov"),
    "eval": (lambda c, out: ["eval", "--model", c.pipe, "--variants", "fp32", "--num", "1", "--steps", "1"], "e"),
    "qat": (lambda c, out: ["qat", "--model", c.pipe, *CALIB, "--batch", "1", "--steps", "1"], "t"),
    "sensitivity": (lambda c, out: ["sensitivity", "--model", c.pipe, *CALIB[:4], *SENSITIVITY], "s"),
    "pareto": (lambda c, out: ["pareto", "--results", _results(c)], "p"),
    "search": (lambda c, out: ["search", "--sensitivity", _sensitivity(c), "--budget-mb", "2.5"], "r.json"),
}


SMALL_OUTPUTS = ("generate", "pareto", "search")  # a micro image and reports: they fit in 128 KB
CASES = [(d, c) for d in DISKS for c in COMMANDS if not (d == "fills up mid-save" and c in SMALL_OUTPUTS)]


@pytest.mark.parametrize("disk, command", CASES, indirect=["disk"])
def test_failing_disk_is_one_line_naming_the_output_and_leaves_nothing(inputs, disk, monkeypatch, capsys, command):
    where, failing, errors = disk
    args, name = COMMANDS[command]
    out = where / name
    full_args = [*args(inputs, out), "--out", out]
    before = snapshot(where)
    with failing:
        last = refused(monkeypatch, capsys, full_args, f"I/O error on {out}")
    assert any(e in last for e in errors), last
    assert snapshot(where) == before  # no partial output, no temporaries


def test_io_error_messages_name_the_fix():
    from diffusia.cli import io_error_message

    full = io_error_message(OSError(errno.ENOSPC, "No space left on device"))
    assert full == "I/O error: No space left on device: free space on that disk or choose a path on another one"
    ro = io_error_message(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/q"))
    assert ro.startswith("I/O error on /mnt/ro/q: Read-only file system: the file system is read-only")
