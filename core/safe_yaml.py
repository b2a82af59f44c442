"""YAML from users (recipes, label schemas) with bounded work.

`yaml.safe_load` runs no code, but it expands aliases: a 420-byte "billion laughs" file becomes
gigabytes once the loaded value is turned into strings. Nothing Assay reads needs anchors or aliases, so
they are refused outright, with the text's size and nesting depth bounded too; every problem (syntax
included) is an InputError naming the file (or "the YAML text") and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError

MAX_BYTES = 1_000_000  # recipes and schemas are a few KB; this leaves room and bounds the parse
MAX_DEPTH = 64

__all__ = ["MAX_BYTES", "MAX_DEPTH", "YamlError", "load", "load_file", "read_text"]


class YamlError(InputError):
    """YAML that cannot be used: `where` names the file (or "the YAML text") and line."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


class _Loader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases, and with a bounded nesting depth."""

    source = "the YAML text"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise YamlError(f"{self.source} line {line}", "YAML anchors and aliases (& and *) are not allowed; "
                            "write the value out where it is used")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlError(f"{self.source} line {line}", f"nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load(text: str, source: str = "the YAML text") -> Any:
    """Parse YAML text safely (see the module doc); `source` names it in errors."""
    if len(text) > MAX_BYTES:
        raise YamlError(source, f"is {len(text):,} characters long; expected at most {MAX_BYTES:,}")
    loader = _Loader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source} line {mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlError(where, f"not valid YAML ({problem})") from None
    finally:
        loader.dispose()


def read_text(path: str | Path) -> str:
    """A YAML file's text, reading at most MAX_BYTES + 1 bytes (a missing file raises FileNotFoundError)."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlError(path.name, f"is over {MAX_BYTES:,} bytes; expected a small YAML file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlError(f"{path.name} line {line}", "not valid UTF-8; expected UTF-8 text") from None


def load_file(path: str | Path) -> Any:
    """Parse a YAML file safely; errors name the file and line."""
    return load(read_text(path), Path(path).name)
