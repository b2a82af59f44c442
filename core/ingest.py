"""Ingest: files, folders and hub datasets into the store, normalised to one chat shape.

The load is all-or-nothing. Records are read and normalised in a streaming pass (readers.py, shapes.py)
and written to a Parquet staging file beside the store; only when every record has passed is the staging
file imported in one transaction (dataset row, samples, run). A killed process therefore leaves no half
dataset behind (at most a stale staging file, removed by the next ingest), and the store's lock is held
only for the final import, so the workbench stays usable while a big file is read.
"""

from __future__ import annotations

import os
import re
import string
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from core import readers, shapes
from core.readers import RawRecord
from core.store import Store, now_utc

# A fast estimate of subword tokens: whitespace-separated words plus ASCII punctuation marks, counted
# with C-speed str methods (a regex in SQL cost 20 s per million samples; a real tokenizer more).
# bench/ingest_bench.py measures how it compares with the MiniLM WordPiece count.
TOKEN_METHOD = "words-punct-v1"
_PUNCT = string.punctuation.encode()
DEFAULT_MAX_CHARS = 2_000_000
IMPORT_MEMORY_LIMIT = os.environ.get("ASSAY_IMPORT_MEMORY_LIMIT", "1GB")
_FLUSH_ROWS = 20_000
_MAX_REPORTED = 100

_TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
STAGING_SCHEMA = pa.schema([
    ("source_id", pa.string()),
    ("row_idx", pa.int64()),
    ("messages", pa.list_(_TURN)),
    ("rejected", pa.list_(_TURN)),
    ("text", pa.string()),
    ("n_chars", pa.int32()),
    ("n_tokens", pa.int32()),
    ("meta", pa.string()),
    ("raw", pa.string()),
    ("locator", pa.string()),
])


def estimate_tokens(text: str) -> int:
    """Words plus punctuation marks: the token estimate recorded as TOKEN_METHOD."""
    data = text.encode()  # bytes.translate/split are several times faster than their str twins
    return len(data.split()) + len(data) - len(data.translate(None, _PUNCT))

Progress = Callable[[int, int | None], None]


class IngestError(ValueError):
    """The load was refused; nothing was written. The message names the file, record and expectation."""


