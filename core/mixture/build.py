"""Composing a mixture: candidates -> filters -> de-duplication -> plan -> selection -> composition.

`compose_on(con, ...)` leaves two TEMP tables on the connection, which export.py then streams to files:
`mix_cand` (every sample of every source, with filter booleans) and `mix_sel` (the selected rows:
sample_id, src, copy, pos, split). `preview(store, recipe)` is the same without writing anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import UserError
from core.mixture import filters as flt
from core.mixture import select as sel
from core.mixture.plan import ALL, Plan, make_plan
from core.mixture.recipe import Recipe, RecipeError
from core.mixture.warnings import MixWarning, mixture_warnings
from core.store.database import DatasetInfo, Store

Progress = Callable[[str, float], None]
TURN_BUCKETS = "CASE WHEN n_turns <= 1 THEN '1' WHEN n_turns = 2 THEN '2' WHEN n_turns <= 4 THEN '3-4' " \
               "WHEN n_turns <= 8 THEN '5-8' ELSE '9+' END"
TOKEN_BUCKETS = "CASE WHEN n_tokens < 128 THEN '<128' WHEN n_tokens < 512 THEN '128-511' WHEN n_tokens < 1024 " \
                "THEN '512-1023' WHEN n_tokens < 2048 THEN '1024-2047' WHEN n_tokens < 4096 THEN '2048-4095' " \
                "ELSE '4096+' END"


class MixturePlanError(UserError):
    """The recipe's targets cannot be met; the message says which and why."""


@dataclass
class Composition:
    recipe: Recipe
    plan: Plan
    filter_counts: pd.DataFrame
    examples: pd.DataFrame
    sources: pd.DataFrame       # per source: provenance, licence, totals, kept counts
    composition: pd.DataFrame   # source, category, language, turns, tokens_bin -> n, tokens
    warnings: list[MixWarning]
    dedup_run: int | None
    contamination_runs: list[int]
    unsafe_origins: list[str]
    selection_notes: list[str] = field(default_factory=list)
    signal_runs: dict[str, list[int]] = field(default_factory=dict)  # signal:NAME used by the recipe -> its runs
    dataset_ids: list[int] = field(default_factory=list)
    exported_signals: dict[str, Any] = field(default_factory=dict)  # export.signals: name -> kind, runs, ...

    @property
    def n_selected(self) -> int:
        return int(self.sources.n_selected.sum())

    @property
    def n_tokens(self) -> int:
        return int(self.sources.tokens_selected.sum())

    def summary(self) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "n_samples": self.n_selected, "n_tokens": self.n_tokens,
                "feasible": self.plan.feasible, "issues": self.plan.issues, "steps": self.plan.steps,
                "per_source": self.sources[["dataset", "n_total", "n_after_filters", "n_selected", "tokens_selected",
                                            "license"]].to_dict("records"),
                "filters": self.filter_counts.to_dict("records"),
                "warnings": [w.to_dict() for w in self.warnings], "dedup_run": self.dedup_run}


def dataset_infos(store: Store, recipe: Recipe) -> list[DatasetInfo]:
    infos = []
    for i, source in enumerate(recipe.sources):
        try:
            infos.append(store.dataset(source.dataset))
        except KeyError as exc:
            raise RecipeError(f"sources[{i}].dataset", str(exc.args[0])) from None
    return infos


def resolve_dedup_run(store: Store, recipe: Recipe, infos: list[DatasetInfo]) -> int | None:
    """The dedup run the recipe names, or the newest finished run of its method covering every source.

    An exact run is computed (and recorded) when none exists; near and semantic ones are too slow to start
    from a preview, so they must be run first (`assay dedup --method near ...`).
    """
    spec = recipe.dedup
    if spec is None:
        return None
    if spec.run is not None:
        df = store.query_df("SELECT status FROM runs WHERE run_id = ? AND kind = 'dedup'", [spec.run])
        if df.empty or df.status[0] != "finished":
            raise RecipeError("dedup.run", f"no finished dedup run {spec.run} in the store")
        return spec.run
    wanted = {i.dataset_id for i in infos}
    runs = store.query_df("SELECT run_id, params FROM runs WHERE kind = 'dedup' AND status = 'finished' "
                          "ORDER BY run_id DESC")
    for row in runs.itertuples():
        params = json.loads(row.params or "{}")
        if params.get("method") == spec.method and wanted <= set(params.get("dataset_ids", [])):
            return int(row.run_id)
    if spec.method != "exact":
        raise flt.MixtureDataError(f"dedup: no finished {spec.method} dedup run covers "
                                   f"{', '.join(recipe.datasets)}; run `assay dedup --method {spec.method}` "
                                   f"with those datasets first, or name a run (dedup: {{run: N}})")
    from core.dedup.groups import find_duplicates

    return find_duplicates(store, recipe.datasets, method="exact").run_id


