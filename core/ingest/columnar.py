"""The columnar ingest path: flat Parquet and JSON Lines sources normalised in SQL, in one statement.

Most large SFT and pre-training sources hold one string per field (question/answer, instruction/input/
output, instruction/context/response, text). For those, normalising record by record in Python costs far
more than the data needs: DuckDB reads the rows on both cores, builds the turns, flat text, lengths,
metadata and raw record in SQL, and one INSERT writes them (bench/ingest_bench.py measures both paths
on the same file).

- Parquet: the columns are read as they are; every column must be a flat scalar.
- JSON Lines: the lines are first copied, verbatim and numbered, into a Parquet staging file (the raw
  record the record path keeps is the stripped line, so it is kept here too); DuckDB parses each line once
  into a struct of JSON fragments. Every line must hold the same keys in the same order as the first
  records, with scalar values.

The SQL mirrors core/ingest/shapes.py exactly for these shapes (tests load the same files both ways and compare
every stored column, tests/test_ingest_columnar_identical.py byte for byte). Lists of turns are checked
inside the INSERT, where a row that fails raises (ColumnarPlan.single_pass); flat shapes in a pass of
their own. A source that is not flat is not planned at all; a source with any record the
record path would refuse or report (a missing value, an empty text, an over-long sample, a duplicate id,
a malformed line) is handed to the record path, which names the file, row and problem.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import core.ingest.shapes as shapes
from core.store.database import sql_literal as _lit

SHAPES = ("qa", "alpaca", "dolly", "text", "openai", "sharegpt")
TURN_SHAPES = {"openai": "messages", "sharegpt": "conversations"}
# Turn styles the SQL reads: a turn is exactly {role, content} or exactly {from, value}, both strings.
_TURN_STYLES = (("role", "content"), ("from", "value"))
# Only plain chat roles are mapped in SQL; any other role (tool, function_call, observation, ...) is the
# record path's to read, with its structured parts.
_PLAIN_ROLES = {k: v for k, v in shapes._ROLES.items() if v in ("user", "assistant", "system")}
# Top-level fields that some shape reads as turns or as a first-class value: a turns record carrying one
# of them is left to the record path, so that the two paths can never disagree on what it means.
_SPECIAL_KEYS = (frozenset(shapes.MAPPING_KEYS) - set(shapes._ID_KEYS) - {"text"}) | {
    "tools", "functions", "label", "kto_tag", "history", "completion", "chosen", "rejected", "images",
    "videos", "audios", "prompt", "question", "answer", "query", "response", "conversation",
    "chosen_messages", "rejected_messages", "input", "preferred_output", "non_preferred_output"}
_RESERVED = {"file_row_number", "filename", "__row", "__line", "__f"}
# Every character str.isspace() accepts, so "blank" means the same here as in shapes.py.
_WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_WS_SQL = "'" + _WHITESPACE + "'"  # a literal: chr() calls were evaluated per row (4 s per million)
_WS_CODES = ", ".join(str(ord(c)) for c in _WHITESPACE)
_BLANK_LINE = "'\n\n'"
_JSON_KINDS = {"VARCHAR": "string", "BIGINT": "integer", "UBIGINT": "integer", "DOUBLE": "number",
               "BOOLEAN": "bool", None: "null", "NULL": "null"}
# orjson (the record path's parser) refuses lone surrogate escapes; a line holding one is left to it.
# Pairs (an emoji written by json.dumps with ensure_ascii) are fine: DuckDB decodes them alike.
# Control characters DuckDB's JSON writer escapes as \u00XX with upper-case letters (orjson: lower case).
_UPPER_HEX_CONTROLS = "[\\x0b\\x0e\\x0f\\x1a-\\x1f]"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LOW_ESCAPE = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(data: bytes) -> bool:
    """Whether a \\uD800-\\uDFFF escape in `data` is not part of a high-low pair. One literal-prefix scan
    of the buffer (a regex with a look-behind, or one search per line, cost 2-10 s per million lines)."""
    paired_until = 0
    for match in _SURROGATE_ESCAPE.finditer(data):
        if match.start() < paired_until:
            continue  # the low half of a pair already seen
        if match.group()[3:4] in b"89abAB" and _LOW_ESCAPE.match(data, match.end()):
            paired_until = match.end() + 6
            continue
        return True
    return False


_STAGE_CHUNK = 16 * 1024 * 1024


def json_dumps_compact(value: Any) -> str:
    """JSON as DuckDB's json_structure writes it (no spaces)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_key(name: str) -> str:
    """A key in a DuckDB JSON path, quoted."""
    return '"' + name.replace('"', '\\"') + '"'


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _blank(expr: str) -> str:
    """Null, empty or str.isspace(). The trim runs only where the first character is whitespace, and the
    test is a plain OR chain that DuckDB short-circuits (wrapped in coalesce() it cost 2 s per million)."""
    return f"({expr} IS NULL OR {expr} = '' OR (ord({expr}) IN ({_WS_CODES}) AND trim({expr}, {_WS_SQL}) = ''))"


