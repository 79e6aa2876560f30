"""Hooks into other libraries. `import diffusia` registers the diffusers quantization method, without importing
diffusers itself (2-3 s): if diffusers is not imported yet, the registration runs right after it imports its
quantizer tables."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

DIFFUSERS_TABLES = "diffusers.quantizers.auto"


def register_diffusers() -> None:
    from diffusia.integrations.diffusers import register

    register()


def _register_quietly() -> None:
    try:
        register_diffusers()
    except Exception as e:  # never break the user's `import diffusers`; diffusia's own loading raises it again
        warnings.warn(f"diffusia could not register with diffusers: {e}", stacklevel=2)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds `diffusers.quantizers.auto` like the normal finders do, and registers once it has executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != DIFFUSERS_TABLES:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _register_quietly()

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if DIFFUSERS_TABLES in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
