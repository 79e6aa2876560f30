"""Fresh measuring processes forked from a pre-imported zygote: one child per task, a new zygote for a new
environment, timeouts, failures, and the plain subprocess where there is no fork."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from diffusia.errors import DiffusiaError
from diffusia.eval import libraries, zygote

ROOT = Path(__file__).parents[2]
TASK = "tests.eval._zygote_task"


@pytest.fixture
def run(monkeypatch, tmp_path):
    """Run `_zygote_task` on a task dict: (exit code, what the process saw or None, its log)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setattr(zygote, "_zygote", None)
    count = iter(range(100))

    def run_task(timeout=None, **task):
        n = next(count)
        path, result, log = (tmp_path / f"{n}.{x}" for x in ("task.json", "result.json", "log"))
        path.write_text(json.dumps({**task, "result": str(result)}))
        code = zygote.run_worker(path, log, timeout=timeout, module=TASK)
        return code, json.loads(result.read_text()) if result.is_file() else None, log.read_text()

    yield run_task
    if zygote._zygote is not None:
        zygote._zygote.close()


def test_each_task_runs_in_its_own_child_of_one_zygote(run):
    code, first, log = run()
    assert code == 0 and "a line for the log" in log
    code, second, _ = run(code=3)
    assert code == 3  # the task's exit code
    # two children of the same zygote, each starting from the zygote's state (the module ran once in each)
    assert first["pid"] != second["pid"] and first["ppid"] == second["ppid"] == zygote._zygote.proc.pid
    assert first["calls"] == second["calls"] == 1 and os.getpid() not in (first["ppid"], first["pid"])


def test_a_child_starts_from_a_fresh_processs_resident_set(run, monkeypatch):
    """The memory baseline: after making the libraries resident, a child of the zygote holds what a fresh process
    holds after its imports (fork() leaves ~70 MB of torch's pages out of the child until then)."""
    monkeypatch.setenv("DIFFUSIA_ZYGOTE_TORCH", "1")
    _, child, _ = run()
    monkeypatch.setattr(zygote, "run_worker", zygote.run_fresh)
    _, fresh, _ = run()
    assert fresh["ppid"] == os.getpid() and child["ppid"] != os.getpid()
    assert fresh["rss_mb"] > 300 and abs(child["rss_mb"] - fresh["rss_mb"]) < 0.03 * fresh["rss_mb"]


def test_every_measuring_process_orders_sets_alike(run, monkeypatch):
    """A fixed hash seed (diffusers loads a pipeline's components in a set's order, which moves the load peak), unless
    the caller sets one."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    orders = [run()[1]["set_order"]]
    zygote._zygote.close()
    monkeypatch.setattr(zygote, "_zygote", None)  # a second zygote
    orders.append(run()[1]["set_order"])
    monkeypatch.setattr(zygote, "run_worker", zygote.run_fresh)
    orders.append(run()[1]["set_order"])
    assert orders[0] == orders[1] == orders[2]
    assert zygote.measuring_env({"PYTHONHASHSEED": "7"})["PYTHONHASHSEED"] == "7"


def test_a_changed_environment_gets_a_new_zygote(run, monkeypatch):
    _, before, _ = run()
    monkeypatch.setenv("DIFFUSIA_ZYGOTE_TEST", "on")
    _, after, _ = run()
    assert before["env"] is None and after["env"] == "on" and after["ppid"] != before["ppid"]


def test_a_task_past_its_timeout_is_killed_and_the_zygote_serves_on(run):
    run()
    server = zygote._zygote.proc.pid
    start = time.monotonic()
    with pytest.raises(zygote.WorkerTimeout):
        run(timeout=0.5, sleep=60)
    assert time.monotonic() - start < 30
    code, seen, _ = run()
    assert code == 0 and seen["ppid"] == server


def test_the_timeout_covers_the_zygotes_imports(run, monkeypatch):
    monkeypatch.setenv("DIFFUSIA_ZYGOTE_IMPORT_S", "60")
    start = time.monotonic()
    with pytest.raises(zygote.WorkerTimeout):
        run(timeout=0.5)
    assert time.monotonic() - start < 30 and zygote._zygote.proc.wait(timeout=10) is not None
    monkeypatch.delenv("DIFFUSIA_ZYGOTE_IMPORT_S")
    assert run()[0] == 0


def test_a_failing_task_leaves_its_traceback_in_the_log(run):
    code, seen, log = run(**{"raise": "no such thing"})
    assert code == 1 and seen is None and "ValueError: no such thing" in log


def test_a_dead_zygote_is_replaced(run):
    _, before, _ = run()
    os.kill(before["ppid"], signal.SIGKILL)
    zygote._zygote.proc.wait()
    code, after, _ = run()
    assert code == 0 and after["ppid"] != before["ppid"]


def test_a_zygote_that_cannot_start_is_one_line(run, monkeypatch, tmp_path):
    monkeypatch.setattr(zygote, "_zygote", None)
    task = tmp_path / "t.json"
    task.write_text("{}")
    with pytest.raises(DiffusiaError, match=r"measuring process exited \(code 1\): .*No module named 'no_such_module'"):
        zygote.run_worker(task, tmp_path / "log", module="no_such_module")


def test_without_fork_each_task_is_a_fresh_python(run, monkeypatch):
    monkeypatch.delattr(os, "fork")
    code, seen, log = run(code=4)
    assert code == 4 and seen["ppid"] == os.getpid() and "a line for the log" in log
    with pytest.raises(zygote.WorkerTimeout):
        run(timeout=0.5, sleep=60)
    assert zygote._zygote is None


def test_without_resident_libraries_each_task_is_a_fresh_python(run, monkeypatch):
    monkeypatch.setenv(libraries.ENV, "0")  # or a kernel without MADV_POPULATE_READ: a child would miss the pages
    code, seen, _ = run(code=6)
    assert code == 6 and seen["ppid"] == os.getpid() and zygote._zygote is None


def test_run_fresh_is_a_new_python_where_fork_exists_too(run, monkeypatch):
    monkeypatch.setattr(zygote, "run_worker", zygote.run_fresh)  # as benchmarks/measuring_processes.py compares
    code, seen, _ = run(code=5)
    assert code == 5 and seen["ppid"] == os.getpid() and zygote._zygote is None
