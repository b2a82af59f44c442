"""The DuckDB store: opening, migrating, locking, runs.

Concurrency design. DuckDB lets one process at a time open a database file (for writing, and in
practice for reading too, since a read-only open is refused while a writer holds the file). So Assay
never keeps a connection open between operations: every operation opens the file, does its work in a
transaction and closes it. Two processes on one store (the workbench and a command-line job) therefore
take turns. A process that finds the file locked waits, retrying, up to `busy_timeout` seconds, and then
raises `StoreBusy` naming the process that holds the lock. Long jobs stage their work outside the store
(ingest writes a Parquet staging file; embedding commits batch by batch) so that they hold the lock only
for short transactions. Threads of one process share one DuckDB instance and never conflict.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from core.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from core.store.runs import Run

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = PROJECT_ROOT / "data" / "workbench.duckdb"
CODE_VERSION = "0.1.0"

_LOCK_PATTERN = re.compile(r"Could not set lock|Conflicting lock", re.IGNORECASE)
_HOLDER_PATTERN = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


class StoreError(Exception):
    """Base class of the store's errors."""


class StoreBusy(StoreError):
    """Another process holds the store's lock for longer than we were willing to wait."""


class StoreVersionError(StoreError):
    """The store was written by a newer Assay than this one."""


def default_db_path() -> Path:
    """The store a user means when they name none: $ASSAY_DB, else data/workbench.duckdb."""
    env = os.environ.get("ASSAY_DB")
    return Path(env).expanduser() if env else DEFAULT_DB


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _describe_holder(message: str) -> str:
    match = _HOLDER_PATTERN.search(message)
    if not match:
        return "another process"
    program, pid = match.groups()
    return f"process {pid} ({program})"


IDLE_CLOSE_S = float(os.environ.get("ASSAY_IDLE_CLOSE_S", "1.0"))


class _SharedDatabase:
    """One open DuckDB database per store file per process.

    Opening and closing the file around every operation raced: a thread opening the file while another
    closed the process's last handle could leave two database instances of one file in one process
    (lost writes, read errors). Here the instance is opened under a lock, shared by all threads through
    cursors, and closed under the same lock after an idle period, so open and close never overlap. The
    idle period also spares each short operation a checkpoint.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base: duckdb.DuckDBPyConnection | None = None
        self.users = 0
        self.last_used = 0.0
        self.timer: threading.Timer | None = None

    def acquire(self, store: Store) -> duckdb.DuckDBPyConnection:
        with self.lock:
            if self.base is None:
                base = store._open()  # waits, under the lock, while another process holds the file
                try:
                    migrate(base, store.path)  # at every open: the file may be new, or upgraded meanwhile
                except BaseException:
                    base.close()
                    raise
                self.base = base
            self.users += 1
            return self.base

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            self.last_used = time.monotonic()
            if self.users == 0 and self.timer is None and not _exiting:
                self.timer = threading.Timer(IDLE_CLOSE_S, self._idle_check)
                self.timer.daemon = True
                self.timer.start()

    def _idle_check(self) -> None:
        with self.lock:
            self.timer = None
        self.close_if_idle()

    def close_if_idle(self, force: bool = False) -> None:
        with self.lock:
            if self.base is None or self.users:
                return
            idle = time.monotonic() - self.last_used
            if not force and idle < IDLE_CLOSE_S:
                if self.timer is None and not _exiting:  # used again since the timer was set: look again later
                    self.timer = threading.Timer(IDLE_CLOSE_S - idle, self._idle_check)
                    self.timer.daemon = True
                    self.timer.start()
                return
            base, self.base = self.base, None
            base.close()
            # The last reference goes here, under the lock: freeing a DuckDB connection runs native code with
            # the GIL released, and _close_all must not let the interpreter finalise while a timer thread is
            # still in there (the thread would be unwound on retaking the GIL and the process aborts).
            del base


_shared: dict[str, _SharedDatabase] = {}
_shared_lock = threading.Lock()


def _shared_for(path: Path) -> _SharedDatabase:
    key = str(path.resolve())
    with _shared_lock:
        if key not in _shared:
            _shared[key] = _SharedDatabase()
        return _shared[key]


_exiting = False


@atexit.register
def _close_all() -> None:
    """Close every idle store now and start no idle-close timer from here on: a timer thread closing DuckDB
    (native code, GIL released) while the interpreter finalises is unwound there, and the process aborts
    ("FATAL: exception not rethrown", exit 134) after everything went well. A store still in use is left
    to its connection's destructor."""
    global _exiting
    _exiting = True
    for shared in list(_shared.values()):
        with shared.lock:
            timer, shared.timer = shared.timer, None
        if timer is not None:
            timer.cancel()
        shared.close_if_idle(force=True)


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: int
    name: str
    source: str | None
    format: str | None
    shape: str | None
    license: str | None
    synthetic: bool
    is_eval: bool
    description: str | None
    n_samples: int
    n_records: int
    n_skipped: int
    fields: list[dict[str, str]]
    load_options: dict[str, Any]
    loaded_at: datetime
    ingest_run_id: int | None


