"""Output files and folders: atomic writes (complete or absent) with the user's umask, the hidden temporaries of
killed saves removed, and the guard that keeps a command from replacing anything but its own earlier output."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from diffusia.errors import DiffusiaError

MARKER = ".diffusia-output.json"  # {"kind": ...} in every output folder diffusia writes in place
QUANTIZED = "quantized"  # the kind of `quantize` and `qat` folders, recognised by their diffusia.json
QUANTIZED_FORMAT = "diffusia.quantized_pipeline"  # diffusia.quant.serialization.FORMAT (which imports this module)
EXPORT = "runtime export"  # the kind of `export --format openvino|onnxruntime` folders, recognised by runtime.json
EXPORT_FORMAT = "diffusia.runtime_unet"  # diffusia.runtime.artifact.FORMAT
OVERWRITE_HELP = "Replace an earlier output of this command at --out (diffusia never replaces anything else)."


# ----------------------------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    """Temporaries of `path` are `.NAME.PID.RANDOM.{partial,tmp,old}`: the PID tells whether their writer lives."""
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Delete the temporaries that saves of `path` by processes now gone (killed mid-save) left next to it."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.(partial|tmp|old)")
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            m = pattern.fullmatch(entry.name)
            if m and not _alive(int(m.group(1))):
                _remove(entry)


@contextlib.contextmanager
def naming_output(path: Path) -> Iterator[None]:
    """OSErrors raised while writing `path` name `path`: not one of its hidden temporaries (or a file in one), and
    not nothing (a full disk fails a write, which names no file)."""
    try:
        yield
    except OSError as e:
        temp = f".{path.name}."
        if not isinstance(e.filename, str) or any(part.startswith(temp) for part in Path(e.filename).parts):
            e.filename = str(path)
        raise
    except Exception as e:  # safetensors' writer reports a failed write as "I/O error: ... (os error N)"
        m = re.search(r"\(os error (\d+)\)", str(e)) if type(e).__name__ == "SafetensorError" else None
        if m is None:
            raise
        raise OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(path)) from None


@contextlib.contextmanager
def resumable_output(path: Path, resumable: Callable[[], bool]) -> Iterator[None]:
    """For an output written in place so that a stopped run can resume (QAT's checkpoints): if the block fails
    before anything in it is `resumable()`, the folders it created are removed."""
    created = next((a for a in reversed([path, *path.parents]) if not a.exists()), None)
    try:
        yield
    except BaseException:
        if created is not None and created.exists() and not resumable():
            _remove(created)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    with naming_output(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp made it 0600
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; swap it into place only if the block succeeds (commands check `path`
    with check_output_dir first: this replaces whatever is there)."""
    path = Path(path)
    with naming_output(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".partial", dir=path.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700
            if path.exists():
                if not overwrite:
                    raise FileExistsError(path)
                old = tmp.with_suffix(".old")
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def read_json_file(path: str | os.PathLike, default_name: str, missing_hint: str) -> tuple[Path, Any]:
    """(file, parsed JSON) of `path`, or of `path/default_name` for a folder; one-line DiffusiaErrors."""
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    if not p.is_file():
        raise DiffusiaError(f"no {default_name} at {path}: {missing_hint}")
    try:
        return p, json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DiffusiaError(f"{p} is not UTF-8 text: point at the file diffusia wrote") from None
    except json.JSONDecodeError as e:
        raise DiffusiaError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from None


# ----------------------------------------------------------------------------------------------- output guard
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _json_with(*keys: str) -> Callable[[Path], bool]:
    return lambda p: isinstance(d := _load_json(p), dict) and all(k in d for k in keys)


PNG_SOFTWARE = "diffusia"  # the PNG `Software` text chunk of generated images
# file kind -> (what it is, whether an existing file is one diffusia wrote)
FILE_KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "png": (
        "PNG image generated by diffusia",
        lambda p: _head(p).startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + PNG_SOFTWARE.encode() in _head(p),
    ),
    "onnx": (
        "ONNX model exported from PyTorch",  # ModelProto: ir_version (tag 0x08), then producer_name
        lambda p: _head(p, 64)[:1] == b"\x08" and b"\x12\x07pytorch" in _head(p, 64),
    ),
    "recipe": ("diffusia recipe", _json_with("weights", "rules", "version")),
    "search": ("diffusia search summary", _json_with("recipe", "size_mb", "note")),
}


def output_kind(folder: Path) -> str | None:
    """The kind of diffusia output `folder` holds (its marker's, QUANTIZED for a quantized pipeline, EXPORT for a
    runtime export), else None."""
    marker = _load_json(folder / MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("kind"), str):
        return marker["kind"]
    meta = _load_json(folder / "diffusia.json")
    if isinstance(meta, dict) and meta.get("format") == QUANTIZED_FORMAT:
        return QUANTIZED
    manifest = _load_json(folder / "runtime.json")
    return EXPORT if isinstance(manifest, dict) and manifest.get("format") == EXPORT_FORMAT else None


def mark_output_dir(folder: str | os.PathLike, kind: str) -> None:
    """Create `folder` (if needed) and mark it as a diffusia `kind` output."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / MARKER, {"kind": kind})


def _check_location(path: Path, inputs: Iterable[Any]) -> None:
    """Refuse an output that is (or contains) the current directory, lies below a file, or overlaps an input."""
    p, cwd = path.resolve(), Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        raise DiffusiaError(f"output {path} is the current directory or contains it: choose a new folder")
    above = next(a for a in p.parents if a.exists())
    if not above.is_dir():
        raise DiffusiaError(f"output {path} is below {above}, which is a file: choose a path in a folder")
    for given in inputs:
        if given is None or not Path(given).exists():
            continue  # not a local path (a preset, a shipped prompt set, a hub id)
        q = Path(given).resolve()
        where = "is" if p == q else "is inside" if q in p.parents else "contains" if p in q.parents else None
        if where:
            raise DiffusiaError(f"output {path} {where} the input {given}: choose an output outside the inputs")


def check_output_dir(path: str | os.PathLike, kind: str, overwrite: bool = False, inputs: Iterable[Any] = ()) -> None:
    """Refuse (one-line DiffusiaError) an output folder that is not new, empty or an earlier diffusia `kind`
    output replaced with `overwrite`; see _check_location for the rest."""
    path = Path(path)
    _check_location(path, inputs)
    if not path.exists():
        return
    if not path.is_dir():
        raise DiffusiaError(f"output {path} is an existing file, not a folder: choose a folder path")
    if all(e.name == MARKER for e in path.iterdir()):
        return  # empty
    found = output_kind(path)
    if found is None:
        raise DiffusiaError(
            f"output {path} is a folder that is neither empty nor a diffusia output: choose a new "
            "or empty folder (diffusia replaces only its own outputs)"
        )
    if found != kind:
        raise DiffusiaError(f"output {path} holds a diffusia {found} output, not a {kind} one: choose another folder")
    if not overwrite:
        raise DiffusiaError(f"output {path} holds an earlier diffusia {kind} output: pass --overwrite to replace it")


def check_output_file(path: str | os.PathLike, kind: str, overwrite: bool = False, inputs: Iterable[Any] = ()) -> None:
    """Refuse (one-line DiffusiaError) an output file that exists, unless it is a FILE_KINDS[kind] file replaced
    with `overwrite`; see _check_location for the rest."""
    path = Path(path)
    _check_location(path, inputs)
    if path.is_dir():
        raise DiffusiaError(f"output {path} is an existing folder, not a file: choose a file path")
    if not path.exists():
        return
    what, recognise = FILE_KINDS[kind]
    if not recognise(path):
        raise DiffusiaError(
            f"output {path} exists and is not a {what} (--overwrite replaces only those): choose another path"
        )
    if not overwrite:
        raise DiffusiaError(f"output {path} holds an earlier {what}: pass --overwrite to replace it")


@contextlib.contextmanager
def output_dir(
    path: str | os.PathLike, kind: str, overwrite: bool = False, inputs: Iterable[Any] = ()
) -> Iterator[Path]:
    """check_output_dir, then a fresh marked folder at `path` written in place by the block. An earlier output is
    set aside and deleted once the block succeeds; if it fails, what it wrote goes and the earlier output is back."""
    path = Path(path)
    check_output_dir(path, kind, overwrite, inputs)
    with naming_output(path):
        remove_stale_temps(path)
        created = next((a for a in reversed([path, *path.parents]) if not a.exists()), path)  # outermost new folder
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old)
        try:
            mark_output_dir(path, kind)
            yield path
        except BaseException:
            _remove(created)
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            _remove(old)
