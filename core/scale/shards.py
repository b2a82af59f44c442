"""A scale job's folder: input shards, result shards, and the markers that make it resumable.

Layout of a job folder (on shared storage when the job runs on a cluster):

    job.json                   what the job is: step, its config, dataset, run id, the list of shards
    input/shard-00000.parquet  samples exported from the store (or the user's own Parquet files)
    output/shard-00000.parquet a finished result shard; written to a temporary name and renamed, so its
                               existence is the "computed" marker and a half-written shard is never seen
    imported/shard-00000       written after the shard's results were committed to the store
    computed/shard-00000.<attempt>.json   one record per computation of a shard (who, when, how long):
                               how a test (or a curious user) sees that a resumed job skipped finished shards

Exports stream from DuckDB in Arrow record batches, one shard at a time, so memory holds one shard.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.store.database import Store
from core.store.files import write_atomically, write_bytes_atomically

DEFAULT_ROWS_PER_SHARD = 50_000  # ~75 MB of float32 384-d vectors per embedding result shard


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write then rename: a reader (or a resumed job) sees the whole file or none of it."""
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))


@dataclass
class Job:
    """One job folder. `shards` maps a shard name to its input file and row count."""

    folder: Path
    step: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    run_id: int | None = None
    shards: dict[str, dict[str, Any]] | None = None  # None: not exported yet
    status: str = "new"
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- job.json -----------------------------------------------------------------------------

    @property
    def spec_path(self) -> Path:
        return self.folder / "job.json"

    @classmethod
    def load(cls, folder: str | Path) -> Job | None:
        folder = Path(folder)
        path = folder / "job.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(folder=folder, step=data["step"], config=data["config"], dataset=data.get("dataset"),
                   run_id=data.get("run_id"), shards=data.get("shards"), status=data.get("status", "new"),
                   extra=data.get("extra", {}))

    def save(self) -> None:
        data = {"step": self.step, "config": self.config, "dataset": self.dataset, "run_id": self.run_id,
                "shards": self.shards, "status": self.status, "extra": self.extra}
        write_bytes_atomically(self.spec_path, json.dumps(data, indent=1, default=str).encode())

    # ---- paths and markers --------------------------------------------------------------------

    def input_path(self, name: str) -> str:
        assert self.shards is not None
        return self.shards[name]["path"]

    def output_path(self, name: str) -> Path:
        return self.folder / "output" / f"{name}.parquet"

    def is_computed(self, name: str) -> bool:
        return self.output_path(name).exists()

    def is_imported(self, name: str) -> bool:
        return (self.folder / "imported" / name).exists()

    def mark_imported(self, name: str) -> None:
        write_bytes_atomically(self.folder / "imported" / name, b"")

    def names(self) -> list[str]:
        return sorted(self.shards or {})

    def pending(self) -> list[str]:
        return [n for n in self.names() if not self.is_computed(n)]

    def n_rows(self, names: Iterable[str] | None = None) -> int:
        names = self.names() if names is None else names
        return sum(int((self.shards or {})[n]["rows"]) for n in names)

    def record_computed(self, name: str, attempt: str, *, rows: int, seconds: float, engine: str) -> None:
        """One small file per computation (safe from many processes on shared storage)."""
        folder = self.folder / "computed"
        info = {"shard": name, "attempt": attempt, "rows": rows, "seconds": round(seconds, 4), "engine": engine,
                "pid": os.getpid(), "host": socket.gethostname(), "at": time.time()}
        write_bytes_atomically(folder / f"{name}.{attempt}.json", json.dumps(info).encode())

    def computations(self) -> list[dict[str, Any]]:
        """Every recorded computation of a shard, oldest first."""
        folder = self.folder / "computed"
        if not folder.exists():
            return []
        out = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        return sorted(out, key=lambda r: r["at"])

    def read_outputs(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
        """Result shards one at a time (memory: one shard)."""
        for name in (self.names() if names is None else names):
            if self.is_computed(name):
                yield name, pq.read_table(self.output_path(name))


# ---- exporting ------------------------------------------------------------------------------------


def export_query(store: Store, job: Job, sql: str, params: list[Any], *, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                 transform: Callable[[pa.Table], pa.Table] | None = None) -> dict[str, dict[str, Any]]:
    """Stream the result of `sql` into input shards of `rows_per_shard` rows; returns the shard list.

    The connection is held only while DuckDB streams (seconds for millions of short rows)."""
    folder = job.folder / "input"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):  # a previous export that was interrupted
        old.unlink()
    shards: dict[str, dict[str, Any]] = {}
    with store.connect() as con:
        reader = con.sql(sql, params=params).to_arrow_reader(rows_per_shard)
        pending: list[pa.RecordBatch] = []
        n_pending = 0
        for batch in reader:
            pending.append(batch)
            n_pending += batch.num_rows
            if n_pending >= rows_per_shard:
                _flush(pending, folder, shards, transform)
                pending, n_pending = [], 0
        if n_pending:
            _flush(pending, folder, shards, transform)
    return shards


def _flush(batches: list[pa.RecordBatch], folder: Path, shards: dict[str, dict[str, Any]],
           transform: Callable[[pa.Table], pa.Table] | None) -> None:
    table = pa.Table.from_batches(batches)
    if transform is not None:
        table = transform(table)
    name = shard_name(len(shards))
    path = folder / f"{name}.parquet"
    write_parquet_atomic(table, path)
    shards[name] = {"path": str(path), "rows": table.num_rows}


def user_shards(source: str | Path | Iterable[str | Path], required: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """The user's own Parquet files (a file, a folder of *.parquet, a glob or a list): one shard per file,
    read where they are (no copy). Checks the columns a step needs, reading only the footers."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.glob("**/*.parquet"))
        elif any(c in str(source) for c in "*?["):
            files = sorted(Path(p) for p in __import__("glob").glob(str(source), recursive=True))
        else:
            files = [path]
    else:
        files = [Path(p) for p in source]
    if not files:
        raise FileNotFoundError(f"no Parquet files at {source}")
    shards: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(files):
        meta = pq.read_metadata(f)
        missing = set(required) - set(meta.schema.names)
        if missing:
            raise ValueError(f"{f} lacks the column(s) {', '.join(sorted(missing))} this step needs")
        shards[shard_name(i)] = {"path": str(f), "rows": meta.num_rows}
    return shards
