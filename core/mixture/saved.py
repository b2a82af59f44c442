"""Saved recipes and the record of exports (migration 0008)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.mixture.recipe import Recipe, dump_recipe, load_recipe
from core.store.database import Store, now_utc


def save_recipe(store: Store, recipe: Recipe, *, created_by: str = "") -> int:
    """Save a new version of the recipe under its name; returns its id (old versions stay)."""
    with store.connect() as con:
        return con.execute(
            "INSERT INTO mixture_recipes VALUES (nextval('mixture_recipe_id_seq'), ?, ?, ?, ?, ?) RETURNING recipe_id",
            [recipe.name, dump_recipe(recipe), recipe.fingerprint(), now_utc(), created_by]).fetchone()[0]


def list_recipes(store: Store) -> pd.DataFrame:
    return store.query_df("SELECT recipe_id, name, fingerprint, created_at, created_by FROM mixture_recipes "
                          "ORDER BY recipe_id DESC")


def get_recipe(store: Store, name_or_id: str | int) -> Recipe:
    """A saved recipe by id, or the newest version of a name."""
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        df = store.query_df("SELECT yaml FROM mixture_recipes WHERE recipe_id = ?", [int(name_or_id)])
    else:
        df = store.query_df("SELECT yaml FROM mixture_recipes WHERE name = ? ORDER BY recipe_id DESC LIMIT 1",
                            [str(name_or_id)])
    if df.empty:
        raise KeyError(f"No saved recipe {name_or_id!r} in {store.path}")
    return load_recipe(str(df.yaml[0]))


def record_export(store: Store, run_id: int, recipe: Recipe, out: Path, formats: list[str], n_samples: int,
                  n_tokens: int, manifest_sha256: str, manifest_text: str) -> None:
    with store.connect() as con:
        con.execute("INSERT INTO mixture_exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, recipe.name, recipe.fingerprint(), str(out), formats, n_samples, n_tokens,
                     manifest_sha256, manifest_text, now_utc()])


def list_exports(store: Store) -> pd.DataFrame:
    return store.query_df("SELECT run_id, recipe_name, out_dir, formats, n_samples, n_tokens, manifest_sha256, "
                          "created_at FROM mixture_exports ORDER BY run_id DESC")


# ---- signals (core/signals): membership of the newest export of each recipe --------------------------------


def _members(recipe_name: str) -> Any:
    from core.signals.registry import Bound

    def build(con: Any, dataset_ids: Any, run: int | None) -> Bound:
        row = con.execute("SELECT e.run_id, e.out_dir FROM mixture_exports e JOIN runs r USING (run_id) "
                          "WHERE e.recipe_name = ? AND r.status = 'finished'" + (" AND e.run_id = ?" if run else "")
                          + " ORDER BY e.run_id DESC LIMIT 1", [recipe_name, *([run] if run else [])]).fetchall()
        # The export's provenance.parquet lists its samples; a moved or deleted export has no members.
        path = Path(row[0][1]) / "provenance.parquet" if row else None
        if path is None or not path.is_file():
            return Bound("SELECT CAST(NULL AS BIGINT) AS sample_id, CAST(NULL AS BOOLEAN) AS value WHERE false")
        return Bound("SELECT s.id AS sample_id, s.id IN (SELECT sample_id FROM read_parquet(?)) AS value "
                     "FROM samples s WHERE list_contains(?::INTEGER[], s.dataset_id)",
                     [str(path), list(dataset_ids)], (int(row[0][0]),))

    return build


def signals(con: Any, dataset_ids: Any) -> list[Any]:
    """Signal provider: mixture.<recipe> per exported recipe: in its newest export or not."""
    from core.signals.registry import Signal

    rows = con.execute("SELECT DISTINCT recipe_name FROM mixture_exports ORDER BY 1").fetchall()
    return [Signal(f"mixture.{name}", "bool", f"in the newest export of mixture recipe {name!r} "
                   "(core/mixture/export.py, assay mix)", "true = exported in that mixture", _members(name),
                   family="mixture") for (name,) in rows]
