"""Ingest end to end: real files into a real store, bad input refused whole, killed loads leave nothing."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import zstandard

from core.cli.main import main as cli_main
from core.ingest.demo import DEMO, load_demo
from core.ingest.importer import IngestError, drop_dataset, ingest, ingest_records
from core.ingest.tokens import estimate_tokens
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _samples(store: Store, name: str) -> list[dict]:
    info = store.dataset(name)
    with store.connect() as con:
        cur = con.execute(
            "SELECT source_id, row_idx, messages, rejected, text, n_turns, n_chars, n_tokens, meta, raw "
            "FROM samples WHERE dataset_id = ? ORDER BY row_idx", [info.dataset_id])
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def test_gsm8k_train_is_loaded_whole(store: Store, shared: Path) -> None:
    source = shared / "gsm8k" / "train.jsonl"
    lines = [json.loads(x) for x in source.read_text().splitlines() if x.strip()]
    report = ingest(store, source, name="gsm8k-train", license="MIT")
    assert (report.n_records, report.n_samples, report.n_skipped, report.shape) == (len(lines), len(lines), 0, "qa")
    rows = _samples(store, "gsm8k-train")
    first = rows[0]
    assert [t["role"] for t in first["messages"]] == ["user", "assistant"]
    assert first["messages"][0]["content"] == lines[0]["question"]
    assert json.loads(first["raw"]) == lines[0]  # the raw record is kept whole
    assert first["n_chars"] == len(lines[0]["question"]) + len(lines[0]["answer"])
    assert first["n_tokens"] == estimate_tokens(lines[0]["question"]) + estimate_tokens(lines[0]["answer"])
    assert first["text"] == lines[0]["question"] + "\n\n" + lines[0]["answer"]
    info = store.dataset("gsm8k-train")
    assert (info.license, info.synthetic, info.is_eval, info.format) == ("MIT", False, False, "jsonl")
    assert info.load_options["token_method"] and info.loaded_at
    runs = store.runs("gsm8k-train")
    assert runs["kind"].tolist() == ["ingest"] and runs["status"].tolist() == ["finished"]


def test_every_compressed_and_columnar_format_gives_the_same_samples(store: Store, tmp_path: Path,
                                                                     shared: Path) -> None:
    records = [json.loads(x) for x in (shared / "gsm8k" / "test.jsonl").read_text().splitlines()[:300]]
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    (tmp_path / "a.json").write_text(json.dumps({"version": 1, "data": records}))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    pacsv.write_csv(pa.Table.from_pylist(records), tmp_path / "a.csv")
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        _write_jsonl(shards / f"part-{i}.jsonl", records[i * 100:(i + 1) * 100])
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "saved"))
    expected = None
    for name in ("a.jsonl.gz", "a.jsonl.zst", "a.json", "a.parquet", "a.csv", "shards", "saved"):
        ingest(store, tmp_path / name, name=name)
        got = [(r["messages"], r["n_tokens"]) for r in _samples(store, name)]
        expected = expected or got
        assert got == expected, name
    assert len(expected) == 300


def test_demo_loads_every_dataset_with_its_licence(store: Store, shared: Path) -> None:
    reports = load_demo(store, shared)
    assert {r.dataset for r in reports} == {d.name for d in DEMO}
    table = store.datasets().set_index("name")
    assert table.loc["alpaca-gpt4-demo-1k", "license"] == "CC-BY-NC-4.0"
    assert bool(table.loc["alpaca-gpt4-demo-1k", "synthetic"])
    assert bool(table.loc["gsm8k-test", "is_eval"]) and bool(table.loc["mt-bench", "is_eval"])
    assert table.loc["oasst-sample", "shape"] == "oasst"
    assert load_demo(store, shared) == []  # not loaded twice into a non-empty store
    hh = _samples(store, "hh-rlhf-harmless-test")[0]
    assert len(hh["rejected"]) >= 2 and hh["rejected"][0]["role"] == "user"
    fields = {f["name"] for f in store.dataset("hate-offensive-crowd").fields}
    assert {"class", "hate_speech", "offensive_language", "neither"} <= fields


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"question": "q", "answer": "a"}\n{"question": "q2", "answer": \n', r"bad\.jsonl line 2: .*JSON"),
        (b'{"question": "caf\xe9", "answer": "a"}\n', r"bad\.jsonl line 1: .*UTF-8"),
        (b'{"question": "q", "answer": "a"}\n{"question": "   ", "answer": ""}\n', r"bad\.jsonl line 2: .*empty"),
        (b'{"question": "q", "answer": "a"}\n' * 20 + b'{"question": "q"}\n', r"bad\.jsonl line 21: .*'answer'"),
        (b'{"question": "q", "answer": "a"}\n{"question": "q", "answer": 5}\n', r"bad\.jsonl line 2: .*'answer'.*string"),
        (b'{"foo": 1, "bar": 2}\n', r"bad\.jsonl: .*shape"),
        (b"PAR1\x00\x01binary junk", r"bad\.jsonl.*"),
    ],
    ids=["broken-json", "wrong-encoding", "empty-text", "missing-field", "wrong-type", "unknown-shape", "binary"],
)
def test_bad_input_is_refused_whole_with_file_and_line(store: Store, tmp_path: Path, content: bytes,
                                                       message: str) -> None:
    ingest(store, _write_jsonl(tmp_path / "good.jsonl", [{"question": "kept", "answer": "yes"}]), name="before")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    with pytest.raises(IngestError, match=message):
        ingest(store, bad, name="bad")
    assert store.dataset_names() == ["before"]  # nothing written, nothing lost
    assert store.query_df("SELECT count(*) AS n FROM samples")["n"][0] == 1


def test_skip_mode_loads_the_rest_and_names_what_it_skipped(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "mixed.jsonl"
    bad.write_bytes(b'{"question": "q0", "answer": "a"}\nnot json\n{"question": "", "answer": ""}\n'
                    b'{"question": "q3", "answer": "a"}\n')
    report = ingest(store, bad, name="mixed", on_bad="skip")
    assert (report.n_samples, report.n_skipped) == (2, 2)
    assert [s["locator"] for s in report.skipped] == ["mixed.jsonl line 2", "mixed.jsonl line 3"]
    info = store.dataset("mixed")  # recorded in the import transaction itself, not patched afterwards
    assert (info.n_skipped, info.n_records, report.n_records) == (2, 4, 4)


def test_a_too_long_sample_is_refused_but_a_1mb_sample_loads(store: Store, tmp_path: Path) -> None:
    big = "word " * 200_000  # 1 MB
    ingest(store, _write_jsonl(tmp_path / "ok.jsonl", [{"question": big, "answer": "a"}]), name="ok")
    assert store.dataset("ok").n_samples == 1
    huge = _write_jsonl(tmp_path / "huge.jsonl", [{"question": "x" * 5_000_000, "answer": "a"}])
    with pytest.raises(IngestError, match=r"huge\.jsonl line 1: sample is 5,000,001 characters.*limit"):
        ingest(store, huge, name="huge")
    assert ingest(store, huge, name="huge", max_chars=6_000_000).n_samples == 1


def test_duplicate_ids_refused_or_first_kept(store: Store, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dup.jsonl", [
        {"id": "a", "question": "q1", "answer": "x"}, {"id": "b", "question": "q2", "answer": "x"},
        {"id": "a", "question": "q3", "answer": "x"}])
    with pytest.raises(IngestError, match=r"duplicate id 'a'.*dup\.jsonl line 1, dup\.jsonl line 3"):
        ingest(store, path, name="dup")
    assert store.dataset_names() == []
    report = ingest(store, path, name="dup", on_bad="skip")
    assert report.n_samples == 2 and report.n_skipped == 1
    rows = _samples(store, "dup")
    assert [(r["source_id"], r["row_idx"]) for r in rows] == [("a", 0), ("b", 1)]


def test_file_that_is_not_what_its_extension_says(store: Store, tmp_path: Path) -> None:
    fake = tmp_path / "data.parquet"
    fake.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(IngestError, match=r"data\.parquet.*not a Parquet file"):
        ingest(store, fake, name="fake")


def test_existing_name_and_missing_file(store: Store, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "answer": "a"}])
    ingest(store, path, name="a")
    with pytest.raises(IngestError, match="already exists"):
        ingest(store, path, name="a")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        ingest(store, tmp_path / "nope.jsonl", name="b")


def test_mapping_and_records_in_memory(store: Store) -> None:
    report = ingest_records(store, [{"tweet": "hello there", "class": 2}, {"tweet": "bye", "class": 1}],
                            name="tweets", mapping={"text": "tweet"})
    assert report.shape == "mapped"
    rows = _samples(store, "tweets")
    assert rows[0]["messages"] == [{"role": "text", "content": "hello there", "reasoning": None, "tool_calls": None,
                                    "tool_call_id": None, "name": None}]  # the turn struct of migration 0010
    assert rows[0]["text"] == "hello there" and json.loads(rows[1]["meta"])["class"] == 1
    assert drop_dataset(store, "tweets") == 2 and store.dataset_names() == []


def test_killed_load_leaves_no_half_dataset(tmp_path: Path, shared: Path) -> None:
    """SIGKILL in the middle of a long load: the store opens and holds no trace of the dataset."""
    db = tmp_path / "kill.duckdb"
    big = tmp_path / "big.jsonl"
    lines = (shared / "gsm8k" / "train.jsonl").read_text().splitlines()
    with big.open("w") as out:
        for i in range(200_000):
            rec = json.loads(lines[i % len(lines)])
            out.write(json.dumps({"id": i, **rec}) + "\n")
    store = Store(db)
    ingest_records(store, [{"question": "kept", "answer": "yes"}], name="before")
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from core.store.database import Store; "
            f"from core.ingest.importer import ingest; "
            f"ingest(Store({str(db)!r}), {str(big)!r}, name='big', progress=lambda d, t: print(d, flush=True))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert int(proc.stdout.readline()) > 0  # it is reading
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store.dataset_names() == ["before"]
    assert store.query_df("SELECT count(*) AS n FROM samples")["n"][0] == 1
    assert store.runs()["kind"].tolist() == ["ingest"]
    # the next load cleans the dead process's staging file and works
    ingest_records(store, [{"question": "q", "answer": "a"}], name="after")
    assert list((db.parent / ".assay-staging").glob("*.parquet")) == []


def test_cli_ingest_datasets_and_json(tmp_path: Path, capsys: pytest.CaptureFixture, shared: Path) -> None:
    db = str(tmp_path / "cli.duckdb")
    source = str(shared / "mt-bench" / "mt_bench_question.jsonl")
    assert cli_main(["--db", db, "ingest", source, "--name", "mt", "--license", "Apache-2.0", "--eval", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_samples"] == 80 and out["shape"] == "turns"
    assert cli_main(["--db", db, "ingest", str(tmp_path / "missing.jsonl"), "--name", "x"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert cli_main(["--db", db, "ingest", source, "--name", "m2", "--map", "oops"]) == 2
    assert "KEY=COLUMN" in capsys.readouterr().err


def test_dropping_a_dataset_leaves_no_orphans(store: Store, shared: Path) -> None:
    from core.browse.selections import exclude, save_selection
    from core.tags.results import rows_frame, write_tags

    ingest(store, shared / "mt-bench" / "mt_bench_question.jsonl", name="mt")
    ingest(store, shared / "gsm8k" / "test.jsonl", name="gsm")
    with store.connect() as con:
        mt_ids = [i for (i,) in con.execute(
            "SELECT id FROM samples JOIN datasets USING (dataset_id) WHERE name = 'mt'").fetchall()]
    save_selection(store, "some", mt_ids[:5], origin="test")
    exclude(store, mt_ids[:2], reason="test", origin="test")
    run_id = store.start_run("tag", params={})
    write_tags(store, run_id, rows_frame([{"sample_id": i, "tag": "language", "value": "en", "status": "ok"}
                                          for i in mt_ids]))
    assert drop_dataset(store, "mt") == 80
    with store.connect() as con:
        tables = [t for (t,) in con.execute(
            "SELECT c.table_name FROM duckdb_columns() c JOIN duckdb_tables() USING (table_name) "
            "WHERE c.column_name = 'sample_id'").fetchall()]
        assert {"tags", "selection_samples", "exclusion_events", "label_events"} <= set(tables)
        for table in tables:
            orphans = con.execute(f"SELECT count(*) FROM {table} WHERE sample_id NOT IN (SELECT id FROM samples)")
            assert orphans.fetchall()[0][0] == 0, table
        assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 1319
    assert store.dataset_names() == ["gsm"]
