"""Give the memory freed by the denoising loop back to the operating system before the VAE decodes.

glibc's malloc raises its mmap threshold as large tensors are freed, so during the denoising loop later tensors come
from the heap, and the heap it keeps once they are freed is not returned. The VAE decode, the peak of a generation
at 512x512, then grows the process on top of it. `malloc_trim(0)` before the decoder runs returns that memory (a
forward pre-hook on `vae.decoder`, the module diffusers' plain, sliced and tiled decodes call).
`benchmarks/generation_memory.py` measures the peak both ways, and the release's own time.

`DIFFUSIA_MALLOC_TRIM=0` turns it off; off Linux, or with a C library without `malloc_trim`, it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Any

from torch import nn

ENV = "DIFFUSIA_MALLOC_TRIM"


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc has it, musl does not


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0" and _malloc_trim() is not None


def release_free_memory() -> bool:
    """Return the C heap's free memory to the operating system now; whether it ran."""
    if not enabled():
        return False
    _malloc_trim()(0)
    return True


def _before_decode(module: nn.Module, args: Any) -> None:
    release_free_memory()


def release_before_decode(pipe) -> None:
    """Have `pipe` release the freed heap before each VAE decode (once per decoder module)."""
    decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
    if isinstance(decoder, nn.Module) and not getattr(decoder, "_diffusia_releases_heap", False):
        decoder.register_forward_pre_hook(_before_decode)
        decoder._diffusia_releases_heap = True
