"""The columnar ingest path: a Parquet file (or folder of Parquet shards) in a flat shape, in one statement.

Most large SFT and pre-training sources are Parquet with one string column per field (question/answer,
instruction/input/output, instruction/context/response, text). For those, normalising record by record
in Python costs far more than the data needs: DuckDB reads the columns on both cores, builds the turns,
flat text, lengths, metadata and raw record in SQL, and one INSERT writes them (bench/ingest_bench.py
measures both paths on the same file).

The SQL mirrors core/shapes.py exactly for these shapes (tests load the same files both ways and compare
every stored column). A source whose columns are not all flat scalars is not planned at all; a source
with any record the record path would refuse or report (a missing value, an empty text, an over-long
sample, a duplicate id) is handed to the record path, which names the file, row and problem.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core import shapes

SHAPES = ("qa", "alpaca", "dolly", "text")
_RESERVED = {"file_row_number", "filename", "__row"}
# Every character str.isspace() accepts, so "blank" means the same here as in shapes.py.
_WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_WS_SQL = "'" + _WHITESPACE + "'"  # a literal: chr() calls were evaluated per row (4 s per million)
_WS_CODES = ", ".join(str(ord(c)) for c in _WHITESPACE)
_BLANK_LINE = "'\n\n'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _kind(dtype: pa.DataType) -> str | None:
    """The JSON kind of a flat Arrow type, or None for anything nested, binary or temporal."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_null(dtype):
        return "null"  # a column with no values at all
    return None


def _value(name: str, kind: str) -> str:
    """A column as it appears in JSON: floats that are NaN or infinite become null, as in the record path."""
    col = _q(name)
    return f"CASE WHEN isfinite({col}) THEN {col} END" if kind == "float" else col


def _json_object(columns: list[tuple[str, str]]) -> str:
    if not columns:
        return "'{}'::JSON"
    args = ", ".join(f"{_lit(name)}, {_value(name, kind)}" for name, kind in columns)
    return f"json_object({args})"


def _blank(expr: str) -> str:
    """Null, empty or str.isspace(). The trim runs only where the first character is whitespace, and the
    test is a plain OR chain that DuckDB short-circuits (wrapped in coalesce() it cost 2 s per million)."""
    return f"({expr} IS NULL OR {expr} = '' OR (ord({expr}) IN ({_WS_CODES}) AND trim({expr}, {_WS_SQL}) = ''))"


def _join(prompt: str, extra: str | None) -> str:
    """shapes._join: the extra text follows after a blank line unless it is empty or all whitespace."""
    if extra is None:
        return prompt
    blank = _blank(f"coalesce({extra}, '')")
    return f"(CASE WHEN {blank} THEN {prompt} ELSE {prompt} || {_BLANK_LINE} || {extra} END)"


def _turn(role: str, content: str) -> str:
    return f"{{'role': '{role}', 'content': {content}}}"


@dataclass
class ColumnarPlan:
    """How to load one flat Parquet source in SQL; `sql` selects the samples' columns from `source`."""

    files: list[str]
    shape: str
    columns: list[tuple[str, str]]   # every source column and its kind, in order
    meta_columns: list[tuple[str, str]]
    contents: list[str]              # SQL of each turn's content (for lengths and blank checks)
    messages: str                    # SQL of the turns list
    required: list[str]              # columns that must not be null
    source_id: str
    n_rows: int

    def source(self) -> str:
        """The rows with a global row number `__row` (file order, then row order within a file)."""
        files = ", ".join(map(_lit, self.files))
        if len(self.files) == 1:
            return (f"SELECT file_row_number AS __row, * EXCLUDE (file_row_number) "
                    f"FROM read_parquet([{files}], file_row_number = true)")
        offsets, total = [], 0
        for f in self.files:
            offsets.append(f"({_lit(f)}, {total})")
            total += pq.ParquetFile(f).metadata.num_rows
        return (f"SELECT o.off + p.file_row_number AS __row, p.* EXCLUDE (file_row_number, filename) "
                f"FROM read_parquet([{files}], file_row_number = true, filename = true) p "
                f"JOIN (VALUES {', '.join(offsets)}) o(fname, off) ON p.filename = o.fname")

    def first_bad_row_sql(self, max_chars: int) -> str:
        """The first row the record path would refuse or report (a missing required value, no non-blank
        turn, over max_chars), or NULL. A separate pass: as a filter inside the INSERT it doubled its time."""
        n_chars = " + ".join(f"coalesce(length({c}), 0)" for c in self.contents)
        missing = [f"{_q(c)} IS NULL" for c in self.required]
        empty = " AND ".join(_blank(c) for c in self.contents)
        bad = " OR ".join(f"({p})" for p in [*missing, empty, f"{n_chars} > {int(max_chars)}"])
        return f"SELECT min(__row) FROM ({self.source()}) src WHERE {bad}"

    def insert_sql(self) -> str:
        """INSERT of every sample; parameters $first_id and $dataset_id."""
        n_chars = " + ".join(f"coalesce(length({c}), 0)" for c in self.contents)
        text = f"concat_ws({_BLANK_LINE}, {', '.join(self.contents)})"  # a turn that is absent is NULL
        return f"""
            INSERT INTO samples
            SELECT $first_id + __row, $dataset_id, source_id, __row, messages, NULL, text, len(messages),
                   n_chars, assay_tokens(text), meta, raw
            FROM (
                SELECT __row, {self.source_id} AS source_id, {self.messages} AS messages, {text} AS text,
                       {n_chars} AS n_chars, {_json_object(self.meta_columns)} AS meta,
                       {_json_object(self.columns)} AS raw
                FROM ({self.source()}) src
            )
        """

    def null_counts_sql(self) -> str:
        """How many non-null (finite) values each metadata column holds, for the field catalogue."""
        parts = [f"count({_value(name, kind)})" for name, kind in self.meta_columns] or ["0"]
        return f"SELECT {', '.join(parts)} FROM read_parquet([{', '.join(map(_lit, self.files))}])"

    def fields(self, present: list[int]) -> list[dict[str, str]]:
        """The field catalogue as the record path builds it (core.ingest._FieldCatalog)."""
        out = []
        for (name, kind), count in zip(self.meta_columns, present, strict=True):
            shown = "null" if count == 0 else {"integer": "number", "float": "number"}.get(kind, kind)
            out.append({"name": name, "type": shown})
        return out


