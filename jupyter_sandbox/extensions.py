"""Loading `--extension` modules: Python files or importable modules that register custom
sandbox types (with `@SandboxRegistry.register(...)` or `register_sandbox_type`) when run."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType


class ExtensionError(RuntimeError):
    """An extension could not be found or raised while loading; the message says which."""


def load_extension(extension: str) -> ModuleType:
    """Run a file (`my_box.py`, `dir/my_box.py`) or import a module (`pkg.module`)."""
    try:
        if extension.endswith(".py") or os.sep in extension:
            path = os.path.abspath(extension)
            if not os.path.isfile(path):
                raise ExtensionError(f"--extension {extension}: no such file {path}")
            module_name = os.path.splitext(os.path.basename(path))[0]
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ExtensionError(f"--extension {extension}: cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            return module
        return importlib.import_module(extension)
    except ExtensionError:
        raise
    except Exception as e:
        raise ExtensionError(f"--extension {extension}: {type(e).__name__}: {e}") from e
