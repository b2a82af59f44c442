"""Ingest: files, folders and hub datasets into the store, normalised to one chat shape.

The load is all-or-nothing. Records are read and normalised in a streaming pass (readers.py, shapes.py)
and written to a Parquet staging file beside the store; only when every record has passed is the staging
file imported in one transaction (dataset row, samples, run). A killed process therefore leaves no half
dataset behind (at most a stale staging file, removed by the next ingest), and the store's lock is held
only for the final import, so the workbench stays usable while a big file is read.
"""

from __future__ import annotations

import os
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

import core.browse.search_index as search_index
import core.ingest.arrow_turns as arrow_turns
import core.ingest.columnar as ingest_columnar
import core.ingest.readers as readers
import core.ingest.shapes as shapes
from core.errors import ConflictError, InputError, NameRuleError
from core.ingest.field_accounting import FieldAccounting
from core.ingest.readers import RawRecord
from core.ingest.shapes import turn_text
from core.ingest.tokens import TOKEN_METHOD, count_tokens
from core.store.database import Store, memory_limit, now_utc, pid_alive
from core.store.runs import Run

DEFAULT_MAX_CHARS = 2_000_000
MAX_NAME_CHARS = 200
NAME_RULE = (f"a dataset name is 1-{MAX_NAME_CHARS} printable characters (any language), not only spaces, "
             "with no control or invisible formatting characters and no space at either end")
# Unicode categories refused in a name: controls, invisible format characters (bidi overrides, zero-width),
# surrogates, private use, unassigned, and line/paragraph separators.
_NAME_REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
IMPORT_MEMORY_LIMIT = os.environ.get("ASSAY_IMPORT_MEMORY_LIMIT", "1GB")
_FLUSH_ROWS = 20_000
_MAX_REPORTED = 100

# samples.messages (migration 0010); tool_calls is JSON text, imported into the JSON field
_TURN = pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning", pa.string()),
                   ("tool_calls", pa.string()), ("tool_call_id", pa.string()), ("name", pa.string())])
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
    ("tools", pa.string()),
    ("kto_label", pa.bool_()),
])


Progress = Callable[[int, int | None], None]


class IngestError(InputError):
    """The load was refused; nothing was written. The message names the file, record and expectation."""


class DatasetNameError(IngestError, NameRuleError):
    """A dataset name that breaks NAME_RULE."""