def weights_table(store: Store, run: int) -> pa.Table:
    """Per-sample loss weights of a noise run (core.noise.noise_weights: mean 1 over the run's samples)."""
    from core.noise import noise_weights

    try:
        df = noise_weights(store, run)
    except KeyError as exc:
        raise flt.MixtureDataError(f"weights.run: {exc.args[0]} (the noise page writes per-sample weights)") from None
    return pa.table({"sample_id": pa.array(df["sample_id"].astype("int64")),
                     "weight": pa.array(df["weight"].astype("float64"))})


# ---- selection ---------------------------------------------------------------------------------


def _opt_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _select_cell(con: duckdb.DuckDBPyConnection, recipe: Recipe, cell: Any, embeddings: sel.EmbeddingSource,
                 notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    where = "src = ? AND passed AND NOT dup_drop"
    params: list[Any] = [int(cell.src)]
    if cell.category != ALL:
        where += " AND category = ?"
        params.append(cell.category)
    table = con.sql(f"SELECT id, n_tokens, score FROM mix_cand WHERE {where} ORDER BY id", params=params).to_arrow_table()
    ids = table.column("id").to_numpy().astype(np.int64)
    tokens = table.column("n_tokens").to_numpy().astype(np.int64)
    scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    spec = recipe.selection
    rng = sel.cell_rng(recipe.seed, int(cell.src), str(cell.category))
    count, budget = _opt_int(cell.target_count), _opt_int(cell.target_tokens)
    wants_all = (count is not None and count >= len(ids)) or (budget is not None and budget >= tokens.sum())
    if spec.method == "top":
        order = sel.order_top(scores)
    elif spec.method in ("diverse", "kmq") and len(ids) and not wants_all:
        vectors, run = embeddings.vectors(cell.source, ids)
        k = spec.clusters or max(2, int(round(np.sqrt(len(ids)))))
        order, _ = sel.order_diverse(vectors, k, rng, recipe.seed,
                                     scores if spec.method == "kmq" else None, spec.temperature)
        notes.append(f"{cell.source}/{cell.category}: k-means k={min(k, len(ids))} on embedding run {run}"
                     + (f", kMQ softmax(score/{spec.temperature:g})" if spec.method == "kmq" else ", random per cluster"))
    else:
        order = sel.order_random(len(ids), rng)
    picks, copies = sel.take(order, tokens, count, budget, bool(cell.replace))
    return ids[picks], copies


def _selected_table(recipe: Recipe, parts: list[tuple[int, np.ndarray, np.ndarray]]) -> pa.Table:
    src = np.concatenate([np.full(len(i), s, np.int32) for s, i, _ in parts]) if parts else np.zeros(0, np.int32)
    ids = np.concatenate([i for _, i, _ in parts]) if parts else np.zeros(0, np.int64)
    copies = np.concatenate([c for _, _, c in parts]) if parts else np.zeros(0, np.int32)
    n = len(ids)
    rng = sel.cell_rng(recipe.seed, -1, "*", "order")
    if recipe.export.shuffle:
        order = rng.permutation(n)
    else:
        order = np.lexsort((copies, ids, src))
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    split = np.zeros(n, dtype=bool)
    if recipe.export.validation > 0 and n:
        # Split by sample id so that the copies of an upsampled sample never straddle train and validation.
        unique = np.unique(ids)
        n_val = max(1, int(round(len(unique) * recipe.export.validation)))
        val_ids = np.sort(sel.cell_rng(recipe.seed, -1, "*", "split").choice(unique, n_val, replace=False))
        split = np.isin(ids, val_ids)
    return pa.table({"sample_id": ids, "src": src, "copy": copies, "pos": pos,
                     "split": pa.array(np.where(split, "validation", "train"))})


def run_selection(con: duckdb.DuckDBPyConnection, store: Store, recipe: Recipe, plan: Plan,
                  progress: Progress | None = None) -> list[str]:
    notes: list[str] = []
    embeddings = sel.EmbeddingSource(store, recipe.selection.embed_run)
    parts = []
    for k, cell in enumerate(plan.cells.itertuples(index=False)):
        ids, copies = _select_cell(con, recipe, cell, embeddings, notes)
        parts.append((int(cell.src), ids, copies))
        if progress:
            progress("selecting", 0.4 + 0.1 * (k + 1) / max(len(plan.cells), 1))
    table = _selected_table(recipe, parts)
    con.register("_mx_sel_arrow", table)
    con.execute("CREATE OR REPLACE TEMP TABLE mix_sel AS SELECT * FROM _mx_sel_arrow")
    con.unregister("_mx_sel_arrow")
    return notes


# ---- composition -------------------------------------------------------------------------------


def _sources_frame(con: duckdb.DuckDBPyConnection, recipe: Recipe, infos: list[DatasetInfo]) -> pd.DataFrame:
    counts = con.execute("""
        WITH c AS (SELECT src, count(*) AS n_total, count(*) FILTER (WHERE passed AND NOT dup_drop) AS n_after_filters,
                          sum(n_tokens) FILTER (WHERE passed AND NOT dup_drop) AS tokens_after_filters
                   FROM mix_cand GROUP BY src),
             s AS (SELECT m.src, count(*) AS n_selected, count(DISTINCT m.sample_id) AS n_unique,
                          sum(c.n_tokens) AS tokens_selected,
                          count(*) FILTER (WHERE c.contaminated) AS contaminated_kept,
                          count(*) FILTER (WHERE c.unsafe) AS unsafe_kept,
                          count(*) FILTER (WHERE c.excluded) AS excluded_kept,
                          count(*) FILTER (WHERE m.split = 'validation') AS n_validation
                   FROM mix_sel m JOIN mix_cand c ON c.id = m.sample_id GROUP BY m.src)
        SELECT c.*, coalesce(s.n_selected, 0) AS n_selected, coalesce(s.n_unique, 0) AS n_unique,
               coalesce(s.tokens_selected, 0) AS tokens_selected, coalesce(s.contaminated_kept, 0) AS contaminated_kept,
               coalesce(s.unsafe_kept, 0) AS unsafe_kept, coalesce(s.excluded_kept, 0) AS excluded_kept,
               coalesce(s.n_validation, 0) AS n_validation
        FROM c LEFT JOIN s USING (src) ORDER BY src""").df()
    meta = pd.DataFrame([{
        "src": i, "dataset": info.name, "license": info.license, "synthetic": bool(info.synthetic),
        "is_eval": bool(info.is_eval), "description": info.description or "", "origin": info.source,
        "loaded_at": str(info.loaded_at), "ingest_run_id": info.ingest_run_id, "dataset_id": info.dataset_id,
    } for i, info in enumerate(infos)])
    out = meta.merge(counts, on="src", how="left").fillna({"n_total": 0, "n_after_filters": 0})
    for col in ("n_total", "n_after_filters", "tokens_after_filters", "n_selected", "n_unique", "tokens_selected",
                "contaminated_kept", "unsafe_kept", "excluded_kept", "n_validation"):
        out[col] = out[col].fillna(0).astype("int64")
    return out


def _composition_frame(con: duckdb.DuckDBPyConnection, recipe: Recipe) -> pd.DataFrame:
    df = con.execute(f"""
        SELECT c.src, c.category, c.language, {TURN_BUCKETS} AS turns, {TOKEN_BUCKETS} AS tokens_bin,
               count(*) AS n, sum(c.n_tokens) AS tokens
        FROM mix_sel m JOIN mix_cand c ON c.id = m.sample_id GROUP BY ALL ORDER BY ALL""").df()
    df.insert(1, "source", [recipe.sources[int(s)].dataset for s in df["src"]])
    return df.drop(columns="src")


def compose_on(con: duckdb.DuckDBPyConnection, store: Store, recipe: Recipe, *, with_examples: bool = True,
               progress: Progress | None = None) -> Composition:
    infos = dataset_infos(store, recipe)
    dedup_run = resolve_dedup_run(store, recipe, infos)
    src = flt.prefetch(store, recipe, [i.dataset_id for i in infos])
    if progress:
        progress("filtering", 0.1)
    n_filters = flt.build_candidates(con, recipe, infos, src)
    con.execute(f"ALTER TABLE mix_cand ADD COLUMN passed BOOLEAN; UPDATE mix_cand SET passed = {flt.passes_sql(n_filters)}")
    flt.apply_dedup(con, dedup_run, n_filters)
    if recipe.weights and recipe.weights.run is not None:
        con.register("_mx_weights", weights_table(store, recipe.weights.run))
        con.execute("UPDATE mix_cand SET weight = coalesce((SELECT w.weight FROM _mx_weights w "
                    "WHERE w.sample_id = mix_cand.id), ?)", [recipe.weights.default])
    counts = flt.filter_counts(con, recipe, n_filters, dedup_run is not None)
    examples = flt.filter_examples(con, recipe, n_filters) if with_examples else pd.DataFrame()
    avail = con.execute("SELECT src, category, count(*) AS n, sum(n_tokens) AS tokens FROM mix_cand "
                        "WHERE passed AND NOT dup_drop GROUP BY ALL ORDER BY ALL").df()
    plan = make_plan(recipe, avail)
    if progress:
        progress("selecting", 0.4)
    notes = run_selection(con, store, recipe, plan, progress)
    sources = _sources_frame(con, recipe, infos)
    composition = _composition_frame(con, recipe)
    warns = mixture_warnings(sources, composition, by=recipe.targets.by, contamination_runs=src.contamination_runs,
                             unsafe_origins=src.unsafe_origins, plan_issues=plan.issues)
    if progress:
        progress("composed", 0.5)
    return Composition(recipe, plan, counts, examples, sources, composition, warns, dedup_run,
                       src.contamination_runs, src.unsafe_origins, notes, src.signal_runs,
                       [i.dataset_id for i in infos])


def preview(store: Store, recipe: Recipe, *, with_examples: bool = True, progress: Progress | None = None) -> Composition:
    """What the recipe would export, without writing anything."""
    with store.connect() as con:
        return compose_on(con, store, recipe, with_examples=with_examples, progress=progress)
