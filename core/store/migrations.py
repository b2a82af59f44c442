"""Schema of the store, as an ordered list of migrations.

Each migration is one file `core/store/schema/NNNN_description.sql`. Opening a store applies every migration
newer than the store's `schema_version` in one transaction; a store newer than this code is refused.
A feature adds its tables by adding a new file with the next number (never by editing an old one), so
that stores written by older versions upgrade in place.
"""

from __future__ import annotations

import re
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _load() -> list[tuple[int, str, str]]:
    found = []
    for path in sorted(SCHEMA_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise RuntimeError(f"Migration file {path} is not named NNNN_description.sql")
        found.append((int(match.group(1)), match.group(2).replace("_", " "), path.read_text()))
    numbers = [n for n, _, _ in found]
    # A gap would let a store upgraded past it skip the missing migration forever.
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"Migrations in {SCHEMA_DIR} must be numbered 1..N without gaps; found {numbers}")
    return found


MIGRATIONS: list[tuple[int, str, str]] = _load()
LATEST_VERSION = MIGRATIONS[-1][0]
