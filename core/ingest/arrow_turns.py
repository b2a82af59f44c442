"""The streaming Arrow path for lists of turns in JSON Lines (OpenAI `messages`, ShareGPT `conversations`).

The file is read in blocks of whole lines. Each block is parsed by pyarrow's JSON reader against an exact
schema built from the first records (a turn is exactly {role, content} or {from, value}, both strings;
every other field a string, integer or boolean), so that anything else in any line (another key, a
number where a string was, a key written twice, a truncated line) is an error there. The turns, flat text,
lengths and token estimates are built with Arrow compute and numpy, the raw record is the stripped line
itself, and one INSERT per block writes the block's samples inside the load's transaction (memory stays
bounded by the block, whatever the file's size).

What the record path would read differently gives way: a role other than the plain chat roles, a null
turn, role or content, a line whose keys differ from the first record's (in set or order: metadata keeps the
record's order), an empty text, an over-long sample, a duplicate id, a lone surrogate escape, a line that
is not UTF-8. The caller then loads the file by the SQL columnar path or the record path, which name the
file, row and problem. tests/test_ingest_columnar_identical.py checks every stored column byte for byte
against the record path.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

import core.ingest.columnar as columnar
import core.ingest.readers as readers
import core.ingest.shapes as shapes
from core.ingest.tokens import count_tokens
from core.store.database import setting

BLOCK_BYTES = 32 * 1024 * 1024  # file bytes per block: ~25k conversations, ~0.3 GB of Arrow and DuckDB at most
_SCAN_BATCHES = 8  # record batches per block handed to DuckDB
_PARSE_BLOCK = 4 * 1024 * 1024  # pyarrow's own block size inside one of ours (its threads split on these)
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.strip() strips
_ROLE_KEYS = pa.array(list(columnar._PLAIN_ROLES), pa.string())
_ROLE_VALUES = pa.array(list(columnar._PLAIN_ROLES.values()), pa.string())
_KINDS = {"string": pa.string(), "integer": pa.int64(), "bool": pa.bool_(), "null": pa.string()}
_TURN_FIELDS = [("role", pa.string()), ("content", pa.string()), ("reasoning", pa.string()),
                ("tool_calls", pa.string()), ("tool_call_id", pa.string()), ("name", pa.string())]
_WHITESPACE = pa.array(list(columnar._WHITESPACE), pa.string())
# Control characters written as \u00XX with a letter in XX: DuckDB's json_object writes \u001F where the
# record path's orjson writes \u001f, so a metadata string holding one gives way.
_UPPER_HEX_ESCAPES = "[\x0b\x0e\x0f\x1a-\x1f]"


class GiveWay(Exception):
    """This file is not for the Arrow path (the message says why); nothing it wrote is kept."""


@dataclass
class TurnsPlan:
    """How to read one list-of-turns JSON Lines file."""

    shape: str
    key: str                          # the turns field
    style: tuple[str, str]            # (role key, content key) of every turn
    keys: list[str]                   # every field, in record order
    kinds: dict[str, str]             # each other field's JSON kind (string, integer, bool, null)
    meta: list[str]                   # the fields that go into metadata, in record order
    schema: pa.Schema = field(init=False)

    def __post_init__(self) -> None:
        rk, ck = self.style
        turn = pa.struct([(rk, pa.string()), (ck, pa.string())])
        self.schema = pa.schema([(k, pa.list_(turn) if k == self.key else _KINDS[self.kinds[k]]) for k in self.keys])

    @property
    def id_keys(self) -> list[str]:
        """The id fields shapes._source_id reads (a field null in the first records is a string one)."""
        return [k for k in shapes._ID_KEYS if self.kinds.get(k) in ("string", "integer", "null")]


def plan(first: list[dict[str, Any]], shape: str) -> TurnsPlan | str:
    """A plan for a JSON Lines file whose first records are `first`, or why this path does not take it."""
    if shape not in columnar.TURN_SHAPES:
        return f"shape {shape!r} is not a list of turns"
    key = columnar.TURN_SHAPES[shape]
    keys = list(first[0])
    if any(list(rec) != keys for rec in first):
        return "records differ in their keys"
    special = sorted((set(keys) - {key, "system"}) & columnar._SPECIAL_KEYS)
    if special:
        return f"field {special[0]!r} is read by the record path"
    if any(k in columnar._RESERVED or not k for k in keys):
        return "a key is reserved or empty"
    style = columnar._jsonl_turn_style(first, key)
    if style is None:
        return f"{key} is not a list of plain turns"
    kinds: dict[str, str] = {}
    for k in keys:
        if k == key:
            continue
        seen = {_kind(rec[k]) for rec in first} - {"null"}
        if len(seen) > 1 or not seen <= {"string", "integer", "bool"}:
            return f"field {k!r} holds {', '.join(sorted(seen))}: not a plain string, integer or boolean"
        kinds[k] = seen.pop() if seen else "null"
    if kinds.get("system", "string") not in ("string", "null"):
        return "system is not a string"
    meta = [k for k in keys if k not in (key, "system")]
    return TurnsPlan(shape, key, style, keys, kinds, meta)


def _kind(value: Any) -> str:
    """shapes.json_kind, with integers past 64 bits apart (Arrow cannot hold them as int64)."""
    kind = shapes.json_kind(value)
    return "big" if kind == "integer" and not -(1 << 63) <= value < (1 << 63) else kind


# ---- reading blocks of lines -----------------------------------------------------------------------------


def blocks(path: Path, max_line: int, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The file's bytes, decompressed, in blocks that end at a line end (the last one wherever the file
    ends). A line longer than `max_line` gives way (the record path names it)."""
    with readers.open_decompressed(path) as stream:
        tail = b""
        first = True
        while True:
            chunk = stream.read(block_bytes)
            if not chunk:
                if tail:
                    yield tail
                return
            data = tail + chunk if tail else chunk
            if first and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]  # a UTF-8 byte-order mark, as the record path drops it
            first = False
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) > max_line:
                    raise GiveWay("a line is over the length limit")
                tail = data
                continue
            tail = data[cut:]
            yield data[:cut]


