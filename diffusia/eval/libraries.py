"""Make every page of the imported libraries resident before a memory baseline.

A process maps its shared libraries (libtorch_cpu.so alone is 330 MB) and faults their pages into its resident set
as it runs them, each fault mapping its neighbours too where the page cache holds them. So how much library code a
measurement counts as its own growth depends on what the page cache held: `tiny`'s FP32 peak in `eval` measured
117.7 MB from a long-used virtual environment and 129.5 MB from a freshly installed one, the same code on the same
machine, and 102.7 / 106.8 MB with the libraries resident (`benchmarks/resident_libraries.py`, one run each,
`benchmarks/results/vnni/resident_libraries/`). With every page of every file mapped at the baseline resident
(`madvise(MADV_POPULATE_READ)`, Linux >= 5.14), the growth is the variant's alone, whatever the page cache held.
Libraries loaded later (a runtime's plugins) still count with the pages they touch.

`DIFFUSIA_RESIDENT_LIBRARIES=0` turns it off.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

ENV = "DIFFUSIA_RESIDENT_LIBRARIES"
MADV_POPULATE_READ = 22


@functools.cache
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise


def file_mappings() -> list[tuple[int, int, str]]:
    """(start, end, path) of this process's readable mappings of regular files; [] without /proc."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    regular: dict[str, bool] = {}
    out = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1][0] != "r" or fields[4] == "0":
            continue  # unreadable or anonymous
        path = fields[5]
        if path not in regular:
            regular[path] = path.startswith("/") and not path.startswith("/dev/") and os.path.isfile(path)
        if regular[path]:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, path))
    return out


def make_resident() -> bool:
    """Fault in every page of the process's file mappings; whether it did (`enabled`)."""
    if not enabled():
        return False
    for start, end, _ in file_mappings():
        _madvise()(start, end - start, MADV_POPULATE_READ)  # EFAULT past a file's end: its pages before are in
    return True


def enabled() -> bool:
    """Not turned off, and the kernel has MADV_POPULATE_READ (tried on one page of the first file mapping)."""
    return os.environ.get(ENV, "1") != "0" and _supported()


@functools.cache
def _supported() -> bool:
    madvise, mappings = _madvise(), file_mappings()
    if madvise is None or not mappings:
        return False
    return madvise(mappings[0][0], os.sysconf("SC_PAGE_SIZE"), MADV_POPULATE_READ) == 0
