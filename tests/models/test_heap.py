"""The freed heap goes back to the operating system before each VAE decode of a loaded pipeline."""

import pytest
import torch

from diffusia import load_pipeline
from diffusia.eval.memory import status_mb
from diffusia.models import heap


@pytest.mark.skipif(not heap.enabled(), reason="needs glibc's malloc_trim")
def test_release_returns_the_heap_that_freed_tensors_left():
    # a freed 16 MB tensor raises glibc's mmap threshold, so the 1 MB tensors after it come from the heap; the one
    # kept at the end holds the heap's top, so freeing the others leaves 120 MB of free heap that free() keeps
    del_me = torch.ones(4 * 2**20)
    del del_me
    small = [torch.ones(2**18) for _ in range(121)]
    last = small.pop()
    small.clear()
    before = status_mb("VmRSS")
    assert heap.release_free_memory()
    assert before - status_mb("VmRSS") > 60
    assert last.sum() == 2**18


def test_turned_off_by_its_environment_variable(monkeypatch):
    monkeypatch.setenv(heap.ENV, "0")
    assert not heap.enabled() and not heap.release_free_memory()


def test_a_loaded_pipeline_releases_before_each_decode_once(micro_pipeline_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "release_free_memory", lambda: calls.append(1) or True)
    pipe = load_pipeline(micro_pipeline_dir, progress=False)
    heap.release_before_decode(pipe)  # a second time: still one hook
    assert len(pipe.vae.decoder._forward_pre_hooks) == 1
    with torch.no_grad():
        pipe.vae.decode(torch.zeros(1, 4, 8, 8))
        pipe.unet(torch.zeros(1, 4, 8, 8), 10, torch.zeros(1, 77, 32))  # no decode: no release
    assert calls == [1]