@dataclass
class IngestReport:
    dataset: str
    dataset_id: int
    n_records: int
    n_samples: int
    n_skipped: int
    skipped: list[dict[str, str]]
    shape: str
    format: str
    seconds: float
    run_id: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Batch:
    source_id: list[str | None] = field(default_factory=list)
    row_idx: list[int] = field(default_factory=list)
    messages: list[list[dict[str, str]]] = field(default_factory=list)
    rejected: list[list[dict[str, str]] | None] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    n_chars: list[int] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)
    meta: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    locator: list[str] = field(default_factory=list)

    def to_arrow(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(self.__dict__, schema=STAGING_SCHEMA)


class _FieldCatalog:
    """The metadata fields seen and their value types, so pages can offer the right filter."""

    def __init__(self) -> None:
        self.types: dict[str, set[str]] = {}

    def add(self, meta: dict[str, Any]) -> None:
        for key, value in meta.items():
            kind = _kind(value)
            seen = self.types.get(key)
            if seen is None:
                self.types[key] = {kind}
            elif kind not in seen:
                seen.add(kind)

    def as_list(self) -> list[dict[str, str]]:
        out = []
        for key, kinds in self.types.items():
            kinds = kinds - {"null"}
            if not kinds:
                kind = "null"
            elif kinds == {"integer", "number"} or kinds == {"number"} or kinds == {"integer"}:
                kind = "number"
            elif len(kinds) == 1:
                kind = next(iter(kinds))
            else:
                kind = "mixed"
            out.append({"name": key, "type": kind})
        return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _staging_dir(store: Store) -> Path:
    path = store.path.parent / ".assay-staging"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _remove_stale_staging(folder: Path) -> None:
    """Staging files of processes that died mid-load: never imported, safe to delete."""
    for file in folder.glob("ingest-*.parquet"):
        try:
            pid = int(file.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            file.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_name(store: Store, name: str) -> None:
    if not name or not name.strip():
        raise IngestError("A dataset needs a name (--name).")
    if name in store.dataset_names():
        raise IngestError(f"A dataset named {name!r} already exists in {store.path}; choose another name or drop it first.")


class _Collector:
    """Normalises raw records and streams them to the staging file, collecting problems on the way."""

    def __init__(self, writer: pq.ParquetWriter, shape: str, mapping: dict[str, str] | None,
                 skip_bad: bool, max_chars: int) -> None:
        self.writer, self.shape, self.mapping = writer, shape, mapping
        self.skip_bad, self.max_chars = skip_bad, max_chars
        self.batch = _Batch()
        self.fields = _FieldCatalog()
        self.n_records = self.n_samples = 0
        self.skipped: list[dict[str, str]] = []
        self.n_skipped = 0

    def bad(self, locator: str, message: str) -> None:
        if not self.skip_bad:
            raise IngestError(f"{locator}: {message}")
        self.n_skipped += 1
        if len(self.skipped) < _MAX_REPORTED:
            self.skipped.append({"locator": locator, "message": message})

    def reader_skip(self, locator: str, message: str) -> None:
        """A record the reader read but could not parse (skip mode): counted and reported like the rest."""
        self.n_records += 1
        self.bad(locator, message)

    def add(self, item: RawRecord) -> None:
        record_no = self.n_records
        self.n_records += 1
        try:
            samples = shapes.normalise(item.record, self.shape, self.mapping)
        except shapes.RecordError as exc:
            self.bad(item.locator, str(exc))
            return
        raw = item.raw_json if item.raw_json is not None else _dumps(item.record)
        for k, sample in enumerate(samples):
            contents = [t["content"] for t in sample.messages]
            size = sum(map(len, contents))
            if size > self.max_chars:
                self.bad(item.locator, f"sample is {size:,} characters long, over the limit of {self.max_chars:,} "
                                       "(raise max_chars / --max-chars to load it)")
                continue
            source_id = sample.source_id
            if source_id is None:
                source_id = str(record_no) if k == 0 else f"{record_no}#{k}"
            b = self.batch
            b.source_id.append(str(source_id))
            b.row_idx.append(self.n_samples)
            b.messages.append(sample.messages)
            b.rejected.append(sample.rejected)
            # The flat text is the turns' contents only, so a search for "user" finds users, not roles.
            b.text.append("\n\n".join(contents))
            b.n_chars.append(size)
            b.n_tokens.append(sum(map(estimate_tokens, contents)))
            b.meta.append(_dumps(sample.meta))
            b.raw.append(raw)
            b.locator.append(item.locator)
            self.fields.add(sample.meta)
            self.n_samples += 1
        if len(self.batch.row_idx) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.batch.row_idx:
            self.writer.write_batch(self.batch.to_arrow())
            self.batch = _Batch()


def _detect_shape(first: list[RawRecord], shape: str | None, mapping: dict[str, str] | None, source: str) -> str:
    if mapping:
        return shape or "mapped"
    if shape:
        if shape not in shapes.SHAPES:
            raise IngestError(f"Unknown shape {shape!r}; expected one of {', '.join(shapes.SHAPES)}.")
        return shape
    try:
        return shapes.detect_shape([r.record for r in first[:100]])
    except shapes.ShapeError as exc:
        raise IngestError(f"{source}: {exc}") from exc


def _stage(batches: Iterator[list[RawRecord]], staging: Path, *, source: str, shape: str | None,
           mapping: dict[str, str] | None, skip_bad: bool, max_chars: int,
           progress: Progress | None, total: int | None,
           reader_skips: _ReaderSkips | None = None) -> tuple[_Collector, str]:
    first = next(batches, None)
    if not first:
        raise IngestError(f"{source}: no records found; expected at least one record.")
    shape = _detect_shape(first, shape, mapping, source)
    with pq.ParquetWriter(staging, STAGING_SCHEMA, compression="zstd") as writer:
        collector = _Collector(writer, shape, mapping, skip_bad, max_chars)
        if reader_skips is not None:
            reader_skips.attach(collector)
        for batch in _chain([first], batches):
            for item in batch:
                collector.add(item)
            if progress:
                progress(collector.n_records, total)
        collector.flush()
    return collector, shape


def _chain(head: list[list[RawRecord]], rest: Iterator[list[RawRecord]]) -> Iterator[list[RawRecord]]:
    yield from head
    yield from rest


def _duplicates(con: Any, staging: str, skip_bad: bool, collector: _Collector) -> str:
    """Refuse (or, when skipping, drop all but the first of) samples that share a source id."""
    dups = con.execute(
        "SELECT source_id, list(locator ORDER BY row_idx)[:5] AS where_, count(*) AS n "
        "FROM read_parquet(?) GROUP BY source_id HAVING count(*) > 1 ORDER BY min(row_idx) LIMIT 5",
        [staging],
    ).fetchall()
    if not dups:
        return ""
    if not skip_bad:
        sid, where, n = dups[0]
        raise IngestError(f"duplicate id {sid!r}: {n} samples share it ({', '.join(where)}); expected unique ids "
                          "(fix the source, or skip bad records to keep the first of each)")
    extra = con.execute(
        "SELECT count(*) - count(DISTINCT source_id) FROM read_parquet(?)", [staging]).fetchone()[0]
    collector.n_skipped += extra
    for sid, where, _n in dups:
        for loc in where[1:]:
            if len(collector.skipped) < _MAX_REPORTED:
                collector.skipped.append({"locator": loc, "message": f"duplicate id {sid!r} (first kept)"})
    return "QUALIFY row_number() OVER (PARTITION BY source_id ORDER BY row_idx) = 1"


@contextmanager
def _memory_limit(con: Any, limit: str) -> Iterator[None]:
    """Bound DuckDB's buffer pool while a big import runs (its default is 80% of RAM, which it fills with
    freshly written blocks); the previous limit is restored afterwards."""
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", limit):
        raise ValueError(f"ASSAY_IMPORT_MEMORY_LIMIT={limit!r}: expected a size such as 1GB or 512MiB")
    previous = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    con.execute(f"SET memory_limit = '{limit}'")
    try:
        yield
    finally:
        con.execute(f"SET memory_limit = '{previous}'")


def _import(store: Store, staging: Path, *, name: str, source: str, fmt: str, shape: str, license: str | None,
            synthetic: bool, is_eval: bool, description: str | None, options: dict[str, Any],
            collector: _Collector, skip_bad: bool) -> tuple[int, int, int]:
    staged = str(staging)
    with store.transaction() as con, _memory_limit(con, IMPORT_MEMORY_LIMIT):
        keep = _duplicates(con, staged, skip_bad, collector)
        # Staged rows are already in order; renumber only when duplicates were dropped.
        row_idx = "row_number() OVER (ORDER BY row_idx) - 1" if keep else "row_idx"
        run_id = store.start_run("ingest", params=options, sample_filter=source, con=con)
        dataset_id = con.execute("SELECT nextval('dataset_id_seq')").fetchone()[0]
        con.execute(
            f"""
            INSERT INTO samples
            SELECT nextval('sample_id_seq'), ?, source_id, {row_idx}, messages, rejected, text, len(messages),
                   n_chars, n_tokens, meta, raw
            FROM (SELECT * FROM read_parquet(?) {keep})
            """,
            [dataset_id, staged],
        )
        n_samples = con.execute("SELECT count(*) FROM samples WHERE dataset_id = ?", [dataset_id]).fetchone()[0]
        if n_samples == 0:
            raise IngestError(f"{source}: every record was bad; nothing to load.")
        con.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [dataset_id, name, source, fmt, shape, license, synthetic, is_eval, description, n_samples,
             collector.n_records, collector.n_skipped, _dumps(collector.fields.as_list()), _dumps(options),
             now_utc(), run_id],
        )
        con.execute("UPDATE runs SET dataset_id = ? WHERE run_id = ?", [dataset_id, run_id])
        store.finish_run(run_id, n_samples=n_samples, con=con)
    return dataset_id, run_id, n_samples


def _run(store: Store, batches: Iterator[list[RawRecord]], *, name: str, source: str, fmt: str,
         shape: str | None, mapping: dict[str, str] | None, license: str | None, synthetic: bool, is_eval: bool,
         description: str | None, on_bad: str, max_chars: int, progress: Progress | None,
         total: int | None, extra_options: dict[str, Any],
         reader_skips: _ReaderSkips | None = None) -> IngestReport:
    if on_bad not in ("error", "skip"):
        raise IngestError(f"on_bad must be 'error' or 'skip', not {on_bad!r}")
    _check_name(store, name)
    started = time.perf_counter()
    folder = _staging_dir(store)
    _remove_stale_staging(folder)
    staging = folder / f"ingest-{os.getpid()}-{uuid.uuid4().hex}.parquet"
    skip_bad = on_bad == "skip"
    try:
        collector, shape = _stage(batches, staging, source=source, shape=shape, mapping=mapping, skip_bad=skip_bad,
                                  max_chars=max_chars, progress=progress, total=total, reader_skips=reader_skips)
        if collector.n_samples == 0:
            raise IngestError(f"{source}: every record was bad ({collector.n_skipped} skipped); nothing to load.")
        options = {"format": fmt, "shape": shape, "mapping": mapping, "on_bad": on_bad, "max_chars": max_chars,
                   "token_method": TOKEN_METHOD, **extra_options}
        dataset_id, run_id, n_samples = _import(
            store, staging, name=name, source=source, fmt=fmt, shape=shape, license=license, synthetic=synthetic,
            is_eval=is_eval, description=description, options=options, collector=collector, skip_bad=skip_bad)
    finally:
        staging.unlink(missing_ok=True)
    return IngestReport(name, dataset_id, collector.n_records, n_samples, collector.n_skipped, collector.skipped,
                        shape, fmt, round(time.perf_counter() - started, 3), run_id)


def ingest(
    store: Store,
    source: str | Path,
    *,
    name: str,
    format: str | None = None,
    shape: str | None = None,
    mapping: dict[str, str] | None = None,
    license: str | None = None,
    synthetic: bool = False,
    is_eval: bool = False,
    description: str | None = None,
    on_bad: str = "error",
    split: str | None = None,
    encoding: str = "utf-8",
    max_chars: int = DEFAULT_MAX_CHARS,
    progress: Progress | None = None,
) -> IngestReport:
    """Load a file, a folder of shards, a save_to_disk folder or a hub id as a new dataset.

    on_bad="error" refuses the whole load at the first bad record (nothing written); on_bad="skip" leaves
    bad records out and reports how many and which (IngestReport.skipped).
    """
    source_str = str(source)
    try:
        fmt = format or readers.detect_format(source)
        skipper = _ReaderSkips() if on_bad == "skip" else None
        batches = readers.iter_batches(source, fmt, on_error=skipper, encoding=encoding, split=split)
        report = _run(store, batches, name=name, source=source_str, fmt=fmt, shape=shape, mapping=mapping,
                      license=license, synthetic=synthetic, is_eval=is_eval, description=description, on_bad=on_bad,
                      max_chars=max_chars, progress=progress, total=readers.count_hint(source, fmt, split=split),
                      extra_options={"split": split, "encoding": encoding}, reader_skips=skipper)
    except readers.FormatError as exc:
        raise IngestError(str(exc)) from exc
    return report


class _ReaderSkips:
    """The reader's on_error callback in skip mode: hands unparseable records to the collector, so that they
    are counted in the same import transaction as everything else (held until the collector exists)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str]] = []
        self.collector: _Collector | None = None

    def __call__(self, locator: str, message: str) -> None:
        if self.collector is None:
            self.pending.append((locator, message))
        else:
            self.collector.reader_skip(locator, message)

    def attach(self, collector: _Collector) -> None:
        self.collector = collector
        for locator, message in self.pending:
            collector.reader_skip(locator, message)
        self.pending.clear()


def ingest_records(
    store: Store,
    records: Iterable[dict[str, Any]],
    *,
    name: str,
    shape: str | None = None,
    mapping: dict[str, str] | None = None,
    license: str | None = None,
    synthetic: bool = False,
    is_eval: bool = False,
    description: str | None = None,
    source: str = "<memory>",
    on_bad: str = "error",
    max_chars: int = DEFAULT_MAX_CHARS,
    progress: Progress | None = None,
) -> IngestReport:
    """Load records already in memory (a list of dicts, a generator) as a new dataset."""
    return _run(store, _batched(records), name=name, source=source, fmt="records", shape=shape, mapping=mapping,
                license=license, synthetic=synthetic, is_eval=is_eval, description=description, on_bad=on_bad,
                max_chars=max_chars, progress=progress, total=None, extra_options={})


def _batched(records: Iterable[dict[str, Any]], size: int = 8192) -> Iterator[list[RawRecord]]:
    batch: list[RawRecord] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise IngestError(f"record {i}: expected a dict, got {type(record).__name__}")
        batch.append(RawRecord(record, f"record {i}", None))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def drop_dataset(store: Store, name: str) -> int:
    """Remove a dataset and its samples (its runs stay in the log); returns how many samples went."""
    info = store.dataset(name)
    with store.transaction() as con:
        con.execute("DELETE FROM samples WHERE dataset_id = ?", [info.dataset_id])
        con.execute("DELETE FROM datasets WHERE dataset_id = ?", [info.dataset_id])
    return info.n_samples
