"""Lazy public names for a package's `__init__`: the notebook imports `from core.maps import make_map`
without paying for torch, UMAP or cleanlab until a verb is used, and packages never import each other
at import time just to re-export (which is how import cycles start)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """(`__all__`, `__getattr__`) for `package`: each public name -> the submodule (relative) defining it,
    or `submodule:attribute` where the public name differs from the defined one."""

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute or name)

    return sorted(exports), __getattr__