class DatasetExistsError(IngestError, ConflictError):
    """A dataset of that name already exists (found before the load, or by a load that won a race)."""


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
    # where each top-level source field went (FieldAccounting.as_list) and what was left unused
    fields: list[dict[str, Any]] = field(default_factory=list)
    not_used: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        """One line per destination: the fields that went into turns, into metadata, and those not used."""
        lines = []
        for dest, label in (("turns", "into turns"), ("metadata", "into metadata")):
            names = [f["field"] for f in self.fields if f[dest]]
            if names:
                lines.append(f"{label}: {', '.join(names)}")
        if self.not_used:
            lines.append("not used: " + "; ".join(self.not_used) + " (kept in the raw record only)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class _Batch:
    source_id: list[str | None] = field(default_factory=list)
    row_idx: list[int] = field(default_factory=list)
    messages: list[list[dict[str, str]]] = field(default_factory=list)
    rejected: list[list[dict[str, str]] | None] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    n_chars: list[int] = field(default_factory=list)
    meta: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    locator: list[str] = field(default_factory=list)
    tools: list[str | None] = field(default_factory=list)
    kto_label: list[bool | None] = field(default_factory=list)

    def to_arrow(self) -> pa.RecordBatch:
        columns = dict(self.__dict__)
        text = pa.array(columns["text"], pa.string())
        # The flat text joins turns with blank lines, so its estimate is the sum of the turns' estimates.
        columns["text"], columns["n_tokens"] = text, count_tokens(text)
        return pa.RecordBatch.from_pydict(columns, schema=STAGING_SCHEMA)


class _FieldCatalog:
    """The metadata fields seen and their value types, so pages can offer the right filter."""

    def __init__(self) -> None:
        self.types: dict[str, set[str]] = {}

    def add(self, meta: dict[str, Any]) -> None:
        for key, value in meta.items():
            kind = shapes.json_kind(value)
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


def _staged_turns(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turns as the staging file holds them: tool calls as JSON text."""
    if not any("tool_calls" in t for t in turns):
        return turns
    return [dict(t, tool_calls=_dumps(t["tool_calls"])) if "tool_calls" in t else t for t in turns]


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _staging_dir(store: Store) -> Path:
    path = store.path.parent / ".assay-staging"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _new_staging_file(store: Store, suffix: str = "") -> Path:
    """A fresh staging file name beside the store (after removing dead processes' leftovers)."""
    folder = _staging_dir(store)
    _remove_stale_staging(folder)
    return folder / f"ingest-{os.getpid()}-{uuid.uuid4().hex}{suffix}.parquet"


def _remove_stale_staging(folder: Path) -> None:
    """Staging files of processes that died mid-load: never imported, safe to delete."""
    for file in folder.glob("ingest-*.parquet"):
        try:
            pid = int(file.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            file.unlink(missing_ok=True)


def _check_request(store: Store, name: str, on_bad: str) -> None:
    """What every load checks before reading anything: on_bad, and a new dataset name."""
    if on_bad not in ("error", "skip"):
        raise IngestError(f"on_bad must be 'error' or 'skip', not {on_bad!r}")
    _check_name(store, name)


def check_dataset_name(name: str) -> str:
    """The name if it follows NAME_RULE, else DatasetNameError saying which part it breaks. Names are only
    ever stored and shown as text: folders and files are named from dataset ids, never from names."""
    if not isinstance(name, str) or not name.strip():
        raise DatasetNameError(f"A dataset needs a name (--name); {NAME_RULE}.")
    if len(name) > MAX_NAME_CHARS:
        raise DatasetNameError(f"The dataset name is {len(name):,} characters long; {NAME_RULE}.")
    bad = next((c for c in name if unicodedata.category(c) in _NAME_REFUSED), None)
    if bad is not None:
        raise DatasetNameError(f"The dataset name holds the character U+{ord(bad):04X} "
                               f"({unicodedata.name(bad, 'a control character')}); {NAME_RULE}.")
    if name != name.strip():
        raise DatasetNameError(f"The dataset name {name!r} starts or ends with a space; {NAME_RULE}.")
    return name


def _exists(store: Store, name: str) -> DatasetExistsError:
    return DatasetExistsError(f"A dataset named {name!r} already exists in {store.path}; choose another name or "
                              "drop it first.")


def _check_name(store: Store, name: str) -> None:
    check_dataset_name(name)
    if name in store.dataset_names():
        raise _exists(store, name)


_IMPORT_LOCKS: dict[Path, threading.Lock] = {}
_IMPORT_LOCKS_GUARD = threading.Lock()


@contextmanager
def _claiming(store: Store, name: str) -> Iterator[None]:
    """Around a load's import transaction. Imports into one store take turns: across processes DuckDB's
    file lock does that, within one this lock does, so the name check inside the transaction sees every
    committed rival. A load that lost a race anyway gets DatasetExistsError, never a raw constraint error."""
    with _IMPORT_LOCKS_GUARD:
        lock = _IMPORT_LOCKS.setdefault(store.path.resolve(), threading.Lock())
    try:
        with lock:
            yield
    except (duckdb.ConstraintException, duckdb.TransactionException) as exc:
        if name in store.dataset_names():
            raise _exists(store, name) from None
        raise exc


def _check_name_in(con: Any, store: Store, name: str) -> None:
    """The name check again, inside the import transaction, before the heavy insert."""
    if con.execute("SELECT 1 FROM datasets WHERE name = ?", [name]).fetchall():
        raise _exists(store, name)


class _Collector:
    """Normalises raw records and streams them to the staging file, collecting problems on the way."""

    def __init__(self, writer: pq.ParquetWriter, shape: str, mapping: dict[str, str] | None,
                 skip_bad: bool, max_chars: int) -> None:
        self.writer, self.shape, self.mapping = writer, shape, mapping
        self.skip_bad, self.max_chars = skip_bad, max_chars
        self.batch = _Batch()
        self.fields = _FieldCatalog()
        self.accounting = FieldAccounting()
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
        try:
            raw = item.raw_json if item.raw_json is not None else _dumps(item.record)
            metas = [_dumps(sample.meta) for sample in samples]
        except TypeError as exc:  # orjson: nested deeper than it writes (254 levels), or an unwritable value
            self.bad(item.locator, f"cannot be stored as JSON ({exc}); expected a record nested at most 254 levels")
            return
        self.accounting.add(item.record, samples)
        for k, sample in enumerate(samples):
            contents = [turn_text(t) for t in sample.messages]
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
            b.messages.append(_staged_turns(sample.messages))
            b.rejected.append(None if sample.rejected is None else _staged_turns(sample.rejected))
            b.tools.append(None if sample.tools is None else _dumps(sample.tools))
            b.kto_label.append(sample.kto_label)
            # The flat text is the turns' contents only, so a search for "user" finds users, not roles.
            b.text.append("\n\n".join(contents))
            b.n_chars.append(size)
            b.meta.append(metas[k])
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
    with pq.ParquetWriter(staging, STAGING_SCHEMA, compression="none") as writer:
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


_KEEP_FIRST = "QUALIFY row_number() OVER (PARTITION BY source_id ORDER BY row_idx) = 1"


def _duplicates(con: Any, staging: str, skip_bad: bool, collector: _Collector) -> int:
    """Refuse (or, when skipping, drop all but the first of) samples that share a source id; returns
    how many are dropped."""
    dups = con.execute(
        "SELECT source_id, list(locator ORDER BY row_idx)[:5] AS where_, count(*) AS n "
        "FROM read_parquet(?) GROUP BY source_id HAVING count(*) > 1 ORDER BY min(row_idx) LIMIT 5",
        [staging],
    ).fetchall()
    if not dups:
        return 0
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
    return extra


@contextmanager
def bulk_settings(con: Any, limit: str = IMPORT_MEMORY_LIMIT) -> Iterator[None]:
    """Settings for one big insert, restored afterwards: a bounded buffer pool, and no insertion order to
    preserve, which lets both cores write and compress row groups (measured: half the time). Rows carry
    row_idx and ids computed from it, so nothing depends on the physical order."""
    previous = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    with memory_limit(con, limit):
        con.execute("SET preserve_insertion_order = false")
        try:
            yield
        finally:
            con.execute(f"SET preserve_insertion_order = {bool(previous)}")


def reserve_sample_ids(con: Any, n: int) -> int:
    """Take n consecutive sample ids from the store's sequence (inside the caller's write transaction);
    returns the first. Sample i of the new dataset gets id first + i."""
    last = con.execute("SELECT max(nextval('sample_id_seq')) FROM range(?)", [n]).fetchall()[0][0]
    return last - n + 1


def _import(store: Store, staging: Path, target: _Target, *, collector: _Collector,
            skip_bad: bool) -> tuple[int, int, int]:
    staged = str(staging)
    with _claiming(store, target.name), store.transaction() as con, bulk_settings(con):
        _check_name_in(con, store, target.name)
        dropped = _duplicates(con, staged, skip_bad, collector)
        keep = _KEEP_FIRST if dropped else ""
        n_samples = collector.n_samples - dropped
        # Staged rows are already in order; renumber only when duplicates were dropped.
        row_idx = "row_number() OVER (ORDER BY row_idx) - 1" if keep else "row_idx"
        run, dataset_id = _start(store, con, target)
        first_id = reserve_sample_ids(con, n_samples)
        con.execute(
            f"""
            INSERT INTO samples
            SELECT ? + idx, ?, source_id, idx, messages, rejected, text, len(messages), n_chars, n_tokens, meta, raw,
                   tools, kto_label
            FROM (SELECT *, {row_idx} AS idx FROM read_parquet(?) {keep})
            """,
            [first_id, dataset_id, staged],
        )
        _register(store, con, target, dataset_id=dataset_id, run=run, n_samples=n_samples,
                  n_records=collector.n_records, n_skipped=collector.n_skipped, fields=collector.fields.as_list())
    return dataset_id, run.run_id, n_samples


def _register(store: Store, con: Any, target: _Target, *, dataset_id: int, run: Run, n_samples: int,
              n_records: int, n_skipped: int, fields: list[dict[str, str]]) -> None:
    """The dataset row and the finished ingest run, inside the load's transaction."""
    t = target
    con.execute(
        "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [dataset_id, t.name, t.source, t.fmt, t.options["shape"], t.license, t.synthetic, t.is_eval,
         t.description, n_samples, n_records, n_skipped, _dumps(fields), _dumps(t.options), now_utc(), run.run_id],
    )
    run.finish(n_samples, con=con)


def _start(store: Store, con: Any, target: _Target) -> tuple[Run, int]:
    """The new dataset's id and its ingest run, inside the load's transaction (a failed load leaves neither)."""
    dataset_id = con.execute("SELECT nextval('dataset_id_seq')").fetchall()[0][0]
    run = store.run("ingest", target.options, dataset_id=dataset_id, sample_filter=target.source, con=con)
    return run, dataset_id


@dataclass
class _Target:
    """The dataset a load creates, as its datasets row records it."""

    name: str
    source: str
    fmt: str
    license: str | None
    synthetic: bool
    is_eval: bool
    description: str | None
    options: dict[str, Any]  # load_options: format, shape, mapping, on_bad, ..., and which path loaded it


def _run(store: Store, batches: Iterator[list[RawRecord]], target: _Target, *, shape: str | None,
         mapping: dict[str, str] | None, on_bad: str, max_chars: int, progress: Progress | None,
         total: int | None, reader_skips: _ReaderSkips | None = None, strict: bool = False) -> IngestReport:
    started = time.perf_counter()
    staging = _new_staging_file(store)
    skip_bad = on_bad == "skip"
    try:
        collector, shape = _stage(batches, staging, source=target.source, shape=shape, mapping=mapping,
                                  skip_bad=skip_bad, max_chars=max_chars, progress=progress, total=total,
                                  reader_skips=reader_skips)
        if collector.n_samples == 0:
            raise IngestError(f"{target.source}: every record was bad ({collector.n_skipped} skipped); "
                              "nothing to load.")
        accounting = collector.accounting
        if strict and accounting.warnings():
            raise IngestError(f"{target.source}: " + "; ".join(accounting.warnings()) + " (refused under strict)")
        target.options.update(shape=shape, path="records", field_accounting=accounting.as_list(),
                              not_used=accounting.not_used())
        dataset_id, run_id, n_samples = _import(store, staging, target, collector=collector, skip_bad=skip_bad)
    finally:
        staging.unlink(missing_ok=True)
    return IngestReport(target.name, dataset_id, collector.n_records, n_samples, collector.n_skipped,
                        collector.skipped, shape, target.fmt, round(time.perf_counter() - started, 3), run_id,
                        accounting.as_list(), accounting.not_used(), accounting.warnings())


def _run_columnar(store: Store, source: str | Path, target: _Target, *, shape: str | None, split: str | None,
                  max_chars: int, progress: Progress | None) -> IngestReport | None:
    """Load a flat Parquet or JSON Lines source in SQL (core/ingest/columnar.py); None when the record
    path must load it instead: a shape or value type the SQL does not cover, or any record it would
    refuse or report (that path then names it)."""
    started = time.perf_counter()
    try:  # a bad record among the first ones: the record path reports it (or skips it)
        first = next(readers.iter_batches(source, target.fmt, batch_size=100, split=split,
                                          on_error=_raise_fallback, max_line_bytes=readers.line_limit(max_chars)),
                     None)
    except _Fallback:
        return None
    if not first:
        return None
    shape = _detect_shape(first, shape, None, target.source)
    if target.fmt == "jsonl" and shape in ingest_columnar.TURN_SHAPES:
        turns_plan = arrow_turns.plan([r.record for r in first], shape)
        if isinstance(turns_plan, str):
            target.options["arrow_path_reason"] = turns_plan
        else:
            report = _load_turns(store, source, target, turns_plan, max_chars=max_chars, progress=progress,
                                 started=started)
            if report is not None:
                return report
    staging = None
    try:
        if target.fmt == "parquet":
            plan = ingest_columnar.plan(readers.parquet_files(source, split), shape, None)
        else:
            staging = _new_staging_file(store, "-lines")
            n = ingest_columnar.stage_jsonl(Path(source), staging, progress, max_line=readers.line_limit(max_chars))
            if isinstance(n, str) or n == 0:
                plan = n or "no records"
            else:
                plan = ingest_columnar.plan_jsonl(staging, [r.record for r in first], shape, n)
        if isinstance(plan, str):
            target.options["records_path_reason"] = plan
            return None
        accounting = FieldAccounting()
        fields = list(getattr(plan.access, "keys", None) or plan.access.kinds)  # JSON Lines keys / Parquet columns
        accounting.add_columns(plan.n_rows, fields, plan.meta)
        target.options.update(shape=shape, path="columnar", field_accounting=accounting.as_list(), not_used=[])
        return _load_plan(store, target, plan, max_chars=max_chars, progress=progress, started=started)
    finally:
        if staging is not None:
            staging.unlink(missing_ok=True)


def _load_plan(store: Store, target: _Target, plan: ingest_columnar.ColumnarPlan, *, max_chars: int,
               progress: Progress | None, started: float) -> IngestReport | None:
    try:
        with _claiming(store, target.name), store.transaction() as con, bulk_settings(con):
            _check_name_in(con, store, target.name)
            if not plan.single_pass:
                bad_row = con.execute(plan.check_sql(max_chars)).fetchall()[0][0]
                if bad_row is not None:
                    raise _Fallback(f"row {bad_row} needs the record path")
            ingest_columnar.register_udfs(con)
            run, dataset_id = _start(store, con, target)
            first_id = reserve_sample_ids(con, plan.n_rows)
            try:
                con.execute(plan.insert_sql(max_chars if plan.single_pass else None),
                            {"first_id": first_id, "dataset_id": dataset_id})
            finally:
                ingest_columnar.unregister_udfs(con)
            if con.execute("SELECT 1 FROM samples WHERE dataset_id = ? GROUP BY source_id HAVING count(*) > 1 "
                           "LIMIT 1", [dataset_id]).fetchall():
                raise _Fallback("duplicate ids")
            catalog = _FieldCatalog()
            stored = plan.stored_kinds_sql() if plan.single_pass else None
            row = (con.execute(stored, {"dataset_id": dataset_id}) if stored else con.execute(plan.kinds_sql()))
            catalog.types = plan.field_kinds(row.fetchall()[0])
            _register(store, con, target, dataset_id=dataset_id, run=run, n_samples=plan.n_rows,
                      n_records=plan.n_rows, n_skipped=0, fields=catalog.as_list())
    except (_Fallback, duckdb.Error) as exc:
        # A malformed JSON line is a DuckDB error here; the record path reports it with its line number.
        target.options["path"] = None
        target.options["records_path_reason"] = str(exc).splitlines()[0][:200]
        return None
    if progress:
        progress(plan.n_rows, plan.n_rows)
    return IngestReport(target.name, dataset_id, plan.n_rows, plan.n_rows, 0, [], plan.shape, target.fmt,
                        round(time.perf_counter() - started, 3), run.run_id, target.options["field_accounting"])


def _load_turns(store: Store, source: str | Path, target: _Target, plan: arrow_turns.TurnsPlan, *,
                max_chars: int, progress: Progress | None, started: float) -> IngestReport | None:
    """A list-of-turns JSON Lines file through the streaming Arrow path (core/ingest/arrow_turns.py), in
    one transaction; None (nothing written) when a line needs another path."""
    accounting = FieldAccounting()
    try:
        with _claiming(store, target.name), store.transaction() as con, bulk_settings(con):
            _check_name_in(con, store, target.name)
            dataset_id = con.execute("SELECT nextval('dataset_id_seq')").fetchall()[0][0]
            first: list[int] = []

            def first_id_of(n_before: int, n_rows: int) -> int:
                """Consecutive ids block after block (imports take turns, so nothing else takes any)."""
                start = reserve_sample_ids(con, n_rows)
                if not first:
                    first.append(start - n_before)
                elif start != first[0] + n_before:
                    raise arrow_turns.GiveWay("sample ids were not consecutive")
                return start

            n_rows, kinds = arrow_turns.load(con, plan, Path(source), first_id_of=first_id_of,
                                             dataset_id=dataset_id, max_chars=max_chars,
                                             max_line=readers.line_limit(max_chars), progress=progress)
            if n_rows == 0:
                raise arrow_turns.GiveWay("no records")
            if con.execute("SELECT 1 FROM samples WHERE dataset_id = ? GROUP BY source_id HAVING count(*) > 1 "
                           "LIMIT 1", [dataset_id]).fetchall():
                raise arrow_turns.GiveWay("duplicate ids")
            accounting.add_columns(n_rows, plan.keys, plan.meta)
            target.options.update(shape=plan.shape, path="arrow", field_accounting=accounting.as_list(),
                                  not_used=[])
            # the run is recorded once its parameters (the field accounting) are known, in the same transaction
            run = store.run("ingest", target.options, dataset_id=dataset_id, sample_filter=target.source, con=con)
            catalog = _FieldCatalog()
            catalog.types = kinds
            _register(store, con, target, dataset_id=dataset_id, run=run, n_samples=n_rows, n_records=n_rows,
                      n_skipped=0, fields=catalog.as_list())
    except (arrow_turns.GiveWay, duckdb.Error, pa.ArrowException) as exc:
        target.options["path"] = None
        target.options.pop("field_accounting", None)
        target.options.pop("not_used", None)
        target.options["arrow_path_reason"] = str(exc).splitlines()[0][:200]
        return None
    if progress:
        progress(n_rows, n_rows)
    return IngestReport(target.name, dataset_id, n_rows, n_rows, 0, [], plan.shape, target.fmt,
                        round(time.perf_counter() - started, 3), run.run_id, target.options["field_accounting"])


class _Fallback(Exception):
    """The columnar path gives way to the record path (which reports the problem properly)."""


def _raise_fallback(locator: str, message: str) -> None:
    raise _Fallback(f"{locator}: {message}")


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
    columnar: bool = True,
    strict: bool = False,
    txt_mode: str = "line",
) -> IngestReport:
    """Load a file, a folder of shards, a save_to_disk folder or a hub id as a new dataset.

    on_bad="error" refuses the whole load at the first bad record (nothing written); on_bad="skip" leaves
    bad records out and reports how many and which (IngestReport.skipped). Flat Parquet and JSON Lines
    sources load through the columnar path (core/ingest/columnar.py) unless columnar=False; the result is
    the same. Plain .txt files are one document per line (txt_mode="line") or per blank-line-separated
    paragraph (txt_mode="paragraph"). A field that holds conversation turns but was left unused is a
    warning in the report, and refuses the load when strict.
    """
    _check_request(store, name, on_bad)
    if txt_mode not in readers.TXT_MODES:
        raise IngestError(f"txt_mode must be one of {', '.join(readers.TXT_MODES)}, not {txt_mode!r}")
    try:
        fmt = format or readers.detect_format(source)
        options = {"format": fmt, "shape": shape, "mapping": mapping, "on_bad": on_bad, "max_chars": max_chars,
                   "token_method": TOKEN_METHOD, "split": split, "encoding": encoding}
        if fmt == "txt":
            options["txt_mode"] = txt_mode
        target = _Target(name, str(source), fmt, license, synthetic, is_eval, description, options)
        flat_jsonl = fmt == "jsonl" and encoding in ("utf-8", "utf-8-sig") and Path(source).is_file()
        if columnar and not mapping and ((fmt == "parquet" and Path(source).exists()) or flat_jsonl):
            report = _run_columnar(store, source, target, shape=shape, split=split, max_chars=max_chars,
                                   progress=progress)
            if report is not None:
                return _indexed(store, report)
        skipper = _ReaderSkips() if on_bad == "skip" else None
        if fmt == "txt":
            batches = readers.iter_txt_batches(source, txt_mode, on_error=skipper, encoding=encoding)
        else:
            batches = readers.iter_batches(source, fmt, on_error=skipper, encoding=encoding, split=split,
                                           max_line_bytes=readers.line_limit(max_chars))
        return _indexed(store, _run(store, batches, target, shape=shape, mapping=mapping, on_bad=on_bad,
                                    max_chars=max_chars, progress=progress,
                                    total=readers.count_hint(source, fmt, split=split), reader_skips=skipper,
                                    strict=strict))
    except readers.FormatError as exc:
        raise IngestError(str(exc)) from exc


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
    strict: bool = False,
) -> IngestReport:
    """Load records already in memory (a list of dicts, a generator) as a new dataset."""
    _check_request(store, name, on_bad)
    options = {"format": "records", "shape": shape, "mapping": mapping, "on_bad": on_bad, "max_chars": max_chars,
               "token_method": TOKEN_METHOD}
    target = _Target(name, source, "records", license, synthetic, is_eval, description, options)
    return _indexed(store, _run(store, _batched(records), target, shape=shape, mapping=mapping, on_bad=on_bad,
                                max_chars=max_chars, progress=progress, total=None, strict=strict))


def _indexed(store: Store, report: IngestReport) -> IngestReport:
    """The new dataset's texts into its search index (large datasets only; never fails the load). DuckDB's
    buffer pool stays bounded meanwhile, as during the load: the index copies every text out in id order
    (1M conversations: the whole ingest peaked at 4.4 GB with DuckDB's default limit, 80% of RAM)."""
    with store.connect() as con, memory_limit(con, IMPORT_MEMORY_LIMIT):
        search_index.after_ingest(store, report.dataset_id, report.n_samples)
    return report


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
    """Remove a dataset, its samples and everything computed on them (embeddings, projections, clusters,
    tags, labels, noise scores, duplicate groups, contamination results, selections, maps), in one
    transaction; its runs stay in the log. Returns how many samples went."""
    info = store.dataset(name)
    with store.transaction() as con:
        # Every table keyed by sample, found from the catalogue so that a later migration's tables are
        # covered too (a dropped dataset used to leave orphan rows that pages then tripped over).
        per_sample = [t for (t,) in con.execute(
            "SELECT c.table_name FROM duckdb_columns() c JOIN duckdb_tables() t USING (table_name) "
            "WHERE c.column_name = 'sample_id' AND c.table_name <> 'samples' ORDER BY 1").fetchall()]
        ids = "SELECT id FROM samples WHERE dataset_id = $d"
        for table in per_sample:
            con.execute(f'DELETE FROM "{table}" WHERE sample_id IN ({ids})', {"d": info.dataset_id})
        con.execute("DELETE FROM contamination_results WHERE eval_dataset_id = $d", {"d": info.dataset_id})
        con.execute("DELETE FROM contamination_eval_items WHERE eval_dataset_id = $d", {"d": info.dataset_id})
        con.execute("DELETE FROM maps WHERE dataset_id = $d OR list_contains(datasets, $n)",
                    {"d": info.dataset_id, "n": name})
        con.execute("DELETE FROM noise_runs WHERE dataset_id = $d", {"d": info.dataset_id})
        con.execute("DELETE FROM samples WHERE dataset_id = $d", {"d": info.dataset_id})
        con.execute("DELETE FROM datasets WHERE dataset_id = $d", {"d": info.dataset_id})
    search_index.drop_index(store, info.dataset_id)  # after the commit: a failed drop keeps its index
    return info.n_samples
