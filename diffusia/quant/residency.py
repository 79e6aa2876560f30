"""Give back the resident pages of tensors the kernels no longer read.

A loaded W8A8 layer's int8 weight is memory-mapped from the safetensors file; oneDNN copies it into its own
packed layout, after which the mapped pages are only needed again to save or copy the model. `release_pages`
asks Linux to reclaim them (`madvise(MADV_PAGEOUT)`, Linux >= 5.4): file-backed pages are dropped and re-read
from the file on the next access; anonymous memory keeps its data (it would only go to swap). Nothing changes
what the tensor holds, so it is safe on any tensor; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys

from torch import Tensor

MADV_PAGEOUT = 21


@functools.lru_cache(maxsize=1)
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def release_pages(t: Tensor) -> bool:
    """Reclaim the whole pages inside `t`'s CPU storage; True if the kernel accepted the advice."""
    fn = _madvise()
    if fn is None or t.device.type != "cpu" or t.numel() == 0:
        return False
    page = mmap.PAGESIZE
    begin = -(-t.data_ptr() // page) * page  # whole pages only: neighbours may share the edge pages
    end = (t.data_ptr() + t.numel() * t.element_size()) // page * page
    return end > begin and fn(begin, end - begin, MADV_PAGEOUT) == 0
