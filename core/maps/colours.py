"""What else a map can be coloured, sized and filtered by: tags, hand labels, noise scores, duplicates,
contamination.

A small registry of sources. Each source offers the columns it has rows for among a map's samples
(`offered`) and turns a column name back into one SQL query (`resolve`) that `load_values` runs joined
on the map's projection, so a 100k-point map costs one query per column. Names look like
`tag:difficulty`, `label:task/category`, `noise:12/aum score`, `dup:run 3`, `contamination:run 5`;
they are parsed and looked up (tag names, schema/field pairs, run ids) and only ever bound as
parameters; the one SQL identifier that varies (a noise_scores column) comes from a fixed whitelist.

    from core.maps.colours import offered, resolve, load_values
    offered(store, projection_run_id)        # {"tag:difficulty": "category", "noise:12/aum score": "numeric", ...}
    load_values(store, resolve(store, "tag:difficulty"), projection_run_id)   # Series: sample id -> value
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.dedup.signals import DUP_DROP, DUP_KEPT, DUP_UNIQUE  # one wording with the dup.status signal
from core.labels.labelling import TIE  # a labelled sample whose annotators disagree and nobody adjudicated
from core.noise.config import FLAG_COLUMNS, SCORE_COLUMNS
from core.store.database import Store
from core.tags.results import newest_ok_sql
from core.tags.vocabulary import SCORE_TAGS

KINDS = ("numeric", "category", "bool")


@dataclass(frozen=True)
class Column:
    """A resolved colour column: its kind and the query giving (id, value) for projection `$proj`."""

    name: str
    kind: str
    sql: str
    params: dict[str, Any] | list[Any] = field(default_factory=dict)  # a list: positional, projection last


@dataclass(frozen=True)
class Source:
    offer: Callable[[Store, int], dict[str, str]]
    resolve: Callable[[Store, str], Column]


# Every value query joins on the map's projection, so only the map's samples are read.
_ON_MAP = "JOIN projections p ON p.run_id = $proj AND p.sample_id = {alias}.sample_id"
_FINISHED = "JOIN runs r ON r.run_id = {alias}.run_id AND r.status = 'finished'"


# ---- machine tags ---------------------------------------------------------------------------------


def _tag_kind(tag: str, has_value: bool) -> str:
    return "numeric" if tag in SCORE_TAGS or not has_value else "category"


def _offer_tags(store: Store, proj: int) -> dict[str, str]:
    df = store.query_df(
        "SELECT t.tag, count(t.value) AS n_value, count(t.score) AS n_score FROM tags t "
        f"{_ON_MAP.format(alias='t')} {_FINISHED.format(alias='t')} "
        "WHERE t.status = 'ok' GROUP BY t.tag ORDER BY t.tag", {"proj": proj})
    return {f"tag:{r.tag}": _tag_kind(r.tag, r.n_value > 0) for r in df.itertuples()
            if r.n_value > 0 or r.n_score > 0}


def _resolve_tag(store: Store, tag: str) -> Column:
    row = store.query_df("SELECT count(value) AS n_value, count(score) AS n_score FROM tags "
                         "WHERE tag = $tag AND status = 'ok'", {"tag": tag}).iloc[0]
    if row.n_value == 0 and row.n_score == 0:
        raise ValueError(f"no tag {tag!r} with a value in this store")
    kind = _tag_kind(tag, row.n_value > 0)
    value = "t.score" if kind == "numeric" else "t.value"
    # The newest finished run with a usable value wins: a newer run that could not make this tag
    # (not_computed, request_error) does not hide an older real value.
    current, params = newest_ok_sql(value, [tag], finished=True)
    sql = (f"SELECT v.sample_id AS id, v.value FROM ({current}) v "
           "JOIN projections p ON p.run_id = ? AND p.sample_id = v.sample_id")
    return Column(f"tag:{tag}", kind, sql, params)


# ---- hand labels ------------------------------------------------------------------------------------


def _offer_labels(store: Store, proj: int) -> dict[str, str]:
    df = store.query_df(f"SELECT c.schema, c.field FROM label_consensus c {_ON_MAP.format(alias='c')} "
                        "GROUP BY ALL ORDER BY 1, 2", {"proj": proj})
    return {f"label:{r.schema}/{r.field}": "category" for r in df.itertuples()}


def _resolve_label(store: Store, rest: str) -> Column:
    # Matched whole against the log, so a '/' inside a schema or field name is no ambiguity.
    df = store.query_df("SELECT DISTINCT schema, field FROM label_events WHERE kind = 'label' "
                        "AND schema || '/' || field = $name LIMIT 1", {"name": rest})
    if df.empty:
        raise ValueError(f"no hand labels for schema/field {rest!r}")
    sql = ("SELECT c.sample_id AS id, CASE WHEN c.value IS NULL THEN $tie "
           "WHEN json_type(c.value) = 'ARRAY' THEN array_to_string(from_json(c.value, '[\"VARCHAR\"]'), ', ') "
           f"ELSE c.value ->> '$' END AS value FROM label_consensus c {_ON_MAP.format(alias='c')} "
           "WHERE c.schema = $schema AND c.field = $field")
    return Column(f"label:{rest}", "category", sql,
                  {"schema": df["schema"][0], "field": df["field"][0], "tie": TIE})


# ---- noise scores -----------------------------------------------------------------------------------

# Option -> (noise_scores column, kind): the combined columns, then each method's score and flag.
NOISE_COLUMNS: dict[str, tuple[str, str]] = {
    "combined score": ("label_score", "numeric"),
    "label issue": ("is_label_issue", "bool"),
    "flags": ("n_flags", "numeric"),
    "given label": ("given_label", "category"),
    "predicted label": ("predicted_label", "category"),
    "outlier score": ("outlier_score", "numeric"),
    "outlier flag": ("outlier_flag", "bool"),
    "near duplicate score": ("near_duplicate_score", "numeric"),
    "near duplicate flag": ("near_duplicate_flag", "bool"),
    "cartography region": ("cartography_region", "category"),
    **{f"{m} score": (column, "numeric") for m, column in SCORE_COLUMNS.items()},
    **{f"{m} flag": (column, "bool") for m, column in FLAG_COLUMNS.items()},
}


def _offer_noise(store: Store, proj: int) -> dict[str, str]:
    options = list(NOISE_COLUMNS.items())
    counts = ", ".join(f'count(n."{column}") AS c{i}' for i, (_, (column, _)) in enumerate(options))
    df = store.query_df(f"SELECT n.run_id, {counts} FROM noise_scores n {_ON_MAP.format(alias='n')} "
                        f"{_FINISHED.format(alias='n')} GROUP BY n.run_id ORDER BY n.run_id DESC", {"proj": proj})
    return {f"noise:{int(row['run_id'])}/{label}": kind
            for _, row in df.iterrows() for i, (label, (_, kind)) in enumerate(options) if row[f"c{i}"] > 0}


def _resolve_noise(store: Store, rest: str) -> Column:
    match = re.fullmatch(r"(\d+)/(.+)", rest)
    if not match or match.group(2) not in NOISE_COLUMNS:
        raise ValueError(f"noise columns are RUN/OPTION with OPTION one of {', '.join(NOISE_COLUMNS)}")
    run_id, (column, kind) = int(match.group(1)), NOISE_COLUMNS[match.group(2)]
    if store.query_df("SELECT 1 FROM noise_runs WHERE run_id = $run", {"run": run_id}).empty:
        raise ValueError(f"no noise run {run_id}")
    sql = (f'SELECT n.sample_id AS id, n."{column}" AS value FROM noise_scores n {_ON_MAP.format(alias="n")} '
           f'WHERE n.run_id = $run AND n."{column}" IS NOT NULL')
    return Column(f"noise:{rest}", kind, sql, {"run": run_id})


# ---- duplicates and contamination -------------------------------------------------------------------



def _run_of(store: Store, rest: str, kind: str) -> pd.Series:
    match = re.fullmatch(r"run (\d+)", rest)
    row = store.query_df("SELECT * FROM runs WHERE run_id = $run AND kind = $kind",
                         {"run": int(match.group(1)), "kind": kind}) if match else pd.DataFrame()
    if row.empty:
        raise ValueError(f"no {kind} run {rest!r} (names look like 'run 3')")
    return row.iloc[0]


def _offer_dup(store: Store, proj: int) -> dict[str, str]:
    run = store.query_df(f"SELECT max(g.run_id) AS run_id FROM dup_groups g {_ON_MAP.format(alias='g')} "
                         f"{_FINISHED.format(alias='g')}", {"proj": proj})["run_id"][0]
    return {} if pd.isna(run) else {f"dup:run {int(run)}": "category"}


def _resolve_dup(store: Store, rest: str) -> Column:
    run = _run_of(store, rest, "dedup")
    # Groups of one are not stored: a sample of a dataset the run looked at but in no group is unique;
    # samples of other datasets were not checked and stay missing.
    scope = json.loads(run["params"] or "{}").get("dataset_ids") or []
    sql = ("SELECT p.sample_id AS id, CASE WHEN g.sample_id IS NULL THEN $unique WHEN g.is_representative "
           "THEN $kept ELSE $drop END AS value FROM projections p JOIN samples s ON s.id = p.sample_id "
           "LEFT JOIN dup_groups g ON g.run_id = $run AND g.sample_id = p.sample_id "
           "WHERE p.run_id = $proj AND (g.sample_id IS NOT NULL OR list_contains($scope::INTEGER[], s.dataset_id))")
    return Column(f"dup:{rest}", "category", sql,
                  {"run": int(run["run_id"]), "scope": [int(i) for i in scope], "unique": DUP_UNIQUE,
                   "kept": DUP_KEPT, "drop": DUP_DROP})


def _offer_contamination(store: Store, proj: int) -> dict[str, str]:
    # One run per checked dataset (a contamination run checks one dataset): the newest with rows here.
    df = store.query_df(f"SELECT max(c.run_id) AS run_id FROM contamination_results c {_ON_MAP.format(alias='c')} "
                        f"{_FINISHED.format(alias='c')} GROUP BY r.dataset_id ORDER BY 1 DESC", {"proj": proj})
    return {f"contamination:run {int(r)}": "category" for r in df["run_id"]}


def _resolve_contamination(store: Store, rest: str) -> Column:
    run = _run_of(store, rest, "contamination")
    # Results hold only samples with some evidence: the rest of the checked dataset is clean.
    sql = ("SELECT p.sample_id AS id, CASE WHEN bool_or(c.contaminated) THEN 'contaminated' ELSE 'clean' END "
           "AS value FROM projections p JOIN samples s ON s.id = p.sample_id "
           "LEFT JOIN contamination_results c ON c.run_id = $run AND c.sample_id = p.sample_id "
           "WHERE p.run_id = $proj AND s.dataset_id = $dataset GROUP BY p.sample_id")
    return Column(f"contamination:{rest}", "category", sql,
                  {"run": int(run["run_id"]), "dataset": int(run["dataset_id"])})


# ---- any other signal of the registry (core/signals) --------------------------------------------------

# Families the sources above already offer under their own names (kept: saved links and pages use them).
_OWN_FAMILIES = {"tags", "labels", "noise", "dedup", "contamination", "maps"}
_KIND = {"number": "numeric", "category": "category", "bool": "bool", "text": "category"}


def _signal_columns(store: Store) -> dict[str, Any]:
    from core import signals

    return {s.name: s for s in signals.available(store) if s.family not in _OWN_FAMILIES}


def _offer_signals(store: Store, proj: int) -> dict[str, str]:
    out = {}
    for name, signal in _signal_columns(store).items():
        column = _resolve_signal(store, name, signal)
        if not store.query_df(f"SELECT 1 FROM ({column.sql}) LIMIT 1", [*column.params, proj]).empty:
            out[f"signal:{name}"] = column.kind  # nothing empty is offered
    return out


def _resolve_signal(store: Store, name: str, signal: Any = None) -> Column:
    from core.signals.registry import all_dataset_ids

    signal = signal or _signal_columns(store).get(name)
    if signal is None:
        raise ValueError(f"no signal {name!r} to colour by")
    with store.connect() as con:
        bound = signal.bind(con, all_dataset_ids(con))
    sql = (f"SELECT v.sample_id AS id, v.value FROM ({bound.sql}) v "
           "JOIN projections p ON p.run_id = ? AND p.sample_id = v.sample_id WHERE v.value IS NOT NULL")
    return Column(f"signal:{name}", _KIND[signal.kind], sql, list(bound.params))


# ---- the registry -----------------------------------------------------------------------------------

SOURCES: dict[str, Source] = {
    "tag": Source(_offer_tags, _resolve_tag),
    "label": Source(_offer_labels, _resolve_label),
    "noise": Source(_offer_noise, _resolve_noise),
    "dup": Source(_offer_dup, _resolve_dup),
    "contamination": Source(_offer_contamination, _resolve_contamination),
    "signal": Source(_offer_signals, _resolve_signal),
}


def is_source_column(name: str) -> bool:
    """Whether `name` belongs to a source here (`PREFIX:...`) rather than to the samples' own columns."""
    prefix, sep, _ = name.partition(":")
    return bool(sep) and prefix in SOURCES


