"""The `diffusia` command line: thin commands over the Python API, one module per command group. Every option is
checked while parsing (`options`); errors print one line and exit 2."""

from __future__ import annotations

import errno
import logging
import os
import sys

import typer

from diffusia.cli import analysis, evaluate, generate, qat, quantize
from diffusia.errors import DiffusiaError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Quantize Stable-Diffusion-class U-Nets for edge hardware, and measure what it buys.",
)


@app.callback()
def root() -> None:
    """diffusia: quantize, evaluate and analyse Stable-Diffusion-class pipelines."""


# the order of `diffusia --help`
for _module in (generate, quantize, analysis, evaluate, qat):
    for _name, _command in _module.COMMANDS.items():
        app.command(_name)(_command)


def setup_process() -> None:
    """Process-wide set-up of a command run (never done at import): quiet third-party loggers, diffusia's own
    warnings on stderr (and its progress on rank 0 of a multi-process run, prefixed with the rank)."""
    # diffusers imports torchao when present; on a CPU-only machine it and transformers log warnings about optional
    # CUDA extensions and torchvision that do not concern diffusia. Keep the console for diffusia's own messages.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rank = os.environ.get("RANK")
    if rank is None:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    else:  # under `accelerate launch`
        logging.basicConfig(
            level=logging.INFO if rank == "0" else logging.WARNING,
            format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point of `diffusia` (and `python -m diffusia`, `python -m diffusia.qat.train`)."""
    setup_process()
    try:
        code = app(args=argv, prog_name="diffusia", standalone_mode=False)
    except DiffusiaError as e:
        _fail(str(e))
    except typer.TyperException as e:  # click's, for a malformed command line: its message on one line
        if type(e).__name__ == "NoArgsIsHelpError":  # `diffusia` alone: the help
            e.show()
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        param = getattr(e, "param", None)  # a value click could not convert: add a valid one, the default
        if getattr(param, "opts", None) and type(param.default) in (int, float, str):
            hint = f", e.g. {max(param.opts, key=len)} {param.default}{hint}"
        _fail(" ".join(e.format_message().split()) + hint, e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("diffusia: interrupted", err=True)
        sys.exit(130)
    except OSError as e:  # the last boundary: a disk or file error no command anticipated, as one line
        _fail(io_error_message(e))
    if code == 130:  # typer turns Ctrl-C into exit code 130
        typer.echo("diffusia: interrupted", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


_DISK_FULL = "free space on that disk or choose a path on another one"
_NOT_WRITABLE = "choose a path you can write to"
# errno -> the fix for an OSError no command anticipated
IO_FIXES = {
    errno.ENOSPC: _DISK_FULL,
    errno.EDQUOT: _DISK_FULL,
    errno.EFBIG: "the file outgrew the size limit of this system (`ulimit -f`): raise it or write elsewhere",
    errno.EROFS: f"the file system is read-only: {_NOT_WRITABLE}",
    errno.EACCES: f"{_NOT_WRITABLE}, or fix its permissions",
    errno.EPERM: f"{_NOT_WRITABLE}, or fix its permissions",
    errno.ENOENT: "check the path",
}


def io_error_message(e: OSError) -> str:
    """One line for an OSError: the path (outputs name their --out path, see fileio.naming_output), what failed
    and the fix."""
    where = f" on {e.filename}" if e.filename else ""
    fix = IO_FIXES.get(e.errno, "check the path, its permissions and the free space")
    return f"I/O error{where}: {e.strerror or e}: {fix}"


def _fail(message: str, code: int = 2) -> None:
    _close_progress_bars()
    typer.echo(f"diffusia: error: {message}", err=True)
    sys.exit(code)


def _close_progress_bars() -> None:
    """Close the bars the error unwound past, so that the error stays the last line (a bar closed later, when the
    exception is dropped, would be redrawn after it)."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()


__all__ = ["app", "main", "setup_process"]
