"""The signal registry: every per-sample value a run produced, registered once, read by every consumer.

A signal has a dotted name (`tag.category`, `noise.cleanlab.flag`, `contamination`), a kind (number,
category, bool, text), a one-line description with its method, a line on how to read it, and a builder
that turns (connection, dataset ids, run choice) into one SQL query yielding `(sample_id, value)`.
Consumers compose those queries with LEFT JOINs, or read them as frames (`values`); the browser answers a
signal filter from the signal's own rows (core/browse/samples.py). A builder whose values are mostly one
default (contamination: clean) may return only the other rows, with the default and the datasets it covers
(`Bound.covers`); `bind` still gives every consumer one row per sample.

Signals come from providers: a function `signals(con, dataset_ids) -> list[Signal]` in each capability's
own module lists the signals that capability has data for in this store (one per tag, noise method,
label field, saved selection, ...). The built-in providers are listed once, in `_builtin_providers`;
anything else (a plug-in, a notebook, a test) calls `register(provider_or_signal)`.

    from core import signals
    signals.available(store, dataset="gsm8k-train")            # [Signal(name="tag.category", ...), ...]
    signals.values(store, "noise.cleanlab.flag", dataset="hate-offensive-crowd")   # sample_id, value
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import pandas as pd

from core.errors import NotFoundError
from core.store.database import Store

SignalKind = Literal["number", "category", "bool", "text"]
KINDS: tuple[str, ...] = ("number", "category", "bool", "text")
# The SQL type each kind's value column has once bound (builders cast to it, so joins compare alike).
SQL_TYPES = {"number": "DOUBLE", "category": "VARCHAR", "bool": "BOOLEAN", "text": "VARCHAR"}


@dataclass(frozen=True)
class Bound:
    """A signal's query for one scope: `sql` yields (sample_id, value); `runs` made those values."""

    sql: str
    params: list[Any] = field(default_factory=list)
    runs: tuple[int, ...] = ()
    # A sparse bound (`covers` set): `sql` lists only the samples whose value is not `default`; every other
    # sample of a dataset in `covers` has `default`, samples of other datasets have no value. A filter then
    # joins the few listed rows instead of one row per sample (contamination: 1% of the samples).
    default: Any = None
    covers: tuple[int, ...] | None = None


# (connection, dataset ids in scope, run id or None for the newest finished) -> Bound
Builder = Callable[[duckdb.DuckDBPyConnection, Sequence[int], "int | None"], Bound]


@dataclass(frozen=True)
class Signal:
    """One per-sample value: name, kind, what made it, how to read it, and how to query it."""

    name: str
    kind: SignalKind
    description: str  # one line, naming the method
    read: str         # how to read a value ("low = probably mislabelled")
    build: Builder = field(compare=False, repr=False)
    family: str = ""  # the capability that registered it (tags, noise, ...)

    def bind(self, con: duckdb.DuckDBPyConnection, dataset_ids: Sequence[int], run: int | None = None) -> Bound:
        """The query for these datasets, from run `run` (or the newest finished run per sample/dataset):
        one row per sample that has a value."""
        bound = self.bind_sparse(con, dataset_ids, run)
        if bound.covers is None:
            return bound
        sql = (f"SELECT s.id AS sample_id, CASE WHEN x.sample_id IS NULL THEN TRY_CAST(? AS {SQL_TYPES[self.kind]}) "
               f"ELSE x.value END AS value FROM samples s LEFT JOIN ({bound.sql}) x ON x.sample_id = s.id "
               "WHERE list_contains(?::INTEGER[], s.dataset_id)")
        return Bound(sql, [bound.default, *bound.params, list(bound.covers)], bound.runs)

    def bind_sparse(self, con: duckdb.DuckDBPyConnection, dataset_ids: Sequence[int],
                    run: int | None = None) -> Bound:
        """As `bind`, but a sparse builder's rows stay sparse (`Bound.covers` and `default` say the rest)."""
        bound = self.build(con, [int(i) for i in dataset_ids], None if run is None else int(run))
        # Every consumer sees the kind's SQL type, whatever the builder's column held.
        sql = f"SELECT sample_id, TRY_CAST(value AS {SQL_TYPES[self.kind]}) AS value FROM ({bound.sql})"
        covers = None if bound.covers is None else tuple(int(i) for i in bound.covers)
        return Bound(sql, list(bound.params), bound.runs, bound.default, covers)


Provider = Callable[[duckdb.DuckDBPyConnection, "Sequence[int] | None"], Iterable[Signal]]

# Each capability's provider, listed once: "module:function". Adding a capability = one line here.
_BUILTIN = (
    "core.tags.results:signals",
    "core.labels.labelling:signals",
    "core.noise.signals:signals",
    "core.dedup.signals:signals",
    "core.contamination.signals:signals",
    "core.maps.signals:signals",
    "core.maps.neighbours:signals",
    "core.browse.selections:signals",
    "core.mixture.saved:signals",
)
_extra: list[Provider] = []
_lock = threading.Lock()


def _static(signal: Signal) -> Provider:
    return lambda con, dataset_ids: [signal]


def register(item: Signal | Provider) -> Provider:
    """Add a signal, or a provider of signals, to the registry; returns the provider (for `unregister`)."""
    provider = _static(item) if isinstance(item, Signal) else item
    with _lock:
        _extra.append(provider)
    return provider


def unregister(provider: Provider) -> None:
    with _lock:
        if provider in _extra:
            _extra.remove(provider)


