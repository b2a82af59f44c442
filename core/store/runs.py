"""One lifecycle for every recorded run (`runs` table): start, metrics, finish, failure, cancel, resume.

    with store.run("cluster", params, dataset_id=...) as run:
        ...work...
        run.set_metrics(seconds=12.3)
        run.finish(n_samples=n, con=con)   # optional: inside the transaction that commits the results

- The parameters are frozen when the run starts (`run.params` is read-only and never rewritten): what a
  run measured or discovered on the way (timings, the graph it reused) goes in `run.metrics`.
- Leaving the block normally finishes the run (unless `finish` was called already).
- An exception records the run as 'failed' with the error ('cancelled' for core.store.jobs.JobCancelled, the
  user's stop button) and is re-raised. A run already finished keeps its status.
- `resume=True` reuses an unfinished run of the same kind with identical parameters (failed, cancelled, or
  'running' whose process is gone) instead of starting a new one; `run.resumed` says which happened.
- A run started inside the caller's transaction (`con=`) lives and dies with it: on failure the caller's
  rollback removes it, so nothing is recorded separately.
- A run whose process died stays 'running' in the table; Store.runs() shows it as interrupted.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from core.store.database import CODE_VERSION, now_utc, pid_alive

if TYPE_CHECKING:
    import duckdb

    from core.store.database import Store

Prepare = Callable[["duckdb.DuckDBPyConnection", int], None]
RESUMABLE_STATUSES = ("running", "failed", "cancelled")
ERROR_CHARS = 2000


def params_json(params: Mapping[str, Any] | None) -> str:
    """The stored form of a run's parameters (sorted keys: equal params compare equal)."""
    return json.dumps(dict(params or {}), sort_keys=True, default=str)


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


class Run:
    """A run this process is doing. Use it as a context manager (see the module's docstring)."""

    def __init__(self, store: Store, run_id: int, kind: str, params: Mapping[str, Any], *, model: str | None = None,
                 resumed: bool = False, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.store, self.run_id, self.kind = store, int(run_id), kind
        self.params: Mapping[str, Any] = _frozen(json.loads(params_json(params)))
        self.model = model  # written again at finish: a run may learn which model it used (cluster's LLM)
        self.model_revision: str | None = None  # likewise, where only loading the model tells (an ONNX export)
        self.resumed = resumed
        self.metrics: dict[str, Any] = {}
        self.n_samples: int | None = None
        self.status = "running"
        self._con = con

    def __repr__(self) -> str:
        return f"Run({self.run_id}, {self.kind!r}, {self.status})"

    def set_metrics(self, values: Mapping[str, Any] | None = None, **more: Any) -> None:
        """Record measurements (written with the run's end; later values replace earlier ones)."""
        self.metrics.update(values or {}, **more)

    def save_metrics(self, *, con: duckdb.DuckDBPyConnection | None = None) -> None:
        """Write the metrics so far now (readers need them before the run ends), inside `con` when given."""
        sql = "UPDATE runs SET metrics = ?::JSON WHERE run_id = ?"
        values = [json.dumps(self.metrics, sort_keys=True, default=str), self.run_id]
        con = con or self._con
        if con is not None:
            con.execute(sql, values)
            return
        with self.store.connect() as own:
            own.execute(sql, values)

    def finish(self, n_samples: int | None = None, *, con: duckdb.DuckDBPyConnection | None = None) -> None:
        """Mark the run finished now, inside `con`'s transaction when given (atomic with the results)."""
        if n_samples is not None:
            self.n_samples = int(n_samples)
        self._end("finished", None, con)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc is None:
            if self.status == "running":
                self.finish()
            return False
        if self.status == "running" and self._con is None:
            from core.store.jobs import JobCancelled

            status = "cancelled" if isinstance(exc, JobCancelled) else "failed"
            self._end(status, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS], None)
        return False  # re-raised

    def _end(self, status: str, error: str | None, con: duckdb.DuckDBPyConnection | None) -> None:
        sql = ("UPDATE runs SET status = ?, finished_at = ?, n_samples = coalesce(?, n_samples), error = ?, "
               "model = ?, model_revision = coalesce(?, model_revision), metrics = coalesce(?::JSON, metrics) "
               "WHERE run_id = ?")
        metrics = json.dumps(self.metrics, sort_keys=True, default=str) if self.metrics else None
        values = [status, now_utc(), self.n_samples, error, self.model, self.model_revision, metrics, self.run_id]
        con = con or self._con
        if con is not None:
            con.execute(sql, values)
        else:
            with self.store.connect() as own:
                own.execute(sql, values)
        self.status = status


def start(store: Store, kind: str, params: Mapping[str, Any] | None = None, *, dataset: str | None = None,
          dataset_id: int | None = None, model: str | None = None, model_revision: str | None = None,
          sample_filter: str | None = None, resume: bool = False, prepare: Prepare | None = None,
          con: duckdb.DuckDBPyConnection | None = None) -> Run:
    """Start (or, with `resume`, take up again) a run of `kind`; see Store.run."""
    if dataset is not None and dataset_id is None:
        dataset_id = store.dataset(dataset).dataset_id
    frozen = params_json(params)
    if resume:
        found = resumable(store, kind, frozen)
        if found is not None:
            return attach(store, found, resumed=True)
    values = [kind, dataset_id, frozen, model, model_revision, now_utc(), sample_filter, CODE_VERSION,
              os.getpid(), socket.gethostname()]
    sql = ("INSERT INTO runs (run_id, kind, dataset_id, status, params, model, model_revision, started_at, "
           "sample_filter, code_version, pid, host) "
           "VALUES (nextval('run_id_seq'), ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id")

    def insert(c: duckdb.DuckDBPyConnection) -> int:
        run_id = c.execute(sql, values).fetchall()[0][0]
        if prepare is not None:
            prepare(c, run_id)  # the run's own rows, in the transaction that creates it
        return run_id

    if con is not None:
        run_id = insert(con)
    else:
        with store.transaction() as own:
            run_id = insert(own)
    return Run(store, run_id, kind, json.loads(frozen), model=model, con=con)


def resumable(store: Store, kind: str, frozen_params: str) -> int | None:
    """The newest unfinished run of `kind` with exactly these parameters that no live process is doing."""
    rows = store.query_df(
        "SELECT run_id, status, pid, host, started_at FROM runs WHERE kind = ? AND status IN ('running', 'failed', "
        "'cancelled') AND params = ?::JSON ORDER BY run_id DESC", [kind, frozen_params])
    for r in rows.itertuples():
        if (r.status == "running" and r.host == socket.gethostname() and r.pid != os.getpid()
                and pid_alive(r.pid)):
            continue  # another live process is working on it
        return int(r.run_id)  # a failed or cancelled run resumes whoever made it (a server lives on)
    return None


def attach(store: Store, run_id: int, *, resumed: bool = True) -> Run:
    """An existing run continued by this process (a resumed run, or a scale job spanning several calls)."""
    with store.transaction() as con:
        row = con.execute("UPDATE runs SET status = 'running', pid = ?, host = ?, error = NULL, finished_at = NULL, "
                          "resumed_at = ? WHERE run_id = ? RETURNING kind, params, model, metrics",
                          [os.getpid(), socket.gethostname(), now_utc(), int(run_id)]).fetchall()
    if not row:
        raise KeyError(f"no run {run_id} in {store.path}")
    kind, params, model, metrics = row[0]
    run = Run(store, run_id, kind, json.loads(params) if params else {}, model=model, resumed=resumed)
    run.metrics.update(json.loads(metrics) if metrics else {})
    return run
