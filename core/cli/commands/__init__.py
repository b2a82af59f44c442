"""Subcommands of `assay`. Each module here exposes `register(subparsers)`; core/cli/main.py discovers them.

A handler takes (store, args) and returns (result, text): a JSON-serialisable result for `--json` and a
human rendering otherwise. Raise core.cli.main.UsageError (or ValueError/KeyError) for user mistakes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_command(
    subparsers: argparse._SubParsersAction, name: str, handler: Callable[..., tuple[Any, str]], help: str
) -> argparse.ArgumentParser:
    """Add a subcommand that also accepts `--json` after its name (`assay datasets --json`)."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser.set_defaults(handler=handler)
    return parser