def split_lines(data: bytes, max_line: int) -> tuple[bytes, np.ndarray]:
    """(buffer, offsets): the block's non-blank lines, stripped, as one buffer with a b"\\n" after each, and
    the start of each line plus the buffer's end. Copies only a block that has blank lines or spaces at a
    line's ends."""
    if not data.endswith(b"\n"):
        data += b"\n"
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    empty = ends == starts
    clean = not empty.any() and not _ASCII_SPACE[buf[starts]].any() and not _ASCII_SPACE[buf[ends - 1]].any()
    if not clean:
        kept = [s for line in data.split(b"\n") if (s := line.strip())]
        if not kept:
            return b"", np.zeros(1, dtype=np.int64)
        return split_lines(b"\n".join(kept) + b"\n", max_line)
    if int((ends - starts).max()) > max_line:
        raise GiveWay("a line is over the length limit")
    offsets = np.empty(len(starts) + 1, dtype=np.int64)
    offsets[:-1], offsets[-1] = starts, len(data)
    return data, offsets


def raw_lines(data: bytes, offsets: np.ndarray) -> pa.Array:
    """The lines as a string column (without their b"\\n"); not UTF-8 gives way."""
    packed = data.replace(b"\n", b"")  # every b"\n" ends a line (JSON holds none inside a value); memchr-fast
    n = len(offsets) - 1
    new_offsets = (offsets - np.arange(n + 1)).astype(np.int32)
    column = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(new_offsets), pa.py_buffer(packed)])
    try:
        return column.cast(pa.string())  # the cast checks UTF-8
    except pa.ArrowInvalid:
        raise GiveWay("a line is not valid UTF-8") from None


# ---- one block -------------------------------------------------------------------------------------------


@dataclass
class Block:
    """One block's samples as Arrow columns, ready to insert."""

    table: pa.Table
    n_rows: int
    kinds: dict[str, set[str]]
    rest: Any = None  # the file's remaining blocks (a generator)