def _blank_in_select(expr: str) -> str:
    """_blank for a SELECT list, where DuckDB put the trim before the first-character test in the AND
    (1 s more per 20k conversations); a CASE keeps the order."""
    return (f"({expr} IS NULL OR {expr} = '' OR "
            f"(CASE WHEN ord({expr}) IN ({_WS_CODES}) THEN trim({expr}, {_WS_SQL}) = '' ELSE false END))")


def _json_object(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "'{}'::JSON"
    return f"json_object({', '.join(f'{_lit(name)}, {expr}' for name, expr in pairs)})"


# ---- how values are read: Parquet columns or fragments of a JSON line ----------------------------------


class _ParquetColumns:
    """Values are the columns themselves; `kinds` is each column's JSON kind from the Parquet schema."""

    def __init__(self, files: list[str], n_rows: list[int], kinds: dict[str, str],
                 turn_style: dict[str, tuple[str, str]] | None = None) -> None:
        self.files, self.n_rows, self.kinds = files, n_rows, kinds
        self.turn_style = turn_style or {}

    def text(self, name: str) -> str:
        return _q(name)

    def is_null(self, name: str) -> str:
        return f"{_q(name)} IS NULL"


    def id_value(self, name: str) -> str | None:
        return f"CAST({_q(name)} AS VARCHAR)" if self.kinds.get(name) in ("string", "integer") else None

    def json_value(self, name: str) -> str:
        """The column as it appears in JSON: NaN and infinities become null, as in the record path."""
        col = _q(name)
        return f"CASE WHEN isfinite({col}) THEN {col} END" if self.kinds[name] == "number" else col

    def raw(self) -> str:
        return _json_object([(name, self.json_value(name)) for name in self.kinds])

    def checks(self, strings: list[str], meta: list[str]) -> list[str]:
        """The schema guarantees types; a metadata string holding a control character that DuckDB's JSON
        writer escapes in upper case (\\u001F, orjson: \\u001f) is left to the record path."""
        return [f"regexp_matches({_q(n)}, {_lit(_UPPER_HEX_CONTROLS)})" for n in meta if self.kinds[n] == "string"]

    def source(self) -> str:
        """The rows with a global row number `__row` (file order, then row order within a file)."""
        files = ", ".join(map(_lit, self.files))
        if len(self.files) == 1:
            return (f"SELECT file_row_number AS __row, * EXCLUDE (file_row_number) "
                    f"FROM read_parquet([{files}], file_row_number = true)")
        offsets, total = [], 0
        for f, n in zip(self.files, self.n_rows, strict=True):
            offsets.append(f"({_lit(f)}, {total})")
            total += n
        return (f"SELECT o.off + p.file_row_number AS __row, p.* EXCLUDE (file_row_number, filename) "
                f"FROM read_parquet([{files}], file_row_number = true, filename = true) p "
                f"JOIN (VALUES {', '.join(offsets)}) o(fname, off) ON p.filename = o.fname")

    def turns(self, name: str, role_sql: Any) -> str:
        rk, ck = self.turn_style[name]
        return f"list_transform({_q(name)}, lambda e: {_turn_expr(role_sql('e.' + _q(rk)), 'e.' + _q(ck))})"

    def turn_checks(self, name: str) -> list[str]:
        """A null turn, a role the SQL does not map, or a null content leave a NULL in the mapped turns
        __m: the record path reports them."""
        return ["list_count(list_transform(__m, lambda t: t.role)) + "
                "list_count(list_transform(__m, lambda t: t.content)) <> 2 * len(__m)"]

    def kinds_sql(self, meta: list[str]) -> list[str]:
        return [f"count({self.json_value(name)})" for name in meta]

    def field_kinds(self, meta: list[str], row: tuple) -> dict[str, set[str]]:
        return {name: {self.kinds[name] if count else "null"} for name, count in zip(meta, row, strict=False)}


class _JsonlFragments:
    """Values are fragments of each line, parsed once per row into the struct `__f`."""

    def __init__(self, staging: str, keys: list[str], turn_style: dict[str, tuple[str, str]] | None = None) -> None:
        self.staging, self.keys = staging, keys
        self.turn_style = turn_style or {}

    def turns(self, name: str, role_sql: Any) -> str:
        """The turns, parsed once with their type (source() reads this key as a list of string structs)."""
        rk, ck = self.turn_style[name]
        return f"list_transform({self._f(name)}, lambda e: {_turn_expr(role_sql('e.' + _q(rk)), 'e.' + _q(ck))})"

    def turn_checks(self, name: str) -> list[str]:
        """A turn that is not exactly {role, content} (or {from, value}) with string values, or not a list:
        the line's JSON structure (one parse, __s) says so. A null value, or a role the SQL does not map,
        leaves a NULL in the mapped turns __m. The record path reads or reports those rows."""
        rk, ck = self.turn_style[name]
        allowed = ", ".join(_lit(json_dumps_compact([{a: "VARCHAR", b: "VARCHAR"}])) for a, b in ((rk, ck), (ck, rk)))
        return [f"CAST(__s -> {_lit('$.' + json_key(name))} AS VARCHAR) NOT IN ({allowed})",
                "list_count(list_transform(__m, lambda t: t.role)) + "
                "list_count(list_transform(__m, lambda t: t.content)) <> 2 * len(__m)"]

    def _f(self, name: str) -> str:
        return f"__f.{_q(name)}"

    def text(self, name: str) -> str:
        return f"({self._f(name)} ->> '$')"

    def is_null(self, name: str) -> str:
        return f"{self._f(name)} IS NULL"  # a JSON null (a missing key fails the key check)

    def id_value(self, name: str) -> str:
        f = self._f(name)
        return (f"CASE json_type({f}) WHEN 'VARCHAR' THEN {f} ->> '$' WHEN 'BIGINT' THEN CAST({f} AS VARCHAR) "
                f"WHEN 'UBIGINT' THEN CAST({f} AS VARCHAR) END")

    def json_value(self, name: str) -> str:
        return self._f(name)

    def raw(self) -> str:
        return "CAST(__line AS JSON)"  # the stripped line, as the record path keeps it

    def checks(self, strings: list[str], meta: list[str]) -> list[str]:
        """Rows the record path would treat differently: other keys or key order, a string field holding
        something else, a nested or non-finite metadata value (or an integer beyond 64 bits)."""
        keys = "[" + ", ".join(map(_lit, self.keys)) + "]"
        # With turns, the keys are read from the line's structure __s (a few bytes) rather than by parsing
        # the line once more; a key written twice, which the structure merges, fails from_json_strict.
        out = [f"json_keys({'__s' if self.turn_style else '__line'}) <> {keys}::VARCHAR[]"]
        out += [f"({self._f(n)} IS NOT NULL AND json_type({self._f(n)}) <> 'VARCHAR')" for n in strings]
        for n in meta:
            f = self._f(n)
            # TRY_CAST: inside the INSERT (single_pass) DuckDB may cast before the json_type test.
            out.append(f"(json_type({f}) IN ('ARRAY', 'OBJECT') OR (json_type({f}) = 'DOUBLE' AND "
                       f"(NOT isfinite(TRY_CAST({f} AS DOUBLE)) OR NOT regexp_matches(CAST({f} AS VARCHAR), '[.eE]'))))")
            # a string holding a control character DuckDB writes as \u001F (orjson: \u001f)
            out.append(f"(json_type({f}) = 'VARCHAR' AND regexp_matches(CAST({f} AS VARCHAR), '\\\\u00[01][A-F]'))")
        return out

    def source(self) -> str:
        types = {k: "JSON" for k in self.keys}
        for key, (rk, ck) in self.turn_style.items():
            types[key] = [{rk: "VARCHAR", ck: "VARCHAR"}]  # parsed once, typed; turn_checks vouch for it
        structure = json_dumps_compact(types)
        shape = ", json_structure(__line) AS __s" if self.turn_style else ""
        # strict: a key written twice (at any depth; orjson keeps the last, from_json the first) or missing
        # raises, and the record path loads the file
        parse = "from_json_strict" if self.turn_style else "from_json"
        return (f"SELECT __row, __line, {parse}(__line, {_lit(structure)}) AS __f{shape} "
                f"FROM read_parquet({_lit(self.staging)})")

    def kinds_sql(self, meta: list[str]) -> list[str]:
        return [f"list(DISTINCT json_type({self._f(n)}))" for n in meta]

    def stored_kinds_sql(self, meta: list[str]) -> str:
        """kinds_sql's row from the loaded samples' meta (a JSON null there is json_type 'NULL')."""
        parts = [f"list(DISTINCT json_type(meta -> {_lit('$.' + json_key(n))}))" for n in meta] or ["0"]
        return f"SELECT {', '.join(parts)} FROM samples WHERE dataset_id = $dataset_id"

    def field_kinds(self, meta: list[str], row: tuple) -> dict[str, set[str]]:
        return {name: {_JSON_KINDS.get(t, "other") for t in types} or {"null"}
                for name, types in zip(meta, row, strict=False)}


# ---- the plan -------------------------------------------------------------------------------------------


@dataclass
class ColumnarPlan:
    """How to load one flat source in SQL."""

    shape: str
    access: Any                      # _ParquetColumns or _JsonlFragments
    meta: list[str]                  # metadata fields, in record order
    contents: list[str]              # SQL of each turn's content (NULL for an absent turn)
    messages: str                    # SQL of the turns list
    required: list[str]              # string fields that must hold a string
    strings: list[str]               # every field read as a string (required and optional)
    source_id: str
    n_rows: int
    turns_list: bool = False         # messages is a list built in SQL (openai / sharegpt), kept as __m

    def _source(self) -> str:
        """The rows, with the turns list computed once as __m where the shape builds it from a list."""
        if not self.turns_list:
            return self.access.source()
        return f"SELECT *, {self.messages} AS __m FROM ({self.access.source()}) src0"

    def _messages(self) -> str:
        return "__m" if self.turns_list else self.messages

    def _n_chars(self) -> str:
        if self.turns_list:
            return "coalesce(list_sum(list_transform(__m, lambda t: length(t.content))), 0)"
        return " + ".join(f"coalesce(length({c}), 0)" for c in self.contents)

    def _text(self) -> str:
        if self.turns_list:  # "\n\n".join(contents), as the record path builds the flat text
            return f"array_to_string(list_transform(__m, lambda t: t.content), {_BLANK_LINE})"
        return f"concat_ws({_BLANK_LINE}, {', '.join(self.contents)})"  # a turn that is absent is NULL

    def _all_blank(self) -> str:
        if self.turns_list:  # the turns are joined by blank lines: all blank iff the flat text is
            return _blank(self._text())
        return " AND ".join(_blank(c) for c in self.contents)

    def _row_problems(self) -> list[str]:
        """What makes a row one the record path must read (besides its text being blank or too long)."""
        problems = [self.access.is_null(c) for c in self.required]
        problems += self.access.checks(self.strings, self.meta)
        if self.turns_list:
            problems += self.access.turn_checks(self.required[0])
        return problems

    @property
    def single_pass(self) -> bool:
        """Lists of turns are checked inside the INSERT (a row that fails raises, and the record path loads
        the file): a pass of its own parsed every line a second time (measured on 200k conversations: the
        check pass took 4 of 17 CPU seconds, inside the INSERT the checks add well under half of that)."""
        return self.turns_list

    def check_sql(self, max_chars: int) -> str:
        """The first row the record path would refuse, report or read differently, or NULL. A pass of its
        own, with the test in WHERE where DuckDB short-circuits it: for flat shapes, inside the INSERT it
        doubled the insert's time, as an aggregate FILTER (sharing a pass with kinds_sql) it took 7x longer."""
        problems = [*self._row_problems(), self._all_blank(), f"{self._n_chars()} > {int(max_chars)}"]
        bad = " OR ".join(f"({p})" for p in problems)
        return f"SELECT min(__row) FROM ({self._source()}) src WHERE {bad}"

    def insert_sql(self, max_chars: int | None = None) -> str:
        """INSERT of every sample; parameters $first_id and $dataset_id. With `max_chars` (single_pass
        plans), a row the record path must read raises a DuckDB error naming it instead."""
        n_chars, text = self._n_chars(), self._text()
        meta = _json_object([(name, self.access.json_value(name)) for name in self.meta])
        sample_id, bad = "$first_id + __row", "false"
        if max_chars is not None:
            bad = " OR ".join(f"({p})" for p in self._row_problems())
            guard = f"__bad OR {_blank_in_select('text')} OR n_chars > {int(max_chars)}"
            sample_id = (f"$first_id + __row + (CASE WHEN {guard} THEN "
                         f"error('row ' || __row || ' needs the record path')::BIGINT ELSE 0 END)")
        return f"""
            INSERT INTO samples
            SELECT {sample_id}, $dataset_id, source_id, __row, messages, NULL, text, len(messages),
                   n_chars, assay_tokens(text), meta, raw, NULL, NULL
            FROM (
                SELECT __row, {self.source_id} AS source_id, {self._messages()} AS messages, {text} AS text,
                       {n_chars} AS n_chars, {meta} AS meta, {self.access.raw()} AS raw, {bad} AS __bad
                FROM ({self._source()}) src
            )
        """

    def stored_kinds_sql(self) -> str | None:
        """kinds_sql read back from the stored metadata (parameter $dataset_id), where the access allows it:
        the stored meta column is small, while kinds_sql parses every line once more."""
        return self.access.stored_kinds_sql(self.meta) if hasattr(self.access, "stored_kinds_sql") else None

    def kinds_sql(self) -> str:
        """One row: what each metadata field holds (see field_kinds)."""
        parts = self.access.kinds_sql(self.meta) or ["0"]
        return f"SELECT {', '.join(parts)} FROM ({self.access.source()}) src"

    def field_kinds(self, row: tuple) -> dict[str, set[str]]:
        """Per metadata field, the JSON kinds of its values (kinds_sql's row), as
        core.ingest.importer._FieldCatalog collects them."""
        return self.access.field_kinds(self.meta, row)


def _plan(shape: str, access: Any, fields: list[str], n_rows: int) -> ColumnarPlan | str:
    built = _shape_sql(shape, access, set(fields))
    if isinstance(built, str):
        return built
    messages, contents, required, strings, used = built
    picks = [v for k in shapes._ID_KEYS if k in fields and (v := access.id_value(k)) is not None]
    source_id = f"coalesce({', '.join([*picks, 'CAST(__row AS VARCHAR)'])})"
    meta = [n for n in fields if n not in used]
    return ColumnarPlan(shape, access, meta, contents, messages, required, strings, source_id, n_rows,
                        turns_list=shape in TURN_SHAPES)


def _turn(role: str, content: str) -> str:
    return _turn_expr(_lit(role), content)


def _turn_expr(role: str, content: str) -> str:
    """One turn struct from SQL expressions for its role and content, in the samples.messages struct
    (migration 0010); turns read in SQL have no tool calls, reasoning or names."""
    return (f"{{'role': {role}, 'content': {content}, 'reasoning': NULL::VARCHAR, 'tool_calls': NULL::JSON, "
            "'tool_call_id': NULL::VARCHAR, 'name': NULL::VARCHAR}")


def _join(prompt: str, extra: str | None) -> str:
    """shapes._join: the extra text follows after a blank line unless it is empty or all whitespace."""
    if extra is None:
        return prompt
    return f"(CASE WHEN {_blank(extra)} THEN {prompt} ELSE {prompt} || {_BLANK_LINE} || {extra} END)"


def _shape_sql(shape: str, access: Any, fields: set[str]) -> tuple[str, list[str], list[str], list[str], set[str]] | str:
    """(messages SQL, contents SQL, required fields, string fields, used fields) for a flat shape, or why not."""
    t = access.text
    if shape == "qa":
        pair = next(((q, a) for q, a in shapes._QA_PAIRS if q in fields and a in fields), None)
        if pair is None:
            return "no question/answer pair"
        q, a = pair
        return (f"[{_turn('user', t(q))}, {_turn('assistant', t(a))}]", [t(q), t(a)], [q, a], [q, a], {q, a})
    if shape == "text":
        key = next((k for k in shapes._TEXT_KEYS if k in fields), None)
        if key is None:
            return "no text field"
        return f"[{_turn('text', t(key))}]", [t(key)], [key], [key], {key}
    if shape == "alpaca":
        if "history" in fields:
            return "an Alpaca history field"
        optional = [k for k in ("input", "system") if k in fields]
        user = _join(t("instruction"), t("input") if "input" in fields else None)
        turns = [_turn("user", user), _turn("assistant", t("output"))]
        contents = [user, t("output")]
        messages = f"[{', '.join(turns)}]"
        if "system" in fields:
            system = f"coalesce({t('system')}, '')"
            messages = (f"(CASE WHEN {system} <> '' THEN [{_turn('system', system)}, {', '.join(turns)}] "
                        f"ELSE {messages} END)")
            contents = [f"(CASE WHEN {system} <> '' THEN {system} END)", *contents]
        required = ["instruction", "output"]
        return messages, contents, required, required + optional, set(shapes._ALPACA_USED)
    if shape == "dolly":
        user = _join(t("instruction"), t("context") if "context" in fields else None)
        required = ["instruction", "response"]
        strings = required + (["context"] if "context" in fields else [])
        return (f"[{_turn('user', user)}, {_turn('assistant', t('response'))}]", [user, t("response")],
                required, strings, set(shapes._DOLLY_USED))
    if shape in TURN_SHAPES:
        return _turns_sql(shape, access, fields)
    return f"shape {shape!r} is not flat"


def _role_sql(role: str) -> str:
    """The mapped role of a raw role string (NULL for a role the SQL does not map: checked beforehand)."""
    cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in _PLAIN_ROLES.items())
    return f"(CASE {role} {cases} END)"


