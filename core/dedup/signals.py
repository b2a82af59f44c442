"""Signal provider for duplicates (core/signals): dup.status and dup.group from the newest finished dedup run
that checked each dataset. Apart from core/dedup/groups.py so that listing signals does not import MinHash."""

from __future__ import annotations

import json
from typing import Any

DUP_KEPT, DUP_DROP, DUP_UNIQUE = "representative (kept)", "duplicate (to drop)", "not duplicated"


def _scope_runs(con: Any, dataset_ids: list[int], run: int | None) -> list[tuple[int, list[int]]]:
    """(run, datasets it checked among these) for `run`, or the newest finished dedup run per dataset."""
    rows = con.execute("SELECT run_id, params FROM runs WHERE kind = 'dedup' AND status = 'finished' "
                       + ("AND run_id = ? " if run is not None else "") + "ORDER BY run_id DESC",
                       [run] if run is not None else []).fetchall()
    out, left = [], set(dataset_ids)
    for run_id, params in rows:
        scope = set(json.loads(params or "{}").get("dataset_ids") or []) & left
        if scope:
            out.append((int(run_id), sorted(scope)))
            left -= scope
    return out


def _dup_signal(name: str, kind: str, value: str, description: str, read: str) -> Any:
    from core.signals.registry import Bound, Signal

    def build(con: Any, dataset_ids: list[int], run: int | None) -> Bound:
        parts, params = [], []
        # Groups of one are not stored: a sample of a dataset the run checked but in no group is unique.
        for run_id, scope in _scope_runs(con, dataset_ids, run) or [(-1, [])]:
            parts.append(f"SELECT s.id AS sample_id, {value} AS value FROM samples s LEFT JOIN dup_groups g "
                         "ON g.run_id = ? AND g.sample_id = s.id WHERE list_contains(?::INTEGER[], s.dataset_id)")
            params += [DUP_UNIQUE, DUP_KEPT, DUP_DROP, run_id, scope] if name == "dup.status" else [run_id, scope]
        runs = tuple(r for r, _ in _scope_runs(con, dataset_ids, run))
        return Bound(" UNION ALL ".join(parts), params, runs)

    return Signal(name, kind, description, read, build, family="dedup")


def signals(con: Any, dataset_ids: Any) -> list[Any]:
    """Signal provider: dup.status and dup.group where a dedup run finished."""
    if not con.execute("SELECT 1 FROM runs WHERE kind = 'dedup' AND status = 'finished' LIMIT 1").fetchall():
        return []
    method = "from the newest finished dedup run that checked the dataset (core/dedup/groups.py, assay dedup)"
    return [
        _dup_signal("dup.status", "category", "CASE WHEN g.sample_id IS NULL THEN ? WHEN g.is_representative "
                    "THEN ? ELSE ? END", f"duplicate status {method}",
                    f"{DUP_DROP!r} samples are dropped when a mixture keeps one per group"),
        _dup_signal("dup.group", "number", "g.group_id", f"duplicate group id {method}",
                    "samples with the same number are duplicates of each other; missing = not duplicated"),
    ]
