"""Selections and exclusions: the sets of samples every page understands.

A selection made anywhere (a box on the map, a search, a filter, the noise report) is saved in the store
as a named set of sample ids, so the labelling page, the mixture designer and notebooks can use it.
Hand exclusions are an append-only log; a sample's current state is its latest event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

from core.store.database import Store, now_utc


def _ids_table(ids: Iterable[int]) -> pa.Table:
    unique = sorted({int(i) for i in ids})
    return pa.table({"sample_id": pa.array(unique, type=pa.int64())})


def save_selection(
    store: Store,
    name: str,
    ids: Iterable[int],
    *,
    origin: str,
    description: str = "",
    predicate: dict[str, Any] | None = None,
    created_by: str = "",
) -> int:
    """Save a set of sample ids under a name; returns the new selection id (names may repeat)."""
    if not name.strip():
        raise ValueError("A selection needs a name.")
    table = _ids_table(ids)
    with store.transaction() as con:
        selection_id = con.execute(
            "INSERT INTO selections VALUES (nextval('selection_id_seq'), ?, ?, ?, ?, ?, ?, ?) RETURNING selection_id",
            [name, origin, description, json.dumps(predicate or {}, default=str), table.num_rows, now_utc(), created_by],
        ).fetchone()[0]
        con.register("new_ids", table)
        con.execute("INSERT INTO selection_samples SELECT ?, sample_id FROM new_ids", [selection_id])
        con.unregister("new_ids")
    return selection_id


def list_selections(store: Store) -> pd.DataFrame:
    return store.query_df("SELECT * FROM selections ORDER BY selection_id DESC")


def selection_ids(store: Store, name_or_id: str | int) -> list[int]:
    """The ids of a selection, by id or by name (the newest of that name)."""
    with store.connect() as con:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            row = con.execute("SELECT selection_id FROM selections WHERE selection_id = ?", [int(name_or_id)]).fetchone()
        else:
            row = con.execute(
                "SELECT selection_id FROM selections WHERE name = ? ORDER BY selection_id DESC LIMIT 1", [name_or_id]
            ).fetchone()
        if row is None:
            raise KeyError(f"No selection {name_or_id!r} in {store.path}")
        return [r[0] for r in con.execute(
            "SELECT sample_id FROM selection_samples WHERE selection_id = ? ORDER BY sample_id", [row[0]]
        ).fetchall()]


def _record_exclusion(store: Store, ids: Iterable[int], excluded: bool, reason: str, origin: str, who: str) -> int:
    table = _ids_table(ids)
    with store.transaction() as con:
        con.register("new_ids", table)
        con.execute(
            "INSERT INTO exclusion_events SELECT nextval('exclusion_event_seq'), sample_id, ?, ?, ?, ?, ? FROM new_ids",
            [excluded, reason, origin, who, now_utc()],
        )
        con.unregister("new_ids")
    return table.num_rows


def exclude(store: Store, ids: Iterable[int], *, reason: str, origin: str, who: str = "") -> int:
    """Mark samples as excluded from mixtures (an event each); returns how many."""
    return _record_exclusion(store, ids, True, reason, origin, who)


def include(store: Store, ids: Iterable[int], *, reason: str = "re-included", origin: str = "manual", who: str = "") -> int:
    """Undo exclusions with new events; the old events stay in the log."""
    return _record_exclusion(store, ids, False, reason, origin, who)


def excluded_ids(store: Store, dataset_id: int | None = None) -> set[int]:
    sql = "SELECT e.sample_id FROM excluded_samples e"
    params: list[Any] = []
    if dataset_id is not None:
        sql += " JOIN samples s ON s.id = e.sample_id WHERE s.dataset_id = ?"
        params.append(dataset_id)
    with store.connect() as con:
        return {r[0] for r in con.execute(sql, params).fetchall()}


# ---- signals (core/signals): membership of saved selections, hand exclusions ------------------------------


def _membership(selection_id: int) -> Any:
    from core.signals.registry import Bound

    def build(con: Any, dataset_ids: Any, run: int | None) -> Bound:
        # Sparse (core/signals Bound.covers): the members are listed, every other sample is false.
        return Bound("SELECT DISTINCT sample_id, true AS value FROM selection_samples WHERE selection_id = ?",
                     [selection_id], default=False, covers=tuple(int(i) for i in dataset_ids))

    return build


def _excluded(value: str) -> Any:
    from core.signals.registry import Bound

    def build(con: Any, dataset_ids: Any, run: int | None) -> Bound:
        return Bound(f"SELECT s.id AS sample_id, {value} AS value FROM samples s LEFT JOIN excluded_samples e "
                     "ON e.sample_id = s.id WHERE list_contains(?::INTEGER[], s.dataset_id)", [list(dataset_ids)])

    return build


def signals(con: Any, dataset_ids: Any) -> list[Any]:
    """Signal provider: selection.<name> per saved selection (the newest of a name), exclusion.any and
    exclusion.reason where anything was ever excluded."""
    from core.signals.registry import Signal

    rows = con.execute("SELECT name, max(selection_id) FROM selections GROUP BY name ORDER BY name").fetchall()
    out = [Signal(f"selection.{name}", "bool", f"member of the saved selection {name!r} (id {sid}; "
                  "core/browse/selections.py: saved from the map, a search, a filter or the noise page)",
                  "true = in the selection", _membership(int(sid)), family="selection") for name, sid in rows]
    if con.execute("SELECT 1 FROM exclusion_events LIMIT 1").fetchall():
        out += [Signal("exclusion.any", "bool", "excluded from mixtures by hand (the latest exclusion event)",
                       "true = excluded", _excluded("e.sample_id IS NOT NULL"), family="selection"),
                Signal("exclusion.reason", "text", "why a sample was excluded from mixtures (the latest event)",
                       "missing = not excluded", _excluded("e.reason"), family="selection")]
    return out
