"""Filters and the candidate table: every sample of every source, with one boolean per filter.

The candidate table (`mix_cand`, a TEMP table on the caller's connection) has one row per sample of each
source: id, src (index of the source in the recipe), n_tokens, n_turns, n_chars, category, language,
score, weight, the facts warnings need (contaminated, unsafe, excluded, is_eval) and f0..fK, one column per
filter (true = kept). Filters apply in order, Data-Juicer style: "what filter k removes" counts samples
that passed filters 0..k-1 and fail filter k. De-duplication then keeps one passing sample per group.

Where the values come from (hooks that return nothing when that part of Assay is absent):
- `tag.<name>`: table `tags` (a later migration), latest value per sample;
- `label.<schema>.<field>`: core.labels.labelling.current_labels (the consensus of hand labels);
- not_contaminated: core.contamination.check results, the latest finished run per dataset (or a given run);
- not_excluded: core.browse.selections.excluded_ids (hand exclusions);
- not_unsafe: a `safety` tag or hand-label field whose value says unsafe.

Safety: user values are bound parameters; only field expressions built here from whitelisted names (and
JSON pointers passed as parameters) reach the SQL text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from core.browse.samples import json_pointer
from core.errors import UserError
from core.mixture.recipe import SIGNAL_PREFIX, FilterSpec, Recipe, RecipeError
from core.store.database import Store

UNSAFE_VALUES = ("unsafe", "harmful", "toxic", "unsafe_content", "no")  # "no" for a field named is_safe
LANGUAGE_META_KEYS = ("language", "lang", "oasst_lang")
EXAMPLES_PER_FILTER = 3
EXAMPLE_CHARS = 300


class MixtureDataError(UserError):
    """Something the recipe needs is not in the store (a dataset, an embedding, a dedup run)."""


# ---- hooks into other parts of Assay ---------------------------------------------------------------


def _table_columns(store: Store, table: str) -> list[str]:
    df = store.query_df("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                        "AND table_schema = 'main' ORDER BY ordinal_position", [table])
    return list(df["column_name"])


def tag_values(store: Store, name: str) -> pd.DataFrame | None:
    """(sample_id, value) of machine tag `name` (core/tags/results.py), newest ok run per sample; None without tags.

    `name` may end in `.score` for the tag's score (reward, counts); otherwise the value, or the score where
    the tag has no value (pure score tags such as response_quality).
    """
    if "sample_id" not in _table_columns(store, "tags"):
        return None
    from core.tags.results import newest_ok_sql

    tag, want_score = (name[:-6], True) if name.endswith(".score") else (name, False)
    value = "CAST(t.score AS VARCHAR)" if want_score else "coalesce(t.value, CAST(t.score AS VARCHAR))"
    sql, params = newest_ok_sql(value, [tag])
    return store.query_df(f"SELECT sample_id, value FROM ({sql})", params)


def signal_values(store: Store, name: str, dataset_ids: list[int]) -> tuple[pd.DataFrame, tuple[int, ...]]:
    """(sample_id, value) of a registry signal (core/signals) over these datasets, and the runs behind it."""
    from core.signals.registry import values_on

    with store.connect() as con:
        try:
            return values_on(con, name, dataset_ids)
        except UserError as exc:
            raise MixtureDataError(f"signal:{name}: {exc}") from None


def label_values(store: Store, schema: str, field_name: str) -> pd.DataFrame | None:
    """(sample_id, value) of the current hand label; None when the schema has no such field."""
    import core.labels.labelling as labels

    df = labels.current_labels(store, schema)
    if df.empty or field_name not in df.columns:
        return pd.DataFrame({"sample_id": pd.Series(dtype="int64"), "value": pd.Series(dtype="str")})
    values = df[field_name].map(lambda v: None if v is None else v if isinstance(v, str) else json.dumps(v))
    return pd.DataFrame({"sample_id": df.index.astype("int64"), "value": values.to_numpy()})


def contamination_ids(store: Store, dataset_ids: list[int], run: int | None = None) -> tuple[set[int], list[int]]:
    """Sample ids flagged as contaminated, and the runs used (the latest finished one per dataset)."""
    if "sample_id" not in _table_columns(store, "contamination_results"):
        return set(), []
    if run is not None:
        runs = [run]
    else:
        df = store.query_df("SELECT dataset_id, max(run_id) AS run_id FROM runs WHERE kind = 'contamination' "
                            "AND status = 'finished' AND list_contains(?, dataset_id) GROUP BY dataset_id",
                            [dataset_ids])
        runs = sorted(int(r) for r in df["run_id"])
    if not runs:
        return set(), []
    ids = store.query_df("SELECT DISTINCT sample_id FROM contamination_results WHERE list_contains(?, run_id) "
                         "AND contaminated", [runs])
    return {int(x) for x in ids["sample_id"]}, runs


def unsafe_ids(store: Store) -> tuple[set[int], list[str]]:
    """Samples a `safety` tag or hand label calls unsafe, and where that came from."""
    found: set[int] = set()
    origins: list[str] = []
    tags = tag_values(store, "safety")
    if tags is not None and len(tags):
        hit = tags[tags["value"].str.lower().isin(UNSAFE_VALUES)]
        found |= {int(x) for x in hit["sample_id"]}
        origins.append("tag safety")
    try:
        import core.labels.labelling as labels
        schemas = labels.list_schemas(store)
    except (ImportError, duckdb.Error):
        schemas = pd.DataFrame()
    for name in sorted(set(schemas.get("name", []))):
        spec = labels.get_schema(store, name)
        for f in spec.fields:
            if f.name in ("safety", "safe", "is_safe", "harmful"):
                values = label_values(store, name, f.name)
                if values is not None and len(values):
                    hit = values[values["value"].astype(str).str.lower().isin(UNSAFE_VALUES)]
                    found |= {int(x) for x in hit["sample_id"]}
                    origins.append(f"hand label {name}.{f.name}")
    return found, origins


def excluded_sample_ids(store: Store) -> set[int]:
    from core.browse.selections import excluded_ids

    return excluded_ids(store)


# ---- field references -> SQL ---------------------------------------------------------------------


@dataclass
class FieldSource:
    """Prefetched values of external fields (tags, labels) and flags, registered on a connection."""

    external: dict[str, pa.Table] = field(default_factory=dict)  # ref -> (sample_id, value)
    id_sets: dict[str, pa.Table] = field(default_factory=dict)   # contaminated/unsafe/excluded -> ids
    notes: list[str] = field(default_factory=list)
    contamination_runs: list[int] = field(default_factory=list)
    signal_runs: dict[str, list[int]] = field(default_factory=dict)  # signal:NAME -> the runs its values came from
    unsafe_origins: list[str] = field(default_factory=list)

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        for ref in sorted(self.external):
            con.register(self.ext_name(ref), self.external[ref])
        for name, table in self.id_sets.items():
            con.register(f"_mx_ids_{name}", table)

    def ext_name(self, ref: str) -> str:
        return f"_mx_ext_{sorted(self.external).index(ref)}"


def _ids_table(ids: set[int]) -> pa.Table:
    return pa.table({"sample_id": pa.array(sorted(ids), type=pa.int64())})


def recipe_fields(recipe: Recipe) -> set[str]:
    refs = {f.field for s in recipe.sources for f in s.filters if f.field}
    refs |= {f.by for s in recipe.sources for f in s.filters if f.by}
    for ref in (recipe.targets.by, recipe.selection.score, recipe.weights.field if recipe.weights else None):
        if ref:
            refs.add(ref)
    return refs


def prefetch(store: Store, recipe: Recipe, dataset_ids: list[int]) -> FieldSource:
    """Read every tag, label and flag the recipe refers to (and the flags warnings need)."""
    src = FieldSource()
    for ref in sorted(recipe_fields(recipe)):
        if ref.startswith("tag."):
            df = tag_values(store, ref[4:])
            if df is None:
                raise MixtureDataError(f"{ref}: there are no machine tags in this store yet; tag the datasets first")
        elif ref.startswith("label."):
            schema, _, name = ref[6:].partition(".")
            df = label_values(store, schema, name)
            if df is None:
                raise MixtureDataError(f"{ref}: hand labels are not available in this Assay")
        elif ref.startswith(SIGNAL_PREFIX):
            df, bound = signal_values(store, ref[len(SIGNAL_PREFIX):], dataset_ids)
            src.signal_runs[ref] = list(bound.runs)
            # Signals keep their own type (numbers compare as numbers, flags as booleans).
            src.external[ref] = pa.Table.from_pandas(df[["sample_id", "value"]], preserve_index=False)
            continue
        else:
            continue
        src.external[ref] = pa.table({"sample_id": pa.array(df["sample_id"].astype("int64")),
                                      "value": pa.array(df["value"].astype(object), type=pa.string())})
    runs = {f.run for s in recipe.sources for f in s.filters if f.flag == "not_contaminated" and f.run}
    contaminated, used = contamination_ids(store, dataset_ids, next(iter(runs)) if len(runs) == 1 else None)
    src.contamination_runs = used
    unsafe, src.unsafe_origins = unsafe_ids(store)
    src.id_sets = {"contaminated": _ids_table(contaminated), "unsafe": _ids_table(unsafe),
                   "excluded": _ids_table(excluded_sample_ids(store))}
    return src


def field_sql(ref: str, src: FieldSource, dataset_name: str) -> tuple[str, list[Any]]:
    """SQL text (built only from whitelisted names) + bound parameters for a field reference."""
    if ref == "source":
        return "CAST(? AS VARCHAR)", [dataset_name]
    if ref.startswith("meta."):
        return "json_extract_string(s.meta, ?)", [json_pointer(ref[5:])]
    if ref in src.external:
        return f"{src.ext_name(ref)}.value", []
    from core.mixture.recipe import SAMPLE_FIELDS

    if ref in SAMPLE_FIELDS:
        return f"s.{ref}", []
    raise RecipeError("field", f"unknown field {ref!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def filter_sql(spec: FilterSpec, src: FieldSource, dataset_name: str) -> tuple[str, list[Any]]:
    """A boolean SQL expression (true = keep) and its parameters."""
    if spec.flag:
        name = {"not_contaminated": "contaminated", "not_excluded": "excluded", "not_unsafe": "unsafe"}[spec.flag]
        return f"s.id NOT IN (SELECT sample_id FROM _mx_ids_{name})", []
    expr, params = field_sql(spec.field, src, dataset_name)
    op, value = spec.op, spec.value
    if op in ("is_null", "not_null"):
        return f"({expr} IS {'NOT ' if op == 'not_null' else ''}NULL)", params
    if op in ("is_true", "is_false"):
        return f"coalesce({'NOT ' if op == 'is_false' else ''}TRY_CAST({expr} AS BOOLEAN), false)", params
    if op in ("contains", "not_contains"):
        pattern = "%" + str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        negate = "NOT " if op == "not_contains" else ""
        return f"coalesce({negate}(CAST({expr} AS VARCHAR) ILIKE ? ESCAPE '\\'), {op == 'not_contains'})", [
            *params, pattern]
    if op.startswith("percentile"):
        by_sql, by_params = field_sql(spec.by, src, dataset_name) if spec.by else ("NULL", [])
        num = f"TRY_CAST({expr} AS DOUBLE)"
        sign = ">=" if op == "percentile_ge" else "<="
        # NULL values sit in their own partition so they neither get nor shift a rank.
        sql = (f"coalesce(CASE WHEN {num} IS NULL THEN NULL ELSE 100 * percent_rank() OVER "
               f"(PARTITION BY {by_sql}, {num} IS NULL ORDER BY {num}) END {sign} ?, false)")
        return sql, [*params, *by_params, *params, *params, float(value)]
    if op == "between":
        lo, hi = value
        numeric = _is_number(lo) or _is_number(hi)
        typed = f"TRY_CAST({expr} AS DOUBLE)" if numeric else f"CAST({expr} AS VARCHAR)"
        parts, out = [], []
        for bound, sign in ((lo, ">="), (hi, "<=")):
            if bound is not None:
                parts.append(f"{typed} {sign} ?")
                out += [*params, float(bound) if numeric else _text(bound)]
        return f"coalesce({' AND '.join(parts) or 'true'}, false)", out
    if op in ("gt", "ge", "lt", "le"):
        sign = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
        if _is_number(value):
            return f"coalesce(TRY_CAST({expr} AS DOUBLE) {sign} ?, false)", [*params, float(value)]
        return f"coalesce(CAST({expr} AS VARCHAR) {sign} ?, false)", [*params, _text(value)]
    items = value if op in ("in", "not_in") else [value]
    if items and all(_is_number(v) for v in items):
        cond = f"list_contains(CAST(? AS DOUBLE[]), TRY_CAST({expr} AS DOUBLE))"
        bound = [float(v) for v in items]
    else:
        cond = f"list_contains(CAST(? AS VARCHAR[]), CAST({expr} AS VARCHAR))"
        bound = [_text(v) for v in items]
    if op in ("ne", "not_in"):
        return f"coalesce(NOT {cond}, true)", [bound, *params]
    return f"coalesce({cond}, false)", [bound, *params]


# ---- the candidate table --------------------------------------------------------------------------


def _language_sql(src: FieldSource) -> tuple[str, list[Any]]:
    parts, params = [], []
    if "tag.language" in src.external:
        parts.append(f"{src.ext_name('tag.language')}.value")
    for key in LANGUAGE_META_KEYS:
        parts.append("json_extract_string(s.meta, ?)")
        params.append(json_pointer(key))
    return f"coalesce({', '.join(parts)}, 'unknown')", params


def _source_select(recipe: Recipe, index: int, info: Any, src: FieldSource, n_filters: int) -> tuple[str, list[Any]]:
    source = recipe.sources[index]
    cols: list[str] = ["s.id", f"CAST({index} AS INTEGER) AS src", "s.n_tokens", "s.n_turns", "s.n_chars"]
    params: list[Any] = []
    if recipe.targets.by and recipe.targets.by != "source":
        by_sql, by_params = field_sql(recipe.targets.by, src, info.name)
        cols.append(f"coalesce(CAST({by_sql} AS VARCHAR), ?, '(none)') AS category")
        params += [*by_params, source.category]
    else:
        cols.append("CAST(? AS VARCHAR) AS category")
        params.append(source.category or info.name)
    lang_sql, lang_params = _language_sql(src)
    cols.append(f"lower({lang_sql}) AS language")
    params += lang_params
    if recipe.selection.score:
        score_sql, score_params = field_sql(recipe.selection.score, src, info.name)
        cols.append(f"TRY_CAST({score_sql} AS DOUBLE) AS score")
        params += score_params
    else:
        cols.append("CAST(NULL AS DOUBLE) AS score")
    if recipe.weights and recipe.weights.field:
        w_sql, w_params = field_sql(recipe.weights.field, src, info.name)
        cols.append(f"coalesce(TRY_CAST({w_sql} AS DOUBLE), ?) AS weight")
        params += [*w_params, recipe.weights.default]
    else:
        cols.append("CAST(NULL AS DOUBLE) AS weight")
    for name in ("contaminated", "unsafe", "excluded"):
        cols.append(f"s.id IN (SELECT sample_id FROM _mx_ids_{name}) AS {name}")
    for k in range(n_filters):
        if k < len(source.filters):
            sql, f_params = filter_sql(source.filters[k], src, info.name)
            cols.append(f"{sql} AS f{k}")
            params += f_params
        else:
            cols.append(f"true AS f{k}")
    joins = "".join(f" LEFT JOIN {src.ext_name(ref)} ON {src.ext_name(ref)}.sample_id = s.id"
                    for ref in sorted(src.external))
    sql = f"SELECT {', '.join(cols)} FROM samples s{joins} WHERE s.dataset_id = ?"
    return sql, [*params, info.dataset_id]


def build_candidates(con: duckdb.DuckDBPyConnection, recipe: Recipe, infos: list[Any], src: FieldSource) -> int:
    """Create TEMP table mix_cand (one row per sample of every source); returns the number of filter columns."""
    n_filters = max((len(s.filters) for s in recipe.sources), default=0)
    src.register(con)
    parts, params = [], []
    for index, info in enumerate(infos):
        sql, p = _source_select(recipe, index, info, src, n_filters)
        parts.append(f"({sql})")
        params += p
    con.execute("DROP TABLE IF EXISTS mix_cand")
    con.execute(f"CREATE TEMP TABLE mix_cand AS {' UNION ALL '.join(parts)}", params)
    return n_filters


def passes_sql(n_filters: int) -> str:
    return " AND ".join(f"f{k}" for k in range(n_filters)) or "true"


def apply_dedup(con: duckdb.DuckDBPyConnection, run_id: int | None, n_filters: int) -> None:
    """Add `dup_drop`: among samples passing every filter, all but one per duplicate group (across sources).

    The group's representative is kept where it passed the filters, else the lowest sample id.
    """
    if run_id is None:
        con.execute("CREATE OR REPLACE TEMP TABLE mix_cand AS SELECT *, false AS dup_drop FROM mix_cand")
        return
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE mix_cand AS
        WITH g AS (SELECT sample_id, group_id, is_representative FROM dup_groups WHERE run_id = ?),
             r AS (SELECT c.id, row_number() OVER (PARTITION BY g.group_id ORDER BY g.is_representative DESC, c.id) AS rn
                   FROM mix_cand c JOIN g ON g.sample_id = c.id WHERE {passes_sql(n_filters)})
        SELECT c.*, coalesce(r.rn > 1, false) AS dup_drop FROM mix_cand c LEFT JOIN r USING (id)
    """, [run_id])


