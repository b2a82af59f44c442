"""The columnar path stores byte-identical rows to the record path: every samples column (JSON compared as
stored text, not parsed), the dataset's counts and field accounting, and the same error for a bad file.

Files: every real fine-tuning file in ../shared/real-formats, each also rewritten as JSON Lines (the
columnar path reads JSON Lines and Parquet), and generated conversations built from the shared GSM8K
records with tool calls, reasoning, null content, system prompts, escapes and bad lines among plain turns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.ingest.importer import IngestError, ingest
from core.store.database import Store
from tests.test_ingest_columnar import _jsonl
from tests.test_real_formats import REAL

COLUMNS = ("source_id, row_idx, messages, rejected, text, n_turns, n_chars, n_tokens, CAST(meta AS VARCHAR), "
           "CAST(raw AS VARCHAR), CAST(tools AS VARCHAR), kto_label, id - min(id) OVER () AS rel_id")


def _stored(store: Store, name: str) -> tuple[list[tuple], tuple, dict[str, Any]]:
    """Every stored row (JSON as its stored text), the dataset's counts and fields, and its load options."""
    with store.connect() as con:
        rows = con.execute(f"SELECT {COLUMNS} FROM samples JOIN datasets USING (dataset_id) WHERE name = ? "
                           "ORDER BY row_idx", [name]).fetchall()
        dataset = con.execute("SELECT n_samples, n_records, n_skipped, CAST(fields AS VARCHAR), shape, "
                              "CAST(load_options AS VARCHAR) FROM datasets WHERE name = ?", [name]).fetchall()[0]
    options = json.loads(dataset[-1])
    return rows, dataset[:-1], options


def _load(store: Store, path: Path, name: str, columnar: bool, **kwargs: Any) -> str | None:
    try:
        ingest(store, path, name=name, columnar=columnar, **kwargs)
    except IngestError as exc:
        return str(exc)
    return None


def _identical(store: Store, path: Path, **kwargs: Any) -> str | None:
    """Load `path` both ways and check they agree byte for byte; returns which path the first took (None
    when both refused it with the same message)."""
    with store.connect() as con:
        con.execute("DELETE FROM samples")
        con.execute("DELETE FROM datasets")
    fast_error = _load(store, path, "fast", True, **kwargs)
    slow_error = _load(store, path, "slow", False, **kwargs)
    assert fast_error == slow_error
    if fast_error is not None:
        return None
    fast, fast_dataset, fast_options = _stored(store, "fast")
    slow, slow_dataset, slow_options = _stored(store, "slow")
    assert fast_dataset == slow_dataset
    assert fast == slow
    for options in (fast_options, slow_options):
        options.pop("records_path_reason", None)
        options.pop("arrow_path_reason", None)
    path_taken = fast_options.pop("path")
    slow_options.pop("path")
    assert fast_options == slow_options
    return path_taken