def parquet_files(source: str | Path, split: str | None = None) -> list[Path]:
    """The Parquet files of a source, in the order the record path reads them."""
    from core import readers

    path = Path(source)
    if path.is_dir():
        return readers._folder_shards(path, "parquet", split)[1]
    return [path]


def plan(files: list[Path], shape: str, mapping: dict[str, str] | None) -> ColumnarPlan | str:
    """A plan for loading `files` in SQL, or the reason the record path must load them instead."""
    if mapping:
        return "a column mapping is given"
    if shape not in SHAPES:
        return f"shape {shape!r} is not flat"
    schema = None
    n_rows = 0
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError):
            return f"{f.name} is not a readable Parquet file"
        if schema is None:
            schema = meta.schema.to_arrow_schema()
        elif not meta.schema.to_arrow_schema().equals(schema):
            return f"{f.name} has a different schema from {files[0].name}"
        n_rows += meta.num_rows
    if schema is None or n_rows == 0:
        return "no rows"
    columns: list[tuple[str, str]] = []
    for fld in schema:
        kind = _kind(fld.type)
        if kind is None:
            return f"column {fld.name!r} has type {fld.type}, not a flat scalar"
        if fld.name in _RESERVED or fld.name == "":
            return f"column name {fld.name!r} is reserved"
        columns.append((fld.name, kind))
    kinds = dict(columns)
    built = _shape_sql(shape, kinds)
    if isinstance(built, str):
        return built
    messages, contents, required, used = built
    meta_columns = [(n, k) for n, k in columns if n not in used]
    return ColumnarPlan([str(f) for f in files], shape, columns, meta_columns, contents, messages, required,
                        _source_id_sql(kinds), n_rows)


def _source_id_sql(kinds: dict[str, str]) -> str:
    """shapes._source_id: the first id-like column holding a string or an integer, else the row number."""
    picks = [f"CAST({_q(k)} AS VARCHAR)" for k in shapes._ID_KEYS if kinds.get(k) in ("string", "integer")]
    return f"coalesce({', '.join([*picks, 'CAST(__row AS VARCHAR)'])})"


def _strings(kinds: dict[str, str], *names: str) -> str | None:
    """The reason a column the shape reads is not a string column, or None when all are."""
    for name in names:
        if name in kinds and kinds[name] != "string":
            return f"column {name!r} is {kinds[name]}, not string"
    return None


def _shape_sql(shape: str, kinds: dict[str, str]) -> tuple[str, list[str], list[str], set[str]] | str:
    """(messages SQL, contents SQL, required columns, used columns) for a flat shape, or why not."""
    if shape == "qa":
        pair = next(((q, a) for q, a in shapes._QA_PAIRS if q in kinds and a in kinds), None)
        if pair is None:
            return "no question/answer column pair"
        q, a = pair
        contents = [_q(q), _q(a)]
        problem = _strings(kinds, q, a)
        return problem or (f"[{_turn('user', contents[0])}, {_turn('assistant', contents[1])}]", contents,
                           [q, a], {q, a})
    if shape == "text":
        key = next((k for k in shapes._TEXT_KEYS if k in kinds), None)
        if key is None or kinds[key] != "string":
            return "no string text column"
        return f"[{_turn('text', _q(key))}]", [_q(key)], [key], {key}
    if shape == "alpaca":
        if "history" in kinds:
            return "an Alpaca history column"
        problem = _strings(kinds, "instruction", "output", "input", "system")
        if problem:
            return problem
        user = _join(_q("instruction"), _q("input") if "input" in kinds else None)
        turns = [_turn("user", user), _turn("assistant", _q("output"))]
        contents = [user, _q("output")]
        messages = f"[{', '.join(turns)}]"
        if "system" in kinds:
            system = f"coalesce({_q('system')}, '')"
            messages = (f"(CASE WHEN {system} <> '' THEN [{_turn('system', system)}, {', '.join(turns)}] "
                        f"ELSE {messages} END)")
            contents = [f"(CASE WHEN {system} <> '' THEN {system} END)", *contents]
        return messages, contents, ["instruction", "output"], set(shapes._ALPACA_USED)
    if shape == "dolly":
        problem = _strings(kinds, "instruction", "context", "response")
        if problem:
            return problem
        user = _join(_q("instruction"), _q("context") if "context" in kinds else None)
        contents = [user, _q("response")]
        return (f"[{_turn('user', user)}, {_turn('assistant', _q('response'))}]", contents,
                ["instruction", "response"], set(shapes._DOLLY_USED))
    return f"shape {shape!r} is not flat"


def register_udfs(con: Any) -> None:
    """The token estimate as a vectorised function the INSERT calls (see core/tokens.py)."""
    from core.tokens import count_tokens

    def tokens(column: pa.Array | pa.ChunkedArray) -> pa.Array:
        return pa.array(count_tokens(column), pa.int32())

    con.create_function("assay_tokens", tokens, ["VARCHAR"], "INTEGER", type="arrow", side_effects=False)


def unregister_udfs(con: Any) -> None:
    try:
        con.remove_function("assay_tokens")
    except Exception:  # noqa: BLE001 - never registered on this connection
        pass