def filter_counts(con: duckdb.DuckDBPyConnection, recipe: Recipe, n_filters: int, dedup: bool) -> pd.DataFrame:
    """Per source and step: samples before, removed by this step, after (filters in order, then dedup)."""
    aggs = ["count(*) AS n0"]
    for k in range(n_filters):
        aggs.append(f"count(*) FILTER (WHERE {passes_sql(k + 1)}) AS n{k + 1}")
    aggs.append(f"count(*) FILTER (WHERE {passes_sql(n_filters)} AND NOT dup_drop) AS n_final")
    df = con.execute(f"SELECT src, {', '.join(aggs)} FROM mix_cand GROUP BY src ORDER BY src").df()
    rows = []
    for row in df.itertuples(index=False):
        source = recipe.sources[int(row.src)]
        counts = [int(getattr(row, f"n{k}")) for k in range(n_filters + 1)]
        for k, spec in enumerate(source.filters):
            rows.append({"source": source.dataset, "step": k, "filter": spec.describe(), "before": counts[k],
                         "removed": counts[k] - counts[k + 1], "after": counts[k + 1]})
        if dedup:
            last = counts[len(source.filters)]
            rows.append({"source": source.dataset, "step": len(source.filters), "filter": "duplicates (one per group)",
                         "before": last, "removed": last - int(row.n_final), "after": int(row.n_final)})
    return pd.DataFrame(rows, columns=["source", "step", "filter", "before", "removed", "after"])


def filter_examples(con: duckdb.DuckDBPyConnection, recipe: Recipe, n_filters: int,
                    per_filter: int = EXAMPLES_PER_FILTER) -> pd.DataFrame:
    """A few samples each filter removed (passed the earlier filters, failed this one), as plain text."""
    frames = []
    for index, source in enumerate(recipe.sources):
        for k, spec in enumerate(source.filters):
            df = con.execute(
                f"SELECT c.id AS sample_id, left(s.text, {EXAMPLE_CHARS}) AS text FROM mix_cand c "
                f"JOIN samples s ON s.id = c.id WHERE c.src = ? AND {passes_sql(k)} AND NOT f{k} "
                "ORDER BY hash(c.id), c.id LIMIT ?", [index, per_filter]).df()
            df.insert(0, "filter", spec.describe())
            df.insert(0, "step", k)
            df.insert(0, "source", source.dataset)
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["source", "step", "filter", "sample_id", "text"])
    return pd.concat(frames, ignore_index=True)


ProgressFn = Callable[[str, float], None]