def _turns_sql(shape: str, access: Any, fields: set[str]) -> tuple[str, list[str], list[str], list[str], set[str]] | str:
    """An OpenAI `messages` or ShareGPT `conversations` list of plain {role, content} / {from, value}
    turns, with an optional top-level system prompt put first unless the list opens with one
    (shapes._with_system)."""
    key = TURN_SHAPES[shape]
    special = sorted((fields - {key, "system"}) & _SPECIAL_KEYS)
    if special:
        return f"field {special[0]!r} is read by the record path"
    style = getattr(access, "turn_style", {}).get(key)
    if style is None:
        return f"{key} is not a list of plain turns"
    turns = access.turns(key, _role_sql)
    messages = turns
    strings: list[str] = []  # the turns field is checked by turn_checks
    if "system" in fields:
        system = f"coalesce({access.text('system')}, '')"
        first_is_system = f"(len({turns}) > 0 AND {turns}[1].role = 'system')"
        messages = (f"(CASE WHEN {system} <> '' AND NOT {first_is_system} "
                    f"THEN list_prepend({_turn('system', system)}, {turns}) ELSE {turns} END)")
        strings.append("system")
    return messages, [], [key], strings, {key, "system"}


def _parquet_turn_style(dtype: pa.DataType) -> tuple[str, str] | None:
    """(role key, content key) when a Parquet column is a list of plain {role, content} or {from, value}
    string structs, else None."""
    if not (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)) or not pa.types.is_struct(dtype.value_type):
        return None
    item = dtype.value_type
    names = {item.field(i).name for i in range(item.num_fields)}
    for style in _TURN_STYLES:
        if names == set(style) and all(_kind(item.field(k).type) == "string" for k in style):
            return style
    return None


