"""Saved recipes and the record of exports (migration 0008)."""

from __future__ import annotations

from pathlib import Path

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
