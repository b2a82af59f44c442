"""What else a map can be coloured, sized and filtered by: the signal registry (core/signals), nothing else.

Every registered signal with a value among a map's samples is offered (`offered`) and turned back into one
SQL query (`resolve`) that `load_values` runs joined on the map's projection, so a 100k-point map costs one
query per column. A new per-sample method registers its signal in its own package and is on the Map.

Names: `signal:<name>` reads the registry's default run (the newest finished). The families the Map named
before the registry keep those names, so saved links and pages still open them; `registry_name` maps each to
its signal and the run it reads: `tag:difficulty` -> tag.difficulty, `label:task/category` ->
label.task.category, `noise:12/aum score` -> noise.aum.score of run 12, `dup:run 3` -> dup.status of run 3,
`contamination:run 5` -> contamination of run 5. Names are looked up in the registry, never spliced into SQL.

    from core.maps.colours import offered, resolve, load_values
    offered(store, projection_run_id)        # {"tag:difficulty": "category", "noise:12/aum score": "numeric", ...}
    load_values(store, resolve(store, "tag:difficulty"), projection_run_id)   # Series: sample id -> value
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from core.signals.registry import Signal, all_dataset_ids, list_on
from core.store.database import Store
from core.tags.results import SIGNAL_NAMES

KINDS = ("numeric", "category", "bool")
_KIND = {"number": "numeric", "category": "category", "bool": "bool", "text": "category"}
# Name prefixes, in the order the Map lists their options; every one resolves to a registry signal.
SOURCES = ("tag", "label", "noise", "dup", "contamination", "signal")
# The Map's older wording of noise signals where it is not the signal's name with spaces.
_NOISE_LABELS = {"noise.combined.flag": "label issue", "noise.n_flags": "flags"}
# Signals offered once per run, as `PREFIX:run N`: signal -> (prefix, run kind).
_PER_RUN = {"dup.status": ("dup", "dedup"), "contamination": ("contamination", "contamination")}
_TAG_OF = {signal: tag for tag, signal in SIGNAL_NAMES.items()}


@dataclass(frozen=True)
class Column:
    """A resolved colour column: its kind and the query giving (id, value); the projection is the last parameter."""

    name: str
    kind: str
    sql: str
    params: list[Any] = field(default_factory=list)


# ---- names: the registry's, and the older ones mapped onto it -----------------------------------------------


def _noise_label(signal: str) -> str:
    """noise.cleanlab.score -> 'cleanlab score', noise.near_duplicate.flag -> 'near duplicate flag'."""
    return _NOISE_LABELS.get(signal) or signal.removeprefix("noise.").replace(".", " ").replace("_", " ")


def _label_names(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """label.<schema>.<field> -> label:<schema>/<field> for every hand-labelled field."""
    rows = con.execute("SELECT DISTINCT schema, field FROM label_events WHERE kind = 'label'").fetchall()
    return {f"label.{schema}.{name}": f"label:{schema}/{name}" for schema, name in rows}


def _run_of(con: duckdb.DuckDBPyConnection, kind: str, run: int) -> int:
    if not con.execute("SELECT 1 FROM runs WHERE run_id = ? AND kind = ?", [run, kind]).fetchall():
        raise ValueError(f"no {kind} run {run}")
    return run


def registry_name(con: duckdb.DuckDBPyConnection, name: str, known: dict[str, Signal]) -> tuple[str, int | None]:
    """The registry signal an option name opens and the run it reads (None: the newest finished);
    ValueError when `name` names nothing the registry (`known`: name -> signal) has."""
    prefix, sep, rest = name.partition(":")
    if not sep or not rest or prefix not in SOURCES:
        raise ValueError(f"unknown column {name!r}; colour sources are {', '.join(p + ':' for p in SOURCES)}")
    run = None
    if prefix in ("signal", "tag"):
        signal = rest if prefix == "signal" else SIGNAL_NAMES.get(rest, f"tag.{rest}")
    elif prefix == "label":
        # Matched whole against the log, so a '/' inside a schema or field name is no ambiguity.
        signal = next((s for s, legacy in _label_names(con).items() if legacy == name), "")
    elif prefix == "noise":
        match = re.fullmatch(r"(\d+)/(.+)", rest)
        if not match:
            raise ValueError(f"noise columns are noise:RUN/OPTION (e.g. noise:12/cleanlab score), not {name!r}")
        run = _run_of(con, "noise", int(match.group(1)))
        signal = next((s.name for s in known.values() if s.family == "noise"
                       and _noise_label(s.name) == match.group(2)), "")
    else:
        match = re.fullmatch(r"run (\d+)", rest)
        signal, kind = next((s, k) for s, (p, k) in _PER_RUN.items() if p == prefix)
        if not match:
            raise ValueError(f"no {kind} run {rest!r} (names look like '{prefix}:run 3')")
        run = _run_of(con, kind, int(match.group(1)))
    if signal not in known:
        raise ValueError(f"no signal for {name!r} in this store; signals: {', '.join(known) or 'none yet'}")
    return signal, run


def _option_names(con: duckdb.DuckDBPyConnection, signal: Signal, labels: dict[str, str],
                  noise_runs: list[int]) -> list[tuple[str, int | None]]:
    """The option names `signal` is offered under, each with the run it reads (registry_name's inverse)."""
    if signal.family == "tags":
        return [(f"tag:{_TAG_OF.get(signal.name, signal.name.removeprefix('tag.'))}", None)]
    if signal.name in labels:
        return [(labels[signal.name], None)]
    if signal.family == "noise":  # every finished noise run, as the Map always offered
        return [(f"noise:{run}/{_noise_label(signal.name)}", run) for run in noise_runs]
    if signal.name in _PER_RUN:  # the run(s) the registry reads by default: the newest per dataset
        runs = sorted(signal.bind(con, all_dataset_ids(con)).runs, reverse=True)
        return [(f"{_PER_RUN[signal.name][0]}:run {run}", run) for run in runs]
    return [(f"signal:{signal.name}", None)]


# ---- columns ------------------------------------------------------------------------------------------------


def _column(con: duckdb.DuckDBPyConnection, name: str, signal: Signal, run: int | None) -> Column:
    bound = signal.bind(con, all_dataset_ids(con), run)
    sql = (f"SELECT v.sample_id AS id, v.value FROM ({bound.sql}) v "
           "JOIN projections p ON p.run_id = ? AND p.sample_id = v.sample_id WHERE v.value IS NOT NULL")
    return Column(name, _KIND[signal.kind], sql, list(bound.params))


def is_source_column(name: str) -> bool:
    """Whether `name` belongs to a source here (`PREFIX:...`) rather than to the samples' own columns."""
    prefix, sep, _ = name.partition(":")
    return bool(sep) and prefix in SOURCES


def offered(store: Store, projection_run_id: int) -> dict[str, str]:
    """name -> kind of every registry signal with at least one value among the projection's samples."""
    found: list[tuple[tuple[int, int], str, str]] = []  # (where it is listed, name, kind)
    rank = {prefix: i for i, prefix in enumerate(SOURCES)}
    with store.connect() as con:
        labels = _label_names(con)
        noise_runs = [int(r[0]) for r in con.execute("SELECT run_id FROM runs WHERE kind = 'noise' AND status = "
                                                     "'finished' ORDER BY run_id DESC").fetchall()]
        for signal in list_on(con):
            for name, run in _option_names(con, signal, labels, noise_runs):
                column = _column(con, name, signal, run)
                if con.execute(f"SELECT 1 FROM ({column.sql}) LIMIT 1",  # nothing empty is offered
                               [*column.params, projection_run_id]).fetchall():
                    found.append(((rank[name.partition(":")[0]], -(run or 0)), name, column.kind))
    # By source, then the newest run first, then by signal name (the registry's order).
    return {name: kind for _, name, kind in sorted(found, key=lambda item: item[0])}


def resolve(store: Store, name: str) -> Column:
    """The column `name` names, through the registry; ValueError when there is no such column."""
    with store.connect() as con:
        known = {s.name: s for s in list_on(con)}
        signal, run = registry_name(con, name, known)
        return _column(con, name, known[signal], run)


def load_values(store: Store, column: Column, projection_run_id: int) -> pd.Series:
    """One query: the column's value per sample id of the projection (samples without one are absent)."""
    df = store.query_df(column.sql, [*column.params, projection_run_id])
    return pd.Series(df["value"].to_numpy(), index=df["id"].to_numpy("int64"), name=column.name)


def align(values: pd.Series, ids: pd.Series, kind: str) -> pd.Series:
    """`values` in the order of `ids` (the map's points), missing where a sample has none, typed by kind."""
    out = pd.Series(values.reindex(ids.to_numpy("int64")).to_numpy(), index=ids.index, name=values.name)
    if kind == "numeric":
        return pd.to_numeric(out, errors="coerce").astype("float64")
    if kind == "bool":
        return out.astype("boolean")
    return out.astype("string")
