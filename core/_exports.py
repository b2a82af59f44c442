"""Lazy public names for a package's `__init__`: the notebook imports `from core.maps import make_map`
without paying for torch, UMAP or cleanlab until a verb is used, and packages never import each other
at import time just to re-export (which is how import cycles start)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """(`__all__`, `__getattr__`) for `package`: each public name -> the submodule (relative) defining it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return sorted(exports), __getattr__