def parse(p: TurnsPlan, data: bytes, offsets: np.ndarray) -> pa.Table:
    n = len(offsets) - 1
    if b"\\u" in data and columnar._has_lone_surrogate(data):
        raise GiveWay("a line holds a lone surrogate escape")
    options = pj.ParseOptions(explicit_schema=p.schema, unexpected_field_behavior="error")
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=options,
                             read_options=pj.ReadOptions(block_size=_PARSE_BLOCK, use_threads=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise GiveWay(f"a line is not read alike by Arrow ({str(exc)[:120]})") from None
    if table.num_rows != n:
        raise GiveWay("a line holds more or less than one record")
    return table


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def build(p: TurnsPlan, data: bytes, offsets: np.ndarray, first_row: int, max_chars: int) -> Block:
    """The block's samples: source_id, row_idx, messages, text, n_turns, n_chars, n_tokens, the metadata
    fields as they are (the INSERT writes them as JSON), and raw."""
    table = parse(p, data, offsets)
    n = table.num_rows
    turns = _column(table, p.key)
    if turns.null_count:
        raise GiveWay(f"{p.key} is null or missing")
    turns = _unsliced(turns)
    flat = turns.values
    rk, ck = p.style
    if flat.null_count:
        raise GiveWay("a turn is null")
    roles, contents = flat.field(rk), flat.field(ck)
    if roles.null_count or contents.null_count:
        raise GiveWay("a turn's role or content is null")
    at = pc.index_in(roles, value_set=_ROLE_KEYS)
    if at.null_count:
        raise GiveWay("a turn has a role the record path reads (tool, function call, ...)")
    roles = pc.take(_ROLE_VALUES, at)
    list_offsets = turns.offsets.to_numpy().astype(np.int64)
    if "system" in p.keys:
        roles, contents, list_offsets = _with_system(_column(table, "system"), roles, contents, list_offsets)
    lengths = np.diff(list_offsets)
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array(list_offsets.astype(np.int32)), contents), "\n\n")
    n_chars = _sums(pc.utf8_length(contents).to_numpy(zero_copy_only=False), list_offsets)
    if n_chars.max(initial=0) > max_chars:
        raise GiveWay("a sample is over max_chars")
    _check_not_blank(text)
    nulls = [pa.nulls(len(roles), pa.string())] * 4
    struct = pa.StructArray.from_arrays([roles, contents, *nulls], fields=[pa.field(k, t) for k, t in _TURN_FIELDS])
    messages = pa.ListArray.from_arrays(pa.array(list_offsets.astype(np.int32)), struct)
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    source_id = _source_id(p, table, rows)
    columns = {"source_id": source_id, "row_idx": pa.array(rows), "messages": messages, "text": text,
               "n_turns": pa.array(lengths.astype(np.int32)), "n_chars": pa.array(n_chars.astype(np.int32)),
               "n_tokens": pa.array(count_tokens(text).astype(np.int32)), "raw": raw_lines(data, offsets)}
    kinds: dict[str, set[str]] = {}
    for i, name in enumerate(p.meta):
        col = _column(table, name)
        if pa.types.is_string(col.type) and pc.any(pc.match_substring_regex(col, _UPPER_HEX_ESCAPES)).as_py():
            raise GiveWay(f"{name} holds a control character DuckDB escapes in upper case (orjson: lower)")
        columns[f"m{i}"] = col
        kind = "string" if p.kinds[name] == "null" else p.kinds[name]  # a null-only field is read as strings
        kinds[name] = ({kind} if len(col) > col.null_count else set()) | ({"null"} if col.null_count else set())
    table = pa.table(columns)
    # several record batches (zero-copy slices): DuckDB scans an Arrow table a batch per thread
    return Block(pa.Table.from_batches(table.to_batches(max_chunksize=max(1, -(-n // _SCAN_BATCHES)))), n, kinds)


def _unsliced(turns: pa.ListArray) -> pa.ListArray:
    """A list array whose offsets start at 0 and whose values are exactly its items."""
    if turns.offset == 0 and turns.offsets[0].as_py() == 0 and len(turns.values) == turns.offsets[-1].as_py():
        return turns
    return pa.ListArray.from_arrays(pc.subtract(turns.offsets, turns.offsets[0]), turns.flatten())


def _sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """sum(values[offsets[i]:offsets[i+1]]) for each i."""
    cum = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=cum[1:])
    return cum[offsets[1:]] - cum[offsets[:-1]]


def _with_system(system: pa.Array, roles: pa.Array, contents: pa.Array,
                 offsets: np.ndarray) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """shapes._with_system: a non-empty top-level system prompt goes first unless the turns open with one."""
    has = pc.fill_null(pc.not_equal(system, ""), False).to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets)
    role_np = pc.equal(roles, "system").to_numpy(zero_copy_only=False)
    opens = np.zeros(len(lengths), dtype=bool)
    nonempty = lengths > 0
    opens[nonempty] = role_np[offsets[:-1][nonempty]]
    add = has & ~opens
    if not add.any():
        return roles, contents, offsets
    added = np.concatenate([[0], np.cumsum(add)]).astype(np.int64)
    new_offsets = offsets + added
    n_flat = len(roles)
    # each new turn position takes an old turn, or (index >= n_flat) the row's system prompt
    index = np.empty(int(new_offsets[-1]), dtype=np.int64)
    old_pos = np.arange(n_flat) + np.repeat(added[1:], lengths)  # shifted by the prompts added up to and in the row
    index[old_pos] = np.arange(n_flat)
    rows = np.flatnonzero(add)
    index[new_offsets[rows]] = n_flat + np.arange(len(rows))
    all_roles = pa.concat_arrays([roles, pa.array(["system"] * len(rows), pa.string())])
    all_contents = pa.concat_arrays([contents, system.take(pa.array(rows))])
    return all_roles.take(pa.array(index)), all_contents.take(pa.array(index)), new_offsets


def _check_not_blank(text: pa.Array) -> None:
    """shapes._has_text over the joined text: all blank iff empty or all whitespace (str.isspace). Only
    texts that start with whitespace are tested in Python."""
    first = pc.utf8_slice_codeunits(text, 0, 1)
    maybe = pc.or_(pc.equal(first, ""), pc.is_in(first, value_set=_WHITESPACE))
    for value in text.filter(maybe).to_pylist():
        if not value or value.isspace():
            raise GiveWay("a sample has an empty text")


def _source_id(p: TurnsPlan, table: pa.Table, rows: np.ndarray) -> pa.Array:
    """shapes._source_id: the first id field holding a string or an integer, else the row number."""
    picks = [_column(table, k).cast(pa.string()) for k in p.id_keys]
    fallback = pa.array(rows).cast(pa.string())
    if not picks:
        return fallback
    return pc.coalesce(*picks, fallback)


# ---- the INSERT ------------------------------------------------------------------------------------------


def insert_sql(p: TurnsPlan, first_id: int, dataset_id: int) -> str:
    """INSERT of one block (the Arrow relation `assay_turns_block`): sample i of the block gets id
    first_id + its row number. A line whose keys differ from the first record's in set or order raises,
    naming its row."""
    meta = columnar._json_object([(name, f"m{i}") for i, name in enumerate(p.meta)])
    keys = "[" + ", ".join(map(columnar._lit, p.keys)) + "]::VARCHAR[]"
    sample_id = (f"{int(first_id)} + row_idx + (CASE WHEN json_keys(raw) <> {keys} THEN "
                 "error('row ' || row_idx || ' has other keys')::BIGINT ELSE 0 END)")
    return f"""
        INSERT INTO samples
        SELECT {sample_id}, {int(dataset_id)}, source_id, row_idx, messages, NULL, text, n_turns, n_chars,
               n_tokens, {meta}, raw, NULL, NULL
        FROM assay_turns_block
    """


# The raw record is written uncompressed by this path (migration 0009 asked for zstd): measured on 100k
# conversations, zstd on the raw lines cost 2.8 of the INSERT's 5.1 CPU seconds (uncompressed: 1.0) and saved
# 1.3 GB of store per million (the lines are 1.3 GB). Reading is unchanged: compression is per segment and
# transparent, every reader gets the same bytes. The dictionary and FSST methods go too, else DuckDB picks
# them in zstd's place at the same cost.
RAW_UNCOMPRESSED = True
_SLOW_METHODS = "zstd,fsst,dictionary,dict_fsst"


@contextmanager
def _fast_compression(con: Any) -> Iterator[None]:
    """Only light compression while this load writes (restored after, also on failure)."""
    if not RAW_UNCOMPRESSED:
        yield
        return
    with setting(con, "disabled_compression_methods", _SLOW_METHODS):
        yield


def load(con: Any, p: TurnsPlan, path: Path, *, first_id_of: Callable[[int, int], int], dataset_id: int,
         max_chars: int, max_line: int, progress: Callable[[int, int | None], None] | None = None
         ) -> tuple[int, dict[str, set[str]]]:
    """Read and insert every block inside the caller's transaction; returns (rows, metadata kinds). The next
    block is read and built in a second thread while DuckDB inserts this one (both release the GIL)."""
    n = 0
    kinds: dict[str, set[str]] = {name: set() for name in p.meta}
    with ThreadPoolExecutor(max_workers=1) as pool, _fast_compression(con):
        pending = pool.submit(_next_block, p, iter(blocks(path, max_line, BLOCK_BYTES)), 0, max_chars, max_line)
        while True:
            block = pending.result()
            if block is None:
                break
            pending = pool.submit(_next_block, p, block.rest, n + block.n_rows, max_chars, max_line)
            try:
                # a relation, not a registered table: one registered (and unregistered) inside a transaction
                # stays alive until the transaction ends, which held every block in memory (+60 MB a block)
                sql = insert_sql(p, first_id_of(n, block.n_rows) - n, dataset_id)
                con.from_arrow(block.table).query("assay_turns_block", sql)
            except BaseException:
                if not pending.cancel():
                    pending.exception()  # wait for the thread to leave the file before closing it
                block.rest.close()
                raise
            del block.table
            n += block.n_rows
            for name, seen in block.kinds.items():
                kinds[name] |= seen
            if progress:
                progress(n, None)
    return n, kinds


def _next_block(p: TurnsPlan, rest: Iterator[bytes], first_row: int, max_chars: int, max_line: int) -> Block | None:
    """The next block with lines in it, built (None at the end of the file)."""
    for data in rest:
        data, offsets = split_lines(data, max_line)
        if len(offsets) >= 2:
            block = build(p, data, offsets, first_row, max_chars)
            block.rest = rest
            return block
    return None
