"""The package layout holds: `import core` stays light, every public name resolves, no public name is
shadowed by a submodule of the same name, core never imports streamlit, and no sibling import is guarded."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import core

CORE = Path(core.__file__).resolve().parent


def _packages() -> list[str]:
    return ["core"] + [m.name for m in pkgutil.walk_packages(core.__path__, "core.") if m.ispkg]


def test_import_core_loads_nothing_heavy() -> None:
    code = ("import sys, core; heavy = [m for m in ('torch', 'umap', 'cleanlab', 'sentence_transformers', "
            "'streamlit', 'tantivy') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=CORE.parent).stdout.strip()
    assert out == "[]"


def test_every_public_name_resolves_and_none_is_a_submodule() -> None:
    for name in _packages():
        package = importlib.import_module(name)
        submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        for public in getattr(package, "__all__", []):
            assert public not in submodules, f"{name}.{public} is also a submodule: the import system shadows it"
            assert getattr(package, public) is not None, f"{name}.{public}"


def test_core_never_imports_streamlit_nor_guards_sibling_imports() -> None:
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.split(".")[0] == "streamlit" for n in names), path
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers):
                guarded = [n for n in ast.walk(ast.Module(body=node.body, type_ignores=[]))
                           if isinstance(n, ast.ImportFrom | ast.Import)]
                for imp in guarded:
                    names = [imp.module or ""] if isinstance(imp, ast.ImportFrom) else [a.name for a in imp.names]
                    assert not any(n.startswith("core") for n in names), f"{path}: a sibling import is guarded"