def _jsonl_turn_style(first: list[dict[str, Any]], key: str) -> tuple[str, str] | None:
    """The turn style of the first records' turns (all alike), else None: the record path reads them."""
    found = {tuple(sorted(t)) for rec in first for t in (rec.get(key) or []) if isinstance(t, dict)}
    for style in _TURN_STYLES:
        if found == {tuple(sorted(style))}:
            return style
    return None


# ---- Parquet --------------------------------------------------------------------------------------------


def _kind(dtype: pa.DataType) -> str | None:
    """The JSON kind of a flat Arrow type, or None for anything nested, binary or temporal."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype):
        return "number"
    if pa.types.is_null(dtype):
        return "null"  # a column with no values at all
    return None


def plan(files: list[Path], shape: str, mapping: dict[str, str] | None) -> ColumnarPlan | str:
    """A plan for loading Parquet `files` in SQL, or the reason the record path must load them instead."""
    if mapping:
        return "a column mapping is given"
    if shape not in SHAPES:
        return f"shape {shape!r} is not flat"
    schema, n_rows = None, []
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError):
            return f"{f.name} is not a readable Parquet file"
        if schema is None:
            schema = meta.schema.to_arrow_schema()
        elif not meta.schema.to_arrow_schema().equals(schema):
            return f"{f.name} has a different schema from {files[0].name}"
        n_rows.append(meta.num_rows)
    if schema is None or sum(n_rows) == 0:
        return "no rows"
    kinds: dict[str, str] = {}
    turn_style: dict[str, tuple[str, str]] = {}
    for fld in schema:
        kind = _kind(fld.type)
        if shape in TURN_SHAPES and fld.name == TURN_SHAPES[shape] and (style := _parquet_turn_style(fld.type)):
            turn_style[fld.name], kind = style, "turns"
        if kind is None:
            return f"column {fld.name!r} has type {fld.type}, not a flat scalar"
        if fld.name in _RESERVED or fld.name == "":
            return f"column name {fld.name!r} is reserved"
        kinds[fld.name] = kind
    access = _ParquetColumns([str(f) for f in files], n_rows, kinds, turn_style)
    built = _plan(shape, access, list(kinds), sum(n_rows))
    wrong = [n for n in built.strings if kinds[n] != "string"] if isinstance(built, ColumnarPlan) else []
    return f"column {wrong[0]!r} is {kinds[wrong[0]]}, not string" if wrong else built


# ---- JSON Lines -----------------------------------------------------------------------------------------


def stage_jsonl(path: Path, staging: Path, progress: Any = None, *, max_line: int | None = None) -> int | str:
    """Copy the non-blank lines of a JSON Lines file (decompressed as its name says), stripped and
    numbered in file order, into a Parquet file; returns how many, or why the record path must read it
    (not UTF-8, a surrogate escape, a corrupt stream). Linear in the file (readers.line_batches); a line
    longer than `max_line` bytes raises readers.LineTooLongError naming it."""
    import core.ingest.readers as readers

    n = 0
    schema = pa.schema([("__row", pa.int64()), ("__line", pa.string())])
    limit = readers.DEFAULT_MAX_LINE_BYTES if max_line is None else max_line
    # no statistics: nothing reads them, and min/max over the long lines cost a third of the write
    options = {"compression": "none", "write_statistics": False}
    try:
        with readers.open_decompressed(path) as stream, pq.ParquetWriter(staging, schema, **options) as writer:
            for lines in readers.line_batches(stream, path, compression=readers.compression_of(path),
                                              max_line=limit, chunk_size=_STAGE_CHUNK):
                if n == 0 and lines and lines[0].startswith(b"\xef\xbb\xbf"):
                    lines[0] = lines[0][3:]  # a UTF-8 byte-order mark, as the record path drops it
                kept = [s for line in lines if (s := line.strip())]
                data = b"\n".join(kept)
                if b"\\u" in data and _has_lone_surrogate(data):
                    return "a line holds a lone surrogate escape"
                try:
                    column = pa.array(kept, pa.binary()).cast(pa.string())  # the cast checks UTF-8
                except pa.ArrowInvalid:
                    return "a line is not valid UTF-8"
                writer.write_table(pa.table({"__row": pa.array(range(n, n + len(kept)), pa.int64()),
                                             "__line": column}, schema=schema))
                n += len(kept)
                if progress:
                    progress(n, None)
    except readers.LineTooLongError:
        raise
    except (OSError, EOFError, readers.FormatError) as exc:
        return f"the file could not be read here ({exc})"
    return n


def plan_jsonl(staging: Path, first: list[dict[str, Any]], shape: str, n_rows: int) -> ColumnarPlan | str:
    """A plan for the staged lines of a JSON Lines file whose first records are `first`, or why not."""
    if shape not in SHAPES:
        return f"shape {shape!r} is not flat"
    keys = list(first[0])
    if any(list(rec) != keys for rec in first):
        return "records differ in their keys"
    if any(k in _RESERVED or not k or '"' in k or "\\" in k for k in keys):
        return "a key is reserved or holds a quote"
    turn_style = {}
    if shape in TURN_SHAPES and (style := _jsonl_turn_style(first, TURN_SHAPES[shape])):
        turn_style[TURN_SHAPES[shape]] = style
    return _plan(shape, _JsonlFragments(str(staging), keys, turn_style), keys, n_rows)


def register_udfs(con: Any) -> None:
    """The token estimate as a vectorised function the INSERT calls (see core/ingest/tokens.py)."""
    from core.ingest.tokens import count_tokens

    def tokens(column: pa.Array | pa.ChunkedArray) -> pa.Array:
        return pa.array(count_tokens(column), pa.int32())

    con.create_function("assay_tokens", tokens, ["VARCHAR"], "INTEGER", type="arrow", side_effects=False)


def unregister_udfs(con: Any) -> None:
    try:
        con.remove_function("assay_tokens")
    except Exception:  # noqa: BLE001 - never registered on this connection
        pass