def _builtin_providers() -> list[Provider]:
    out = []
    for ref in _BUILTIN:
        module, _, name = ref.partition(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


def providers() -> list[Provider]:
    with _lock:
        extra = list(_extra)
    return _builtin_providers() + extra


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def list_on(con: duckdb.DuckDBPyConnection, dataset_ids: Sequence[int] | None = None) -> list[Signal]:
    """Every signal with data in this store (for these datasets where a provider can tell), by name."""
    found: dict[str, Signal] = {}
    for provider in providers():
        for signal in provider(con, dataset_ids):
            found.setdefault(signal.name, signal)  # the first provider to claim a name keeps it
    return [found[name] for name in sorted(found)]


def dataset_ids(con: duckdb.DuckDBPyConnection, dataset: str | int | Sequence[str] | None) -> list[int] | None:
    """Dataset ids for a name, id, list of names, or None (every dataset)."""
    if dataset is None:
        return None
    names = [dataset] if isinstance(dataset, (str, int)) else list(dataset)
    out = []
    for name in names:
        if isinstance(name, int):
            out.append(name)
            continue
        row = con.execute("SELECT dataset_id FROM datasets WHERE name = ?", [name]).fetchall()
        if not row:
            raise NotFoundError(f"no dataset named {name!r}")
        out.append(int(row[0][0]))
    return out


def available(store: Store, dataset: str | Sequence[str] | None = None) -> list[Signal]:
    """Every signal this store has data for (for `dataset`, where a provider can tell)."""
    with store.connect() as con:
        return list_on(con, dataset_ids(con, dataset))


def find_on(con: duckdb.DuckDBPyConnection, name: str, ids: Sequence[int] | None = None) -> Signal:
    """The signal called `name`; NotFoundError listing the known ones otherwise."""
    signals = list_on(con, ids)
    for signal in signals:
        if signal.name == name:
            return signal
    known = ", ".join(s.name for s in signals) or "none yet (run a tagger, noise, dedup, ...)"
    raise NotFoundError(f"no signal named {name!r}; signals in this store: {known}")


def get(store: Store, name: str, dataset: str | Sequence[str] | None = None) -> Signal:
    with store.connect() as con:
        return find_on(con, name, dataset_ids(con, dataset))


def all_dataset_ids(con: duckdb.DuckDBPyConnection) -> list[int]:
    return [int(r[0]) for r in con.execute("SELECT dataset_id FROM datasets ORDER BY 1").fetchall()]


def values_on(con: duckdb.DuckDBPyConnection, name: str, ids: Sequence[int] | None = None, *,
              run: int | None = None, sample_ids: Sequence[int] | None = None) -> tuple[pd.DataFrame, Bound]:
    scope = list(ids) if ids is not None else all_dataset_ids(con)
    bound = find_on(con, name, ids).bind(con, scope, run)
    sql, params = f"SELECT v.sample_id, v.value FROM ({bound.sql}) v WHERE v.value IS NOT NULL", list(bound.params)
    if sample_ids is not None:
        sql += " AND v.sample_id IN (SELECT unnest(?::BIGINT[]))"
        params.append([int(i) for i in sample_ids])
    return con.execute(sql + " ORDER BY v.sample_id", params).df(), bound


def values(store: Store, name: str, *, dataset: str | Sequence[str] | None = None, run: int | None = None,
           sample_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """(sample_id, value) of a signal, one row per sample that has a value, ordered by sample id."""
    with store.connect() as con:
        df, _ = values_on(con, name, dataset_ids(con, dataset), run=run, sample_ids=sample_ids)
    return df


def describe(store: Store, dataset: str | Sequence[str] | None = None) -> pd.DataFrame:
    """The registry as a table: name, kind, family, description, how to read it."""
    rows = [{"name": s.name, "kind": s.kind, "family": s.family, "description": s.description, "read": s.read}
            for s in available(store, dataset)]
    return pd.DataFrame(rows, columns=["name", "kind", "family", "description", "read"])


def newest_finished(con: duckdb.DuckDBPyConnection, kind: str, dataset_ids: Sequence[int],
                    run: int | None = None) -> list[int]:
    """The run to read per dataset: `run` when given, else the newest finished run of `kind` per dataset."""
    if run is not None:
        return [run]
    rows = con.execute("SELECT max(run_id) FROM runs WHERE kind = ? AND status = 'finished' "
                       "AND list_contains(?::INTEGER[], dataset_id) GROUP BY dataset_id ORDER BY 1",
                       [kind, [int(i) for i in dataset_ids]]).fetchall()
    return [int(r[0]) for r in rows]


def sample_signals(store: Store, sample_id: int) -> pd.DataFrame:
    """Every signal's value for one sample (name, kind, value as text, description): the sample view."""
    rows = []
    with store.connect() as con:
        found = con.execute("SELECT dataset_id FROM samples WHERE id = ?", [int(sample_id)]).fetchall()
        if not found:
            raise NotFoundError(f"no sample with id {sample_id}")
        scope = [int(found[0][0])]
        for signal in list_on(con, scope):
            bound = signal.bind(con, scope)
            got = con.execute(f"SELECT CAST(value AS VARCHAR) FROM ({bound.sql}) WHERE sample_id = ?",
                              [*bound.params, int(sample_id)]).fetchall()
            value = got[0][0] if got else None
            rows.append({"signal": signal.name, "kind": signal.kind, "value": value,
                         "runs": ", ".join(map(str, bound.runs)), "description": f"{signal.description}. {signal.read}"})
    return pd.DataFrame(rows, columns=["signal", "kind", "value", "runs", "description"])