def offered(store: Store, projection_run_id: int) -> dict[str, str]:
    """name -> kind of every column with at least one value among the projection's samples."""
    out: dict[str, str] = {}
    for source in SOURCES.values():
        out |= source.offer(store, projection_run_id)
    return out


def resolve(store: Store, name: str) -> Column:
    """The column `name` names, checked against the store; ValueError when there is no such column."""
    prefix, sep, rest = name.partition(":")
    if not sep or prefix not in SOURCES or not rest:
        raise ValueError(f"unknown column {name!r}; colour sources are {', '.join(p + ':' for p in SOURCES)}")
    return SOURCES[prefix].resolve(store, rest)


def load_values(store: Store, column: Column, projection_run_id: int) -> pd.Series:
    """One query: the column's value per sample id of the projection (samples without one are absent)."""
    if isinstance(column.params, list):  # a registry signal's query: positional, the projection last
        df = store.query_df(column.sql, [*column.params, projection_run_id])
    else:
        df = store.query_df(column.sql, {**column.params, "proj": projection_run_id})
    return pd.Series(df["value"].to_numpy(), index=df["id"].to_numpy("int64"), name=column.name)


def align(values: pd.Series, ids: pd.Series, kind: str) -> pd.Series:
    """`values` in the order of `ids` (the map's points), missing where a sample has none, typed by kind."""
    out = pd.Series(values.reindex(ids.to_numpy("int64")).to_numpy(), index=ids.index, name=values.name)
    if kind == "numeric":
        return pd.to_numeric(out, errors="coerce").astype("float64")
    if kind == "bool":
        return out.astype("boolean")
    return out.astype("string")
