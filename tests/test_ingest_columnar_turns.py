"""Lists of turns (OpenAI `messages`, ShareGPT `conversations`) on the columnar path store exactly what the
record path stores; anything richer than plain turns gives way to the record path.

Conversations are built from real shared records (GSM8K questions and answers, Alpaca-GPT4 instructions)
as multi-turn chats with system prompts, written as JSON Lines and as Parquet, and loaded both ways.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.ingest.importer import IngestError, ingest
from core.store.database import Store
from tests.test_ingest_columnar import _jsonl, _load_both_ways


def _conversations(shared: Path, n: int, style: str) -> list[dict]:
    qa = _jsonl(shared / "gsm8k" / "test.jsonl")[:n]
    alpaca = json.loads((shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").read_text())[:n]
    user, bot = ("user", "assistant") if style == "openai" else ("human", "gpt")
    rk, ck = ("role", "content") if style == "openai" else ("from", "value")
    out = []
    for i, (a, b) in enumerate(zip(qa, alpaca, strict=False)):
        turns = [{rk: user, ck: a["question"]}, {rk: bot, ck: a["answer"]}]
        if i % 3:
            turns += [{rk: user, ck: b["instruction"]}, {rk: bot, ck: b["output"]}]
        if i % 5 == 0:
            turns.insert(0, {rk: "system", ck: "You are a careful tutor.\n\nShow your work."})
        rec = {"id": f"c{i}", ("messages" if style == "openai" else "conversations"): turns,
               "source": "gsm8k", "score": i / 7 if i % 4 else None}
        if i % 5 == 1:
            rec["system"] = "Answer briefly." if i % 2 else ""
        out.append(rec)
    return out


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=bool(i % 2)) + "\n" for i, r in enumerate(records))
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("style, suffix", [("openai", ".jsonl"), ("sharegpt", ".jsonl.gz")])
def test_jsonl_turn_lists_both_ways(store: Store, tmp_path: Path, shared: Path, style: str, suffix: str) -> None:
    recs = _conversations(shared, 300, style)
    for r in recs:  # the same keys in every record (a line with other keys goes to the record path)
        r.setdefault("system", None)
    path = _write_jsonl(tmp_path / f"chat{suffix}", recs)
    options, columnar, records = _load_both_ways(store, path)
    assert options["path"] == "columnar", options.get("records_path_reason")  # float scores: not the Arrow path
    assert columnar == records and len(columnar) == 300
    assert {r["n_turns"] for r in columnar} >= {2, 3, 4, 5}
    with_system = next(r for r in columnar if r["source_id"] == "c1")
    assert with_system["messages"][0]["role"] == "system" and with_system["messages"][0]["content"] == "Answer briefly."
    assert columnar[0]["messages"][0]["content"].startswith("You are a careful tutor.")


@pytest.mark.parametrize("style", ["openai", "sharegpt"])
def test_parquet_turn_lists_both_ways(store: Store, tmp_path: Path, shared: Path, style: str) -> None:
    recs = _conversations(shared, 200, style)
    for r in recs:
        r.setdefault("system", None)
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(recs), path)
    options, columnar, records = _load_both_ways(store, path)
    assert options["path"] == "columnar", options.get("records_path_reason")
    assert columnar == records and len(columnar) == 200


@pytest.mark.parametrize("turn, why", [
    ({"role": "tool", "content": "42", "tool_call_id": "call_1"}, "a tool result"),
    ({"role": "assistant", "content": [{"type": "text", "text": "parts"}]}, "content parts"),
    ({"role": "assistant", "content": "w", "weight": 0}, "an extra key in a turn"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
      "function": {"name": "f", "arguments": "{}"}}]}, "a tool call"),
])
def test_richer_turns_use_the_record_path(store: Store, tmp_path: Path, turn: dict, why: str) -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    odd = {"messages": [{"role": "user", "content": "what is 6*7?"}, turn]}
    path = tmp_path / "mixed.jsonl"
    path.write_text((json.dumps(plain) + "\n") * 150 + json.dumps(odd) + "\n")
    try:
        options, columnar, records = _load_both_ways(store, path)
    except IngestError:
        return  # the record path refuses it (with its own message): the columnar path did not load it
    assert options["path"] == "records", why
    assert columnar == records


def test_special_fields_use_the_record_path(store: Store, tmp_path: Path) -> None:
    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "label": True}
    path = tmp_path / "kto.jsonl"
    path.write_text((json.dumps(rec) + "\n") * 5)
    options, columnar, records = _load_both_ways(store, path)
    assert options["path"] == "records" and "label" in options["records_path_reason"]
    assert columnar == records


@pytest.mark.parametrize("line, expected", [
    ('{"messages": []}', "bad.jsonl line 3: field 'messages': empty text"),
    ('{"messages": [{"role": "wizard", "content": "x"}]}', "bad.jsonl line 3: field 'messages[0].role'"),
    ('{"messages": "hello"}', "bad.jsonl line 3: field 'messages'"),
])
def test_bad_turn_lines_get_the_record_paths_message(store: Store, tmp_path: Path, line: str, expected: str) -> None:
    ok = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    path = tmp_path / "bad.jsonl"
    path.write_text(ok * 2 + line + "\n")
    with pytest.raises(IngestError, match=re.escape(expected)):
        ingest(store, path, name="bad")
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 0
