"""release_pages: reclaims mapped pages without changing what the tensor holds."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusia.quant.residency import release_pages

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_PAGEOUT) is Linux-only")


def rss_file_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_anonymous_memory_keeps_its_data():
    t = torch.randint(-64, 64, (1 << 22,), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    before = t.clone()
    release_pages(t)
    assert torch.equal(t, before)


@linux
def test_mapped_weight_pages_are_given_back_and_read_again(tmp_path):
    path = tmp_path / "w.safetensors"
    w = torch.randint(-64, 64, (32, 1 << 20), dtype=torch.int8, generator=torch.Generator().manual_seed(1))
    save_file({"w": w}, str(path))
    t = load_file(str(path))["w"]
    assert torch.equal(t, w)  # touches every page
    touched = rss_file_kb()
    assert release_pages(t)
    assert touched - rss_file_kb() > 16 * 1024  # most of the 32 MB left the resident set
    assert torch.equal(t, w)  # read again from the file
