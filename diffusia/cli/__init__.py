"""The `diffusia` command line: thin commands over the Python API, one module per command group. Every option is
checked while parsing (`options`); errors print one line and exit 2."""

from __future__ import annotations

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
        _fail(" ".join(e.format_message().split()) + hint, e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("diffusia: interrupted", err=True)
        sys.exit(130)
    except OSError as e:  # the last boundary: a disk or file error no command anticipated, as one line
        where = f" {e.filename}" if e.filename else ""
        _fail(f"I/O error on{where}: {e.strerror or e} (check the path, its permissions and the free space)")
    if code == 130:  # typer turns Ctrl-C into exit code 130
        typer.echo("diffusia: interrupted", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"diffusia: error: {message}", err=True)
    sys.exit(code)


__all__ = ["app", "main", "setup_process"]
