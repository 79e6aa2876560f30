"""Fresh measuring processes without paying for the imports each time.

A zygote is a Python process that imports what `diffusia.eval.worker` needs (torch, diffusers, transformers: ~5 s
on a 2-core CPU) and then forks one child per task. A child starts where a fresh `python -m diffusia.eval.worker`
starts after its imports, having loaded and run nothing. fork() leaves the libraries' file pages out of a child's
resident set; the worker's memory baseline makes every library page resident first (`libraries`), in a child as in
a fresh process, so the peak memory and the latency a child measures are its variant's alone. A zygote serves its
parent for as long as the parent's environment stays the same (variables such as `ATEN_CPU_CAPABILITY` take effect
at import); a changed environment gets a new zygote. Without `os.fork` (Windows), or where the libraries cannot be
made resident (Linux < 5.14), each task runs in a fresh `python -m diffusia.eval.worker`.

`python -m diffusia.eval.zygote MODULE` imports MODULE, then reads `task.json<TAB>log` lines on its stdin and answers
each with the child's pid and then its exit code, one line each; the child runs `MODULE.main([task.json])` with its
stdout and stderr in the log. The zygote exits when its stdin closes.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from diffusia.errors import DiffusiaError
from diffusia.eval import libraries

WORKER = "diffusia.eval.worker"


class WorkerTimeout(Exception):
    """The child ran past its timeout and was killed."""


class Zygote:
    def __init__(self, module: str, env: dict[str, str]):
        self.module, self.env = module, dict(env)
        self.errors = tempfile.TemporaryFile()  # its imports' warnings, and why it died if it does
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=measuring_env(self.env),
            bufsize=0,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, task: Path, log: Path, timeout: float | None) -> int:
        """The exit code of a child forked for `task`; WorkerTimeout (the child killed) past `timeout` seconds."""
        try:
            self.proc.stdin.write(f"{task}\t{log}\n".encode())
        except BrokenPipeError:
            pass  # the zygote died: _line says why
        pid = self._line(timeout)  # the first task waits for the zygote's imports
        if pid is None:
            self.proc.kill()
            raise WorkerTimeout
        answer = self._line(timeout)
        if answer is None:
            os.kill(int(pid), signal.SIGKILL)
            self._line(None)  # the zygote reaps it
            raise WorkerTimeout
        return int(answer)

    def _line(self, timeout: float | None) -> str | None:
        """The zygote's next line; None past `timeout`. Unbuffered, so select() sees every line."""
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            return None
        line = self.proc.stdout.readline()
        if not line.endswith(b"\n"):
            self.errors.seek(0)
            last = ([ln for ln in self.errors.read().decode(errors="replace").splitlines() if ln.strip()] or [""])[-1]
            raise DiffusiaError(f"the measuring process exited (code {self.proc.wait()}): {last}")
        return line.decode()

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.errors.close()


_zygote: Zygote | None = None


def run_worker(task: Path, log: Path, timeout: float | None = None, module: str = WORKER) -> int:
    """Run `module` (`diffusia.eval.worker`) on `task` in a fresh process, its output in `log`; its exit code."""
    global _zygote
    if not hasattr(os, "fork") or not libraries.enabled():
        return run_fresh(task, log, timeout, module)
    if _zygote is None or (_zygote.module, _zygote.env) != (module, dict(os.environ)) or not _zygote.alive():
        if _zygote is not None:
            _zygote.close()
        else:
            atexit.register(lambda: _zygote and _zygote.close())
        _zygote = Zygote(module, os.environ)
    return _zygote.run(task, log, timeout)


def run_fresh(task: Path, log: Path, timeout: float | None = None, module: str = WORKER) -> int:
    """`run_worker` in a fresh `python -m module` process (no zygote): where a zygote cannot serve, and to compare."""
    with open(log, "w") as out:
        try:
            cmd = [sys.executable, "-m", module, str(task)]
            return subprocess.run(cmd, stdout=out, stderr=out, timeout=timeout, env=measuring_env()).returncode
        except subprocess.TimeoutExpired:
            raise WorkerTimeout from None


def measuring_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A measuring process's environment: `env` (this process's) with a fixed hash seed unless it sets one. The seed
    orders Python's sets, and diffusers loads a pipeline's components in a set's order: `tiny`'s peak while loading
    differed by its U-Net's size (~27 MB) between orders, so with a random seed per process it varied between two
    levels (`benchmarks/measuring_processes.py`; README, "Evaluation speed and checks")."""
    return {"PYTHONHASHSEED": "0", **(os.environ if env is None else env)}


def _child(module, task: str, log: str) -> None:
    """In the forked child: output to `log`, run `module`, exit without returning to the zygote's loop."""
    code = 1
    try:
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = module.main([task]) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(name: str) -> None:
    import importlib

    module = importlib.import_module(name)  # what every child inherits
    for line in sys.stdin:
        task, log = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            _child(module, task, log)
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1])