def _as_jsonl(path: Path, out: Path) -> Path:
    """The records of a .json or .jsonl file, one compact line each (ensure_ascii on every other line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        records = data if isinstance(data, list) else next(v for v in data.values() if isinstance(v, list))
    out.write_text("".join(json.dumps(r, ensure_ascii=bool(i % 2)) + "\n" for i, r in enumerate(records)),
                   encoding="utf-8")
    return out


REAL_FILES = sorted(p.name for p in REAL.glob("*.json*") if p.name != "expected.json") if REAL.is_dir() else []


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_format_files_store_identical_rows(store: Store, tmp_path: Path, name: str) -> None:
    _identical(store, REAL / name)
    _identical(store, _as_jsonl(REAL / name, tmp_path / (Path(name).stem + ".lines.jsonl")))


def _turns(shared: Path) -> list[tuple[str, str]]:
    return [(r["question"], r["answer"]) for r in _jsonl(shared / "gsm8k" / "test.jsonl")[:120]]


def _plain(pairs: list[tuple[str, str]], n: int, style: str) -> list[dict[str, Any]]:
    rk, ck, user, bot = ("role", "content", "user", "assistant") if style == "openai" else ("from", "value", "human", "gpt")
    out = []
    for i in range(n):
        q, a = pairs[i % len(pairs)]
        turns = [{rk: user, ck: q + ("\u00e9\U0001f600 \"quoted\" \\ back" if i % 7 == 0 else "")}, {rk: bot, ck: a}]
        if i % 3 == 0:
            turns.insert(0, {rk: "system", ck: "  Be exact.\n"})
        rec = {"id": f"g{i}" if i % 11 else i, "messages" if style == "openai" else "conversations": turns,
               "source": "gsm8k", "score": [None, 1, 2.5, True, "x"][i % 5]}
        out.append(rec)
    return out


def _write(path: Path, records: list[Any], extra_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r, ensure_ascii=bool(i % 2)) for i, r in enumerate(records)]
    for at, line in sorted((extra_lines or {}).items(), reverse=True):
        lines.insert(at, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("style", ["openai", "sharegpt"])
def test_plain_generated_turns_take_the_fast_path_identically(store: Store, tmp_path: Path, shared: Path,
                                                             style: str) -> None:
    path = _write(tmp_path / "plain.jsonl", _plain(_turns(shared), 400, style), {100: "", 250: "   "})
    assert _identical(store, path) == "columnar"


RICH = [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}},
        {"id": "call_2", "type": "function", "function": {"name": "mul", "arguments": "{\"a\": 3}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "3"},
    {"role": "assistant", "content": [{"type": "reasoning", "text": "think first"}, {"type": "text", "text": "3"}]},
    {"role": "assistant", "content": None},
    {"role": "user", "content": 5},
    {"role": "assistant", "content": "ok", "name": "bot"},
    '{"role": "user", "role": "assistant", "content": "twice"}',
]


@pytest.mark.parametrize("rich", RICH, ids=["tool_calls", "tool_result", "reasoning", "null_content",
                                            "number_content", "named_turn", "key_twice"])
def test_rich_turns_among_plain_ones_store_identically(store: Store, tmp_path: Path, shared: Path,
                                                       rich: dict[str, Any] | str) -> None:
    records = _plain(_turns(shared), 300, "openai")
    records[200]["messages"].append({"role": "user", "content": "@"} if isinstance(rich, str) else rich)
    path = _write(tmp_path / "rich.jsonl", records)
    if isinstance(rich, str):  # JSON that a dict cannot hold: written into the line as it stands
        path.write_text(path.read_text(encoding="utf-8").replace('{"role": "user", "content": "@"}', rich),
                        encoding="utf-8")
    assert _identical(store, path) in ("records", None)
    assert _identical(store, path, on_bad="skip") in ("records", None)


@pytest.mark.parametrize("bad", ['{"id": "x", "messages": [', "not json", "[1, 2]",
                                 '{"id": "d", "id": "e", "messages": [{"role": "user", "content": "q"}], '
                                 '"source": "s", "score": 1}',
                                 '{"id": "k", "source": "s", "messages": [{"role": "user", "content": "q"}], "score": 1}'],
                         ids=["truncated", "not_json", "not_object", "duplicate_key", "key_order"])
def test_bad_lines_give_the_same_error_or_skips(store: Store, tmp_path: Path, shared: Path, bad: str) -> None:
    path = _write(tmp_path / "bad.jsonl", _plain(_turns(shared), 300, "openai"), {150: bad})
    assert _identical(store, path) in ("records", None)
    assert _identical(store, path, on_bad="skip") in ("records", None)


# ---- the streaming Arrow path for lists of turns (core/ingest/arrow_turns.py) ------------------------------


def _arrow_records(pairs: list[tuple[str, str]], n: int, style: str) -> list[dict[str, Any]]:
    """Plain conversations with a top-level system field (null, empty or a prompt) and string, integer and
    boolean metadata: every line the same keys, as the Arrow path takes them."""
    rk, ck, user, bot = ("role", "content", "user", "assistant") if style == "openai" else ("from", "value", "human", "gpt")
    out = []
    for i in range(n):
        q, a = pairs[i % len(pairs)]
        turns = [{rk: user, ck: q + ("\u00e9\U0001f600 \"quoted\" \\ back\t\u2028" if i % 7 == 0 else "")},
                 {rk: bot, ck: a}]
        if i % 4 == 1:
            turns += [{rk: user, ck: "  \n"}, {rk: bot, ck: ""}]  # blank turns in a sample that has text
        if i % 3 == 0:
            turns.insert(0, {rk: "system", ck: "  Be exact.\n"})
        out.append({"id": f"g{i}", "system": [None, "", "Answer briefly.", " "][i % 4],
                    "messages" if style == "openai" else "conversations": turns,
                    "source": "gsm8k \u4e2d", "n": i - 5, "ok": i % 2 == 0, "note": None})
    return out


@pytest.mark.parametrize("style, suffix", [("openai", ".jsonl"), ("sharegpt", ".jsonl.gz")])
def test_turn_lists_take_the_arrow_path_identically(store: Store, tmp_path: Path, shared: Path,
                                                    monkeypatch: pytest.MonkeyPatch, style: str, suffix: str) -> None:
    import gzip

    import core.ingest.arrow_turns as arrow_turns

    monkeypatch.setattr(arrow_turns, "BLOCK_BYTES", 8192)  # many blocks: ids and row numbers run on across them
    lines = [json.dumps(r, ensure_ascii=bool(i % 2)) for i, r in enumerate(_arrow_records(_turns(shared), 300, style))]
    text = "\ufeff" + "\r\n".join(lines[:100]) + "\n\n \t\n" + "\n".join(lines[100:200]) + "\n  " + \
        "\n".join(lines[200:])  # a byte-order mark, CRLF, blank lines, spaces, no final newline
    path = tmp_path / f"chat{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    assert _identical(store, path) == "arrow"


def test_real_turn_files_take_the_arrow_path(store: Store, tmp_path: Path) -> None:
    """The list-of-turns families among the real files (OpenAI's cookbook, torchtune's chat file, FastChat's
    conversations as JSON Lines) load through the Arrow path, byte for byte as the record path loads them."""
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent")
    taken = {name: _identical(store, _as_jsonl(REAL / name, tmp_path / (Path(name).stem + ".lines.jsonl")))
             for name in REAL_FILES}
    arrow = sorted(name for name, path in taken.items() if path == "arrow")
    assert {"openai_cookbook_toy_chat_fine_tuning.jsonl", "torchtune_chat_tiny.json"} <= set(arrow), taken


GIVE_WAY = {
    "null_meta": lambda r: r.update(source=None),                      # null, where the first lines hold a string
    "missing_key": lambda r: r.pop("source"),
    "key_order": lambda r: r.update(source=r.pop("id")) or r.update(id="k"),
    "extra_key": lambda r: r.update(extra=1),
    "tool_role": lambda r: r["messages"].append({"role": "tool", "content": "3"}),
    "named_turn": lambda r: r["messages"][0].update(name="bob"),
    "number_content": lambda r: r["messages"][0].update(content=5),
    "null_turn": lambda r: r["messages"].append(None),
    "empty_text": lambda r: r.update(system=None, messages=[{"role": "user", "content": " \u3000"}]),
    "no_turns": lambda r: r.update(system=None, messages=[]),
    "duplicate_id": lambda r: r.update(id="g3"),
    "int_id": lambda r: r.update(id=7),
    "float_meta": lambda r: r.update(n=2.5),
    "control_char_meta": lambda r: r.update(source="p\u001fq"),  # DuckDB writes \u001F, orjson \u001f
}


@pytest.mark.parametrize("change", sorted(GIVE_WAY))
def test_lines_the_arrow_path_cannot_take_give_way(store: Store, tmp_path: Path, shared: Path, change: str) -> None:
    records = _arrow_records(_turns(shared), 200, "openai")
    GIVE_WAY[change](records[150])
    path = _write(tmp_path / "give_way.jsonl", records)
    allowed = ("columnar", "records", None) + (("arrow",) if change == "null_meta" else ())  # a null is a null
    assert _identical(store, path) in allowed
    assert _identical(store, path, on_bad="skip") in allowed


@pytest.mark.parametrize("line", [b'{"id": "x", "messages": [', b"[1, 2]", b'{"id": "a\\ud800"}', b"\xff\xfe{}",
                                  b'{"id": "s1", "system": null, "messages": [{"role": "user", "content": "q"}], '
                                  b'"source": "s", "n": 1, "ok": true, "note": null} {"id": "s2"}'],
                         ids=["truncated", "not_object", "lone_surrogate", "not_utf8", "two_records"])
def test_unreadable_lines_give_way_to_the_named_error(store: Store, tmp_path: Path, shared: Path, line: bytes) -> None:
    path = _write(tmp_path / "bad.jsonl", _arrow_records(_turns(shared), 200, "openai"))
    data = path.read_bytes().split(b"\n")
    data.insert(120, line)
    path.write_bytes(b"\n".join(data))
    assert _identical(store, path) in ("columnar", "records", None)
    assert _identical(store, path, on_bad="skip") in ("columnar", "records", None)


def test_ids_null_in_the_first_records_are_still_read(store: Store, tmp_path: Path, shared: Path) -> None:
    records = _arrow_records(_turns(shared), 300, "openai")
    for r in records[:150]:
        r["id"] = None
    assert _identical(store, _write(tmp_path / "late_ids.jsonl", records)) == "arrow"


def test_over_long_sample_gives_way(store: Store, tmp_path: Path, shared: Path) -> None:
    path = _write(tmp_path / "long.jsonl", _arrow_records(_turns(shared), 200, "openai"))
    assert _identical(store, path, max_chars=600) in ("columnar", "records", None)


def test_control_characters_in_parquet_metadata_store_identically(store: Store, tmp_path: Path, shared: Path) -> None:
    """DuckDB's JSON writer escapes U+001F as \\u001F, orjson as \\u001f: such a row goes to the record path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": q, "answer": a, "note": "p\u001fq" if i == 7 else "n\u0001"} for i, (q, a) in
            enumerate(_turns(shared)[:40])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ctl.parquet")
    assert _identical(store, tmp_path / "ctl.parquet") == "records"
