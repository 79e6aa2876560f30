"""Every page of the process's file mappings resident before a memory baseline, whatever the page cache held."""

import mmap

import pytest

from diffusia.eval import libraries

MB = 2**20


def _resident_kb(start: int) -> int:
    """Rss of the mapping at `start`, from /proc/self/smaps."""
    lines = open("/proc/self/smaps").read().splitlines()
    for i, line in enumerate(lines):
        if line.split("-")[0] == f"{start:x}" or line.startswith(f"{start:012x}-"):
            return next(int(x.split()[1]) for x in lines[i + 1 :] if x.startswith("Rss:"))
    raise AssertionError(f"no mapping at {start:x}")


@pytest.fixture
def mapped(tmp_path):
    """An 8 MB file mapped read-only and never read: none of its pages in this process's resident set."""
    path = tmp_path / "lib.bin"
    path.write_bytes(bytes(range(256)) * (8 * MB // 256))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        start = next(s for s, _, p in libraries.file_mappings() if p == str(path))
        yield start, m


@pytest.mark.skipif(not libraries.enabled(), reason="needs Linux >= 5.14 (MADV_POPULATE_READ)")
def test_every_page_of_every_file_mapping_becomes_resident(mapped):
    start, m = mapped
    assert _resident_kb(start) < 1024
    assert libraries.make_resident()
    assert _resident_kb(start) == 8 * 1024
    assert m[8 * MB - 1] == 255  # the mapping is untouched


def test_turned_off_it_maps_nothing(mapped, monkeypatch):
    monkeypatch.setenv(libraries.ENV, "0")
    start, _ = mapped
    assert not libraries.enabled() and not libraries.make_resident()
    assert _resident_kb(start) < 1024


def test_only_readable_regular_files_count():
    paths = {p for _, _, p in libraries.file_mappings()}
    assert paths and all(p.startswith("/") and not p.startswith("/dev/") for p in paths)
    assert any("python" in p for p in paths)  # the interpreter or its library
