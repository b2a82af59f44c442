"""The `assay` command line. Subcommands live in core/cli/commands/, one module per area.

Every subcommand handler takes (store, args) and returns a JSON-serialisable result plus, optionally, a
human rendering; `--json` prints the result as JSON, otherwise the rendering. Errors print one clear
line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

import core.browse.search_index as search_index
import core.cli.commands
from core.errors import UserError
from core.store.database import Store, StoreError

Handler = Callable[[Store, argparse.Namespace], tuple[Any, str]]


class UsageError(UserError):
    """A mistake in what the user asked for; printed as one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assay", description="Assay: curate LLM training data.")
    parser.add_argument("--db", help="store file (default: $ASSAY_DB or data/workbench.duckdb)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--busy-timeout", type=float, default=30.0, help="seconds to wait for a busy store")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(core.cli.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"core.cli.commands.{info.name}")
        module.register(subparsers)
    return parser


def _print_json(result: Any) -> None:
    print(json.dumps(result, indent=2, default=str, ensure_ascii=False))


def _report(as_json: bool, kind: str, message: str) -> None:
    # One line: a message spread over several lines reads like a traceback.
    message = " ".join(message.split("\n")).strip()
    if as_json:
        _print_json({"error": kind, "message": message})
    else:
        print(f"assay: error: {message}", file=sys.stderr)


def _log_traceback(exc: BaseException) -> str:
    """Write the traceback to a log file beside the temp dir and return its path."""
    import tempfile
    import traceback

    path = os.path.join(tempfile.gettempdir(), "assay-errors.log")
    with open(path, "a", encoding="utf-8") as log:
        log.write("".join(traceback.format_exception(exc)))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    store = Store(args.db, busy_timeout=args.busy_timeout)
    search_index.BACKGROUND_REBUILD = False  # this process ends before a background index build would
    # Where the JSON flag comes after the subcommand, argparse stores it on the sub-namespace too.
    as_json = bool(getattr(args, "json", False))
    try:
        result, text = args.handler(store, args)
    except (UserError, StoreError, KeyError, ValueError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _report(as_json, type(exc).__name__, str(message))
        return 2
    except KeyboardInterrupt:
        _report(as_json, "Interrupted", "interrupted; what was committed stays and the run can resume")
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback for the log
        log_path = _log_traceback(exc)
        _report(as_json, "InternalError",
                f"internal error ({type(exc).__name__}): {exc}; details in {log_path}")
        return 1
    if as_json:
        _print_json(result)
    elif text:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
