"""The columnar Parquet path stores exactly what the record path stores, and gives way to it on bad input.

Each case writes real shared records (plus edge values) to Parquet, loads the file (columnar path) and the
same records from memory (record path), and compares every stored column of every sample.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.ingest.importer import IngestError, ingest, ingest_records
from core.store.database import Store

SAMPLE_COLUMNS = "source_id, row_idx, messages, rejected, text, n_turns, n_chars, n_tokens, meta, raw"
EDGE_SPACES = ["", " ", "\u00a0\u2028", "\t\n", "x", " lead", "\u3000y"]


def _rows(store: Store, name: str) -> list[dict]:
    with store.connect() as con:
        rel = con.execute(
            f"SELECT {SAMPLE_COLUMNS}, id - min(id) OVER () AS rel_id FROM samples "
            "JOIN datasets USING (dataset_id) WHERE name = ? ORDER BY row_idx", [name])
        cols = [d[0] for d in rel.description]
        rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    for r in rows:
        r["meta"], r["raw"] = json.loads(r["meta"]), json.loads(r["raw"])
        assert r.pop("rel_id") == r["row_idx"]  # ids follow the order of the rows
    return rows


def _dataset(store: Store, name: str) -> dict:
    with store.connect() as con:
        n, n_rec, fields, options, shape = con.execute(
            "SELECT n_samples, n_records, fields, load_options, shape FROM datasets WHERE name = ?", [name]
        ).fetchall()[0]
    return {"n": n, "n_records": n_rec, "fields": json.loads(fields), "options": json.loads(options), "shape": shape}


def _load_both_ways(store: Store, path: Path, **kwargs) -> tuple[dict, list, list]:
    """Load one file through the columnar path (when it takes it) and the record path; check the datasets
    agree; return the first's load options and both datasets' rows."""
    ingest(store, path, name="columnar", **kwargs)
    ingest(store, path, name="records", columnar=False, **kwargs)
    columnar, records = _dataset(store, "columnar"), _dataset(store, "records")
    assert records["options"]["path"] == "records"
    assert (columnar["n"], columnar["n_records"], columnar["fields"], columnar["shape"]) == (
        records["n"], records["n_records"], records["fields"], records["shape"])
    return columnar["options"], _rows(store, "columnar"), _rows(store, "records")


def _both_ways(store: Store, tmp_path: Path, table: pa.Table, *, shape: str | None = None) -> tuple[list, list]:
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    options, columnar, records = _load_both_ways(store, path, shape=shape)
    assert options["path"] == "columnar", options
    return columnar, records


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gsm8k_question_answer(store: Store, tmp_path: Path, shared: Path) -> None:
    recs = _jsonl(shared / "gsm8k" / "test.jsonl")
    table = pa.table({"question": [r["question"] for r in recs], "answer": [r["answer"] for r in recs],
                      "n": list(range(len(recs))), "score": [math.nan if i % 7 == 0 else i / 3 for i in range(len(recs))],
                      "flag": [i % 2 == 0 for i in range(len(recs))], "note": [None] * len(recs)})
    columnar, records = _both_ways(store, tmp_path, table)
    assert len(columnar) == len(recs) and columnar == records
    assert columnar[0]["meta"]["score"] is None and columnar[0]["source_id"] == "0"


def test_alpaca_with_system_and_blank_inputs(store: Store, tmp_path: Path, shared: Path) -> None:
    recs = json.loads((shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").read_text())
    n = len(recs)
    table = pa.table({
        "id": [1000 + i for i in range(n)],  # integer ids become string source ids
        "instruction": [r["instruction"] for r in recs],
        "input": [EDGE_SPACES[i % len(EDGE_SPACES)] if i % 3 else r["input"] for i, r in enumerate(recs)],
        "output": [r["output"] for r in recs],
        "system": [None if i % 4 == 0 else ("" if i % 4 == 1 else "You are terse.") for i in range(n)],
    })
    columnar, records = _both_ways(store, tmp_path, table, shape="alpaca")
    assert columnar == records
    assert {r["n_turns"] for r in columnar} == {2, 3}
    assert columnar[5]["source_id"] == "1005"


def test_dolly_and_text_shapes(store: Store, tmp_path: Path, shared: Path) -> None:
    recs = json.loads((shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").read_text())[:300]
    dolly = pa.table({"instruction": [r["instruction"] for r in recs],
                      "context": [r["input"] or None for r in recs],
                      "response": [r["output"] for r in recs],
                      "category": ["open_qa" if i % 2 else "brainstorming" for i in range(len(recs))]})
    columnar, records = _both_ways(store, tmp_path, dolly)
    assert columnar == records
    texts = [r["output"] + " \u00e9\u4e2d, ok!" for r in recs]
    store2 = Store(tmp_path / "text.duckdb")
    columnar, records = _both_ways(store2, tmp_path, pa.table({"text": texts, "url": [f"u{i}" for i in range(len(texts))]}))
    assert columnar == records and columnar[0]["messages"][0]["role"] == "text"


def test_folder_of_shards_numbers_rows_across_files(store: Store, tmp_path: Path, shared: Path) -> None:
    recs = _jsonl(shared / "gsm8k" / "test.jsonl")[:500]
    folder = tmp_path / "shards"
    folder.mkdir()
    for k, part in enumerate((recs[:200], recs[200:])):
        pq.write_table(pa.table({"question": [r["question"] for r in part], "answer": [r["answer"] for r in part]}),
                       folder / f"part-{k}.parquet")
    ingest(store, folder, name="columnar")
    ingest_records(store, recs, name="records")
    assert _dataset(store, "columnar")["options"]["path"] == "columnar"
    columnar, records = _rows(store, "columnar"), _rows(store, "records")
    assert [r["source_id"] for r in columnar] == [str(i) for i in range(500)]
    for c, r in zip(columnar, records, strict=True):
        assert (c["messages"], c["text"], c["n_tokens"]) == (r["messages"], r["text"], r["n_tokens"])


@pytest.mark.parametrize("problem, expected", [
    ("empty", "bad.parquet row 3: field 'question/answer': empty text"),
    ("null", "bad.parquet row 3: field 'answer': expected a string, got None"),
    ("duplicate", "duplicate id 'q1'"),
])
def test_bad_records_are_reported_by_the_record_path(store: Store, tmp_path: Path, problem: str,
                                                      expected: str) -> None:
    ids = [f"q{i}" for i in range(6)]
    questions, answers = [f"What is {i}+{i}?" for i in range(6)], [str(2 * i) for i in range(6)]
    if problem == "empty":
        questions[3], answers[3] = " ", "\u2028"
    elif problem == "null":
        answers[3] = None
    else:
        ids[4] = "q1"
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ids, "question": questions, "answer": answers}), path)
    with pytest.raises(IngestError, match=re.escape(expected)):
        ingest(store, path, name="bad")
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 0
        assert con.execute("SELECT count(*) FROM datasets").fetchall()[0][0] == 0
    report = ingest(store, path, name="skipped", on_bad="skip")
    assert report.n_skipped == 1 and report.n_samples == 5
    assert _dataset(store, "skipped")["options"]["path"] == "records"


def test_over_long_sample_and_nested_columns_use_the_record_path(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "long.parquet"
    pq.write_table(pa.table({"question": ["q", "x" * 50], "answer": ["a", "b"]}), path)
    with pytest.raises(IngestError, match="row 1: sample is 51 characters long, over the limit of 40"):
        ingest(store, path, name="long", max_chars=40)
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"], "tags": [["x", "y"]]}), nested)
    ingest(store, nested, name="nested")
    options = _dataset(store, "nested")["options"]
    assert options["path"] == "records" and "tags" in options["records_path_reason"]
    assert _rows(store, "nested")[0]["meta"] == {"tags": ["x", "y"]}


# ---- JSON Lines ------------------------------------------------------------------------------------------


def test_jsonl_gsm8k_train_both_ways(store: Store, shared: Path) -> None:
    options, columnar, records = _load_both_ways(store, shared / "gsm8k" / "train.jsonl")
    assert options["path"] == "columnar" and len(columnar) == 7473
    assert columnar == records


def test_jsonl_alpaca_with_edge_values_blank_lines_bom_and_gzip(store: Store, tmp_path: Path, shared: Path) -> None:
    import gzip

    recs = json.loads((shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").read_text())[:400]
    lines = []
    for i, r in enumerate(recs):
        rec = {"id": i - 3, "instruction": r["instruction"] + " \u00e9\u4e2d \"q\" \U0001F600",
               "input": [r["input"], None, "", "\u2028", " x"][i % 5], "output": r["output"],
               "system": [None, "", "Be brief."][i % 3], "score": [1.5, 2, -0.25, 1e-7][i % 4],
               "ok": i % 2 == 0, "note": None if i % 3 else "n"}
        lines.append(json.dumps(rec, ensure_ascii=i % 2 == 0))
    text = "\ufeff" + "\r\n".join(lines[:200]) + "\n\n   \n" + "\n".join(lines[200:]) + "\n"
    path = tmp_path / "alpaca.jsonl.gz"
    path.write_bytes(gzip.compress(text.encode()))
    options, columnar, records = _load_both_ways(store, path)
    assert options["path"] == "columnar", options
    assert columnar == records and len(columnar) == 400
    assert {r["n_turns"] for r in columnar} == {2, 3} and columnar[0]["source_id"] == "-3"


@pytest.mark.parametrize("line, reason", [
    ('{"question": "q", "answer": "a", "tags": ["x"]}', None),    # a list in the metadata
    ('{"answer": "a", "question": "q"}', None),                    # other key order
])
def test_jsonl_rows_the_sql_does_not_cover_use_the_record_path(store: Store, tmp_path: Path, line: str,
                                                                reason: str | None) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n' * 3 + line + "\n")
    options, columnar, records = _load_both_ways(store, path)
    assert options["path"] == "records" and columnar == records
    assert reason is None or reason in options["records_path_reason"]


@pytest.mark.parametrize("line, expected", [
    ('{"question": "q", "answer": ', "bad.jsonl line 3: not valid JSON"),
    ('{"question": " ", "answer": "\\u2028"}', "bad.jsonl line 3: field 'question/answer': empty text"),
    ('{"question": "q", "answer": 7}', "bad.jsonl line 3: field 'answer': expected a string, got int"),
    ('{"question": "q \\ud83d", "answer": "a"}', "bad.jsonl line 3: not valid JSON"),  # a lone surrogate
])
def test_jsonl_bad_lines_get_the_record_paths_message(store: Store, tmp_path: Path, line: str,
                                                      expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n' + line + "\n")
    with pytest.raises(IngestError, match=re.escape(expected)):
        ingest(store, path, name="bad")
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 0


def test_lone_surrogate_escapes_are_told_from_pairs() -> None:
    from core.ingest.columnar import _has_lone_surrogate

    assert not _has_lone_surrogate(rb'{"q": "smile \ud83d\ude00 and \uD83D\uDE00 \u00e9"}')
    for lone in (rb'"\ud83d"', rb'"\ude00"', rb'"\ud83d x \ude00"', rb'"\ud83d\ude00\ude00"', rb'"\ud83d\ud83d"'):
        assert _has_lone_surrogate(lone), lone
