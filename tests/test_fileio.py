"""fileio: atomic writes with the user's umask, removal of the temporaries of killed saves (a real kill -9), and
the output guard (kinds, --overwrite, inputs, the current directory, set-aside and restore of in-place outputs)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffusia.errors import DiffusiaError
from diffusia.fileio import (
    MARKER,
    QUANTIZED,
    QUANTIZED_FORMAT,
    atomic_dir,
    atomic_path,
    check_output_dir,
    check_output_file,
    mark_output_dir,
    output_dir,
    output_kind,
    write_text,
)

ROOT = Path(__file__).parents[1]


@pytest.fixture
def umask():
    """Set a umask for the test (restored after)."""
    before = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(before)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_text(tmp_path / "a.txt", "x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
        write_text(tmp / "g", "z")
    assert _mode(tmp_path / "a.txt") == 0o666 & ~mask  # not mkstemp's 0600
    assert _mode(tmp_path / "d") == 0o777 & ~mask  # not mkdtemp's 0700
    assert _mode(tmp_path / "d" / "g") == 0o666 & ~mask and _mode(tmp_path / "d" / "f") == 0o666 & ~mask


def test_failed_block_keeps_the_earlier_output_and_leaves_no_temporaries(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("old")
    for ctx, name in ((atomic_path, "a.txt"), (atomic_dir, "d")):
        with pytest.raises(RuntimeError), ctx(tmp_path / name):
            raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_text() == "old" and (tmp_path / "d" / "f").read_text() == "old"
    assert _temps(tmp_path) == []


def test_stale_temporaries_of_the_same_output_are_removed_only_if_their_process_is_gone(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = [f".out.{dead}.ab1_x.partial", f".out.{dead}.zz9.tmp", f".out.{dead}.q.old"]
    kept = [
        f".out.{alive}.live.partial",  # a save in progress (this process)
        f".other.{dead}.ab1.partial",  # another output's
        f".out.5.{dead}.ab1.partial",  # the output `out.5`'s
        ".out.nopid.partial",
        "user.partial",
    ]
    for name in stale + kept:
        (tmp_path / name).mkdir() if name.endswith((".partial", ".old")) else (tmp_path / name).write_text("")
    (tmp_path / stale[0] / "big").write_bytes(b"0" * 1000)
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["out"])
    write_text(tmp_path / "out.5", "x")  # a file output cleans its own temporaries the same way
    assert not (tmp_path / kept[2]).exists()


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_kill_9_mid_save_leaves_litter_the_next_save_removes(tmp_path, kind):
    out = tmp_path / "model"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from diffusia.fileio import atomic_dir, atomic_path
        with ({"atomic_dir" if kind == "dir" else "atomic_path"})(Path({str(out)!r})) as tmp:
            (tmp / "weights" if tmp.is_dir() else tmp).write_bytes(b"half a model")
            print("ready", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    litter = _temps(tmp_path)
    assert len(litter) == 1 and litter[0].startswith(f".model.{proc.pid}.") and not out.exists()
    if kind == "dir":
        with atomic_dir(out) as tmp:
            (tmp / "weights").write_text("complete")
        assert (out / "weights").read_text() == "complete"
    else:
        write_text(out, "complete")
        assert out.read_text() == "complete"
    assert _temps(tmp_path) == []


def test_output_kinds(tmp_path):
    mark_output_dir(tmp_path / "e", "eval")
    assert output_kind(tmp_path / "e") == "eval"
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "diffusia.json").write_text(json.dumps({"format": QUANTIZED_FORMAT}))
    assert output_kind(tmp_path / "q") == QUANTIZED
    for text in ("[1, 2]", "{not json", json.dumps({"format": "other"})):
        (tmp_path / "q" / "diffusia.json").write_text(text)
        assert output_kind(tmp_path / "q") is None
    (tmp_path / "q" / MARKER).write_bytes(b"\xff\xfe")
    assert output_kind(tmp_path / "q") is None


def test_quantized_format_is_the_serialization_format():
    from diffusia.quant.serialization import FORMAT

    assert QUANTIZED_FORMAT == FORMAT


def test_check_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_output_dir(tmp_path / "new" / "deeper", "eval")  # new
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "eval")
    mark_output_dir(tmp_path / "marked-only", "pareto")  # a marker and nothing else: empty
    check_output_dir(tmp_path / "marked-only", "eval")
    mark_output_dir(tmp_path / "ev", "eval")
    (tmp_path / "ev" / "results.json").write_text("{}")
    check_output_dir(tmp_path / "ev", "eval", overwrite=True)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("mine")
    cases = [
        (tmp_path / "notes.txt", {}, "is an existing file, not a folder"),
        (tmp_path / "notes.txt" / "sub", {}, "which is a file"),
        (tmp_path / "mine", {"overwrite": True}, "neither empty nor a diffusia output"),
        (tmp_path / "ev", {}, "pass --overwrite"),
        (tmp_path / "ev", {"overwrite": True, "kind": "pareto"}, "holds a diffusia eval output, not a pareto one"),
        (Path("."), {}, "current directory"),
        (tmp_path.parent, {}, "current directory"),
        (tmp_path / "mine", {"inputs": [tmp_path / "mine"]}, "is the input"),
        (tmp_path / "mine" / "out", {"inputs": [tmp_path / "mine"]}, "is inside the input"),
        (tmp_path / "x", {"inputs": ["tiny", tmp_path / "x" / "model"]}, None),  # input does not exist: ignored
    ]
    (tmp_path / "y" / "model").mkdir(parents=True)
    cases.append((tmp_path / "y", {"inputs": ["tiny", tmp_path / "y" / "model"]}, "contains the input"))
    for path, kw, message in cases:
        kw = {"kind": "eval", **kw}
        if message is None:
            check_output_dir(path, **kw)
            continue
        with pytest.raises(DiffusiaError, match=message) as e:
            check_output_dir(path, **kw)
        assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "mine" / "data.csv").read_text() == "mine"


def test_check_output_file(tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from diffusia.fileio import PNG_SOFTWARE

    ours, theirs = tmp_path / "ours.png", tmp_path / "photo.png"
    info = PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    Image.new("RGB", (4, 4)).save(ours, pnginfo=info)
    Image.new("RGB", (4, 4)).save(theirs)
    (tmp_path / "dir.png").mkdir()
    check_output_file(tmp_path / "new.png", "png")
    check_output_file(ours, "png", overwrite=True)
    for path, overwrite, message in [
        (ours, False, "pass --overwrite"),
        (theirs, True, "is not a PNG image generated"),
        (tmp_path / "dir.png", True, "is an existing folder, not a file"),
    ]:
        with pytest.raises(DiffusiaError, match=message):
            check_output_file(path, "png", overwrite=overwrite)
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"weights": "w8a8", "rules": [], "version": 1}))
    check_output_file(recipe, "recipe", overwrite=True)
    with pytest.raises(DiffusiaError, match="not a diffusia search summary"):
        check_output_file(recipe, "search", overwrite=True)


def test_output_dir_replaces_an_earlier_output_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "ev"
    with output_dir(out, "eval") as folder:
        (folder / "results.json").write_text("first")
    assert output_kind(out) == "eval" and (out / "results.json").read_text() == "first"
    with pytest.raises(RuntimeError), output_dir(out, "eval", overwrite=True) as folder:
        assert not (folder / "results.json").exists()  # a fresh folder
        (folder / "half").write_text("x")
        raise RuntimeError("failed")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "results.json"]  # the earlier output is back
    with output_dir(out, "eval", overwrite=True) as folder:
        (folder / "results.json").write_text("second")
    assert (out / "results.json").read_text() == "second" and _temps(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), output_dir(tmp_path / "a" / "b" / "c", "eval"):
        raise KeyboardInterrupt
    assert not (tmp_path / "a").exists()  # the parents it made go too