class Store:
    """A handle on one DuckDB store file. Cheap to create; holds no open connection."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser() if path else default_db_path()
        self.busy_timeout = busy_timeout

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ---- connections -------------------------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.Error as exc:  # lock conflicts arrive as IOException
                if not _LOCK_PATTERN.search(str(exc)):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"The store {self.path} is in use by {_describe_holder(str(exc))}; waited "
                        f"{self.busy_timeout:.0f}s for it. Wait for that job to finish, or stop it, and try again."
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the store (migrated when the file is opened), closed afterwards.

        Threads of this process share one open database and each gets its own cursor; the database is
        closed (releasing the file to other processes) once no thread has used it for IDLE_CLOSE_S.
        """
        shared = _shared_for(self.path)
        base = shared.acquire(self)
        try:
            con = base.cursor()
            del base  # the shared holder owns the database; its last reference is dropped in close_if_idle
            try:
                yield con
            finally:
                con.close()
        finally:
            shared.release()

    def copy_to(self, dest: str | Path) -> Store:
        """A consistent copy of the store file (a backup, or a scratch store to experiment on).

        The file alone is not the store while this process holds it open: committed work may still sit in
        the write-ahead log. A checkpoint first folds it into the file."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute("CHECKPOINT")
            shutil.copyfile(self.path, dest)
        return Store(dest, busy_timeout=self.busy_timeout)

    def release(self) -> None:
        """Close this process's hold on the store file now if no thread is using it."""
        _shared_for(self.path).close_if_idle(force=True)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN ... COMMIT; any exception rolls everything back."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ---- queries used everywhere -------------------------------------------------------------

    def query_df(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def schema_version(self) -> int:
        with self.connect() as con:
            return _read_version(con)

    def datasets(self) -> pd.DataFrame:
        """Every dataset with its size, licence and the kinds of finished runs made on it."""
        return self.query_df(
            """
            SELECT d.dataset_id, d.name, d.n_samples, d.license, d.synthetic, d.is_eval, d.shape,
                   d.format, d.source, d.loaded_at, d.n_skipped,
                   coalesce((SELECT string_agg(DISTINCT k.kind, ', ' ORDER BY k.kind) FROM (
                                 SELECT r.kind FROM runs r WHERE r.dataset_id = d.dataset_id
                                   AND r.status = 'finished' AND r.kind <> 'ingest'
                                 -- an embed run over several datasets names them in its parameters
                                 UNION SELECT 'embed' FROM runs r WHERE r.kind = 'embed' AND r.status = 'finished'
                                   AND list_contains(json_extract_string(r.params, '$.datasets[*]'), d.name)
                                 UNION SELECT 'map' FROM maps m WHERE list_contains(m.datasets, d.name)) k),
                            '') AS computed
            FROM datasets d ORDER BY d.name
            """
        )

    def dataset(self, name: str) -> DatasetInfo:
        with self.connect() as con:
            row = con.execute(
                "SELECT dataset_id, name, source, format, shape, license, synthetic, is_eval, description, "
                "n_samples, n_records, n_skipped, fields, load_options, loaded_at, ingest_run_id "
                "FROM datasets WHERE name = ?",
                [name],
            ).fetchone()
        if row is None:
            raise KeyError(f"No dataset named {name!r} in {self.path}. Known: {', '.join(self.dataset_names())}")
        values = list(row)
        values[12] = json.loads(values[12]) if values[12] else []
        values[13] = json.loads(values[13]) if values[13] else {}
        return DatasetInfo(*values)

    def dataset_names(self) -> list[str]:
        with self.connect() as con:
            return [r[0] for r in con.execute("SELECT name FROM datasets ORDER BY name").fetchall()]

    def runs(self, dataset: str | None = None) -> pd.DataFrame:
        """Every run, with `interrupted` (its process is gone: see run_interrupted) and `state`: the status a
        person should read ('interrupted' where the stored status still says 'running')."""
        sql = (
            "SELECT r.*, d.name AS dataset FROM runs r LEFT JOIN datasets d USING (dataset_id) "
            + ("WHERE d.name = ? " if dataset else "")
            + "ORDER BY r.run_id"
        )
        frame = self.query_df(sql, [dataset] if dataset else [])
        frame["interrupted"] = pd.Series([run_interrupted(r.status, r.pid, r.host, _alive_since(r))
                                          for r in frame.itertuples()], index=frame.index, dtype=bool)
        frame["state"] = frame["status"].where(~frame["interrupted"], "interrupted")
        return frame

    def interrupted_runs(self, kind: str | None = None) -> pd.DataFrame:
        """Runs whose status says 'running' but whose process is gone (killed, crashed, machine restarted)."""
        runs = self.query_df("SELECT * FROM runs WHERE status = 'running'" + (" AND kind = ?" if kind else "")
                             + " ORDER BY run_id", [kind] if kind else [])
        keep = [run_interrupted(r.status, r.pid, r.host, _alive_since(r)) for r in runs.itertuples()]
        return runs[keep] if len(runs) else runs

    # ---- runs --------------------------------------------------------------------------------

    def run(self, kind: str, params: dict[str, Any] | None = None, **options: Any) -> Run:
        """Start a recorded run of `kind`; use it as `with store.run(kind, params) as run:`.

        Options: dataset (a name) or dataset_id, model, model_revision, sample_filter, resume (take up an
        unfinished run with identical params), prepare(con, run_id) (the run's own rows, written in the
        transaction that creates it), con (start inside the caller's transaction). See core/store/runs.py."""
        import core.store.runs as runs

        return runs.start(self, kind, params, **options)

    def attach_run(self, run_id: int) -> Run:
        """Continue an existing run in this process (a job that spans several calls); see core/store/runs.py."""
        import core.store.runs as runs

        return runs.attach(self, run_id)


    def start_run(
        self,
        kind: str,
        *,
        dataset_id: int | None = None,
        params: dict[str, Any] | None = None,
        model: str | None = None,
        model_revision: str | None = None,
        sample_filter: str | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> int:
        """Insert a 'running' run row; returns its run id. Runs are never overwritten. Modules use Store.run
        (core/store/runs.py), which also records the end, failure and metrics; this is the bare row for tests."""
        values = [
            kind, dataset_id, json.dumps(params or {}, sort_keys=True, default=str), model, model_revision,
            now_utc(), sample_filter, CODE_VERSION, os.getpid(), socket.gethostname(),
        ]
        sql = (
            "INSERT INTO runs (run_id, kind, dataset_id, status, params, model, model_revision, started_at, "
            "sample_filter, code_version, pid, host) "
            "VALUES (nextval('run_id_seq'), ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id"
        )
        if con is not None:
            return con.execute(sql, values).fetchone()[0]
        with self.connect() as own:
            return own.execute(sql, values).fetchone()[0]

    def finish_run(
        self,
        run_id: int,
        *,
        status: str = "finished",
        n_samples: int | None = None,
        error: str | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        if status == "failed" and error and error.startswith("JobCancelled"):
            status = "cancelled"  # stopped by the user (core/store/jobs.py): committed work stays, resumable kinds resume
        sql = "UPDATE runs SET status = ?, finished_at = ?, n_samples = coalesce(?, n_samples), error = ? WHERE run_id = ?"
        values = [status, now_utc(), n_samples, error, run_id]
        if con is not None:
            con.execute(sql, values)
            return
        with self.connect() as own:
            own.execute(sql, values)


# A run started on another machine cannot be checked; it counts as interrupted once it has been
# 'running' this long (longer than any job Assay runs on one store; a live one finishing later still
# records 'finished').
FOREIGN_RUN_STALE = timedelta(days=2)


def pid_alive(pid: Any, started_at: datetime | None = None) -> bool:
    """Whether process `pid` on this machine is alive and (where psutil can tell) the same process that
    started at `started_at` (naive UTC): a recycled pid started later is not it."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if started_at is None:
        return True
    try:
        import psutil

        created = psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - psutil missing or the process just ended: trust os.kill
        return True
    started = started_at.replace(tzinfo=timezone.utc).timestamp()
    return created <= started + 5.0  # the run row is written after its process starts


def _alive_since(run: Any) -> Any:
    """When the run's current process took it: resumed_at for a resumed run, else started_at."""
    resumed = getattr(run, "resumed_at", None)
    return run.started_at if resumed is None or pd.isna(resumed) else resumed


def run_interrupted(status: str, pid: Any, host: Any, started_at: Any, *, now: datetime | None = None) -> bool:
    """A 'running' run whose process is gone: on this host, its pid is dead (or recycled); on another host
    (unknowable from here), it has been running for more than FOREIGN_RUN_STALE."""
    if status != "running":
        return False
    started = None if started_at is None or pd.isna(started_at) else pd.Timestamp(started_at).to_pydatetime()
    if host is None or (isinstance(host, float) and pd.isna(host)) or pid is None or pd.isna(pid):
        return started is not None and (now or now_utc()) - started > FOREIGN_RUN_STALE
    if host == socket.gethostname():
        return not pid_alive(pid, started)
    return started is not None and (now or now_utc()) - started > FOREIGN_RUN_STALE


@contextmanager
def memory_limit(con: duckdb.DuckDBPyConnection, limit: str) -> Iterator[None]:
    """Bound DuckDB's buffer pool for one big statement (its default is 80% of RAM, which a large insert
    or export fills; past the limit DuckDB spills to its temp folder). The previous limit is restored."""
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", limit):
        raise ValueError(f"memory limit {limit!r}: expected a size such as 1GB or 512MiB")
    with setting(con, "memory_limit", limit):
        yield


@contextmanager
def setting(con: duckdb.DuckDBPyConnection, name: str, value: str) -> Iterator[None]:
    """A DuckDB setting for the duration of a block; the previous value is restored, also on failure."""
    if not re.fullmatch(r"[a-z_]+", name):
        raise ValueError(f"not a DuckDB setting name: {name!r}")
    previous = con.execute("SELECT current_setting(?)", [name]).fetchall()[0][0]
    con.execute(f"SET {name} = {sql_literal(value)}")
    try:
        yield
    finally:
        con.execute(f"SET {name} = {sql_literal('' if previous is None else str(previous))}")


def sql_literal(value: str) -> str:
    """A SQL string literal (quotes doubled), for SQL text where a parameter cannot be bound (SET, file lists)."""
    return "'" + value.replace("'", "''") + "'"


def _read_version(con: duckdb.DuckDBPyConnection) -> int:
    # fetchall, not fetchone: a half-read result blocks con.register() on this connection (DuckDB 2).
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main'"
    ).fetchall()[0][0]
    if not has_meta:
        return 0
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def migrate(con: duckdb.DuckDBPyConnection, path: Path | str = "<store>") -> int:
    """Bring the store's schema up to date in one transaction; refuse a store from a newer Assay."""
    version = _read_version(con)
    if version > LATEST_VERSION:
        raise StoreVersionError(
            f"The store {path} has schema version {version}, newer than this Assay understands "
            f"({LATEST_VERSION}). Upgrade Assay to open it; it was left untouched."
        )
    pending = [m for m in MIGRATIONS if m[0] > version]
    if not pending:
        return version
    con.execute("BEGIN TRANSACTION")
    try:
        for number, _description, sql in pending:
            con.execute(sql)
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(number)]
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return LATEST_VERSION
