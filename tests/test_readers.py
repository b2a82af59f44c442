"""Streaming readers: every format and compression, locators, bad input, skip mode, bounded memory."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from core.ingest.readers import FORMATS, FormatError, RawRecord, count_hint, detect_format, iter_batches

ROWS = [{"id": i, "text": f"sample {i}", "label": i % 3} for i in range(10)]


def read_all(source: Any, **kwargs: Any) -> list[RawRecord]:
    return [r for batch in iter_batches(source, **kwargs) for r in batch]


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def collect(source: Any, **kwargs: Any) -> tuple[list[RawRecord], list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    records = read_all(source, on_error=lambda loc, msg: errors.append((loc, msg)), **kwargs)
    return records, errors


# --------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"), ("a.JSONL.gz", "jsonl"), ("a.jsonl.zst", "jsonl"),
     ("a.json", "json"), ("a.json.gz", "json"), ("a.parquet", "parquet"), ("a.csv", "csv"),
     ("a.tsv.zst", "csv")],
)
def test_detect_format_from_extension(tmp_path: Path, name: str, expected: str) -> None:
    write(tmp_path / name, b"x")
    assert detect_format(tmp_path / name) == expected
    assert expected in FORMATS


def test_detect_format_sniffs_unknown_extension(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path / "data.txt", jsonl_bytes(ROWS))) == "jsonl"
    assert detect_format(write(tmp_path / "list.dat", b'[{"a": 1}]')) == "json"
    assert detect_format(write(tmp_path / "notes.txt", "just some words\n")) == "txt"  # plain text (issue 12)
    with pytest.raises(FormatError, match=r"notes\.dat: cannot tell the format"):
        detect_format(write(tmp_path / "notes.dat", "just some words\n"))


def test_detect_format_hub_ids_and_missing_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert detect_format("openai/gsm8k") == "hub"
    assert detect_format("gsm8k") == "hub"
    assert detect_format("hub:openai/gsm8k") == "hub"
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        detect_format("missing.jsonl")
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="data/train"):
        detect_format("data/train")  # a local folder exists by that name: not a hub id
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_all(tmp_path / "nowhere" / "x.parquet")


# ----------------------------------------------------------------------------------------------- JSONL


def test_jsonl_records_locators_and_raw_text(tmp_path: Path) -> None:
    lines = b'{"a": 1}\n\n   \n{"a": 2, "b": "\xc3\xa9t\xc3\xa9"}\r\n{"a":3}'  # blank lines, CRLF, no final \n
    records = read_all(write(tmp_path / "train.jsonl", lines))
    assert [r.record for r in records] == [{"a": 1}, {"a": 2, "b": "été"}, {"a": 3}]
    assert [r.locator for r in records] == ["train.jsonl line 1", "train.jsonl line 4", "train.jsonl line 5"]
    assert [r.raw_json for r in records] == ['{"a": 1}', '{"a": 2, "b": "été"}', '{"a":3}']


def test_jsonl_utf8_bom_is_ignored(tmp_path: Path) -> None:
    records = read_all(write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + jsonl_bytes(ROWS[:2])))
    assert [r.record for r in records] == ROWS[:2]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst", ".ndjson"])
def test_jsonl_compressed(tmp_path: Path, suffix: str) -> None:
    data = jsonl_bytes(ROWS)
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    records = read_all(write(tmp_path / f"rows{suffix}", data))
    assert [r.record for r in records] == ROWS
    assert records[-1].locator == f"rows{suffix} line 10"


def test_batch_sizes_respected(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", jsonl_bytes(ROWS))
    assert [len(b) for b in iter_batches(path, batch_size=3)] == [3, 3, 3, 1]
    assert [len(b) for b in iter_batches(path, batch_size=10)] == [10]
    with pytest.raises(ValueError, match="batch_size"):
        iter_batches(path, batch_size=0)


def test_jsonl_invalid_line_names_file_line_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", b'{"a": 1}\n{"a": 2}\n{"a": x}\n')
    with pytest.raises(FormatError) as info:
        read_all(path)
    message = str(info.value)
    assert message.startswith("train.jsonl line 3: not valid JSON (")
    assert "column 7" in message and "expected one JSON object per line" in message
    assert info.value.locator == "train.jsonl line 3"
    assert info.value.path == str(path)


@pytest.mark.parametrize(("line", "kind"), [(b"[1, 2]", "array"), (b'"text"', "string"), (b"42", "number"),
                                            (b"null", "null")])
def test_jsonl_line_that_is_not_an_object(tmp_path: Path, line: bytes, kind: str) -> None:
    path = write(tmp_path / "train.jsonl", b'{"a": 1}\n' + line + b"\n")
    with pytest.raises(FormatError, match=rf"train\.jsonl line 2: expected a JSON object, got {kind}"):
        read_all(path)


def test_jsonl_wrong_encoding_and_the_encoding_option(tmp_path: Path) -> None:
    latin = '{"a": 1}\n{"b": 2}\n{"name": "café"}\n'.encode("latin-1")
    path = write(tmp_path / "data.jsonl", latin)
    with pytest.raises(FormatError) as info:
        read_all(path)
    assert str(info.value) == (
        "data.jsonl line 3: not valid UTF-8 at byte 14 (0xe9); expected UTF-8 text "
        "(re-encode the file, or pass encoding='latin-1')"
    )
    assert read_all(path, encoding="latin-1")[-1].record == {"name": "café"}


def test_jsonl_utf16_needs_the_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "wide.jsonl", '{"a": "é"}\n{"a": 2}\n'.encode("utf-16"))
    with pytest.raises(FormatError, match=r"wide\.jsonl: looks like UTF-16 text.*encoding='utf-16'"):
        read_all(path)
    records = read_all(path, encoding="utf-16")
    assert [r.record for r in records] == [{"a": "é"}, {"a": 2}]
    assert records[1].locator == "wide.jsonl line 2"


def test_jsonl_skip_mode_collects_bad_locators(tmp_path: Path) -> None:
    data = b'{"a": 1}\n{broken\n[1]\n{"a": "caf\xe9"}\n{"a": 5}\n'
    records, errors = collect(write(tmp_path / "mixed.jsonl", data))
    assert [r.record for r in records] == [{"a": 1}, {"a": 5}]
    assert [loc for loc, _ in errors] == ["mixed.jsonl line 2", "mixed.jsonl line 3", "mixed.jsonl line 4"]
    assert "not valid JSON" in errors[0][1] and not errors[0][1].startswith("mixed.jsonl")
    assert "got array" in errors[1][1]
    assert "not valid UTF-8 at byte 11 (0xe9)" in errors[2][1]


def test_jsonl_pretty_printed_json_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "pretty.jsonl", '[\n  {"a": 1}\n]\n')
    with pytest.raises(FormatError, match=r"pretty\.jsonl line 1: not valid JSON.*is it \.json\?"):
        read_all(path)


@pytest.mark.parametrize("content", [b"", b"\n  \n\n"])
def test_empty_jsonl(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(FormatError, match=r"^x\.jsonl: empty file; expected one JSON object per line"):
        read_all(write(tmp_path / "x.jsonl", content))


def test_streaming_keeps_memory_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as fh:
        for i in range(200_000):
            fh.write(b'{"id": %d, "text": "a short generated sample number %d"}\n' % (i, i))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count = sum(len(batch) for batch in iter_batches(path, batch_size=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < size / 4, f"peak {peak:,} bytes for a {size:,}-byte file"


# ------------------------------------------------------------------------------------------------ JSON


def test_json_top_level_list(tmp_path: Path) -> None:
    records = read_all(write(tmp_path / "list.json", orjson.dumps(ROWS, option=orjson.OPT_INDENT_2)))
    assert [r.record for r in records] == ROWS
    assert records[3].locator == "list.json record 3" and records[3].raw_json is None


@pytest.mark.parametrize("doc", [{"data": ROWS}, {"version": "1.0", "data": ROWS, "tags": ["a", "b"]}])
def test_json_object_holding_one_list(tmp_path: Path, doc: dict[str, Any]) -> None:
    records = read_all(write(tmp_path / "wrapped.json", orjson.dumps(doc)))
    assert [r.record for r in records] == ROWS
    assert records[0].locator == "wrapped.json data record 0"


def test_json_with_several_lists_asks_for_one(tmp_path: Path) -> None:
    path = write(tmp_path / "splits.json", orjson.dumps({"train": ROWS[:6], "test": ROWS[6:]}))
    with pytest.raises(FormatError, match=r"splits\.json: .*several lists of objects \('train', 'test'\)"):
        read_all(path)
    assert [r.record for r in read_all(path, split="test")] == ROWS[6:]


@pytest.mark.parametrize(("doc", "pattern"), [
    (b'"just a string"', r"holds a JSON string; expected a JSON list of objects"),
    (b'{"version": 1, "name": "x"}', r"holds no list of objects"),
    (b"[]", r"holds an empty list"),
    (b"", r"empty file"),
    (b'[{"a": 1},\n {"a": 2,,}]', r"^bad\.json line 2: not valid JSON \(.*column"),
])
def test_json_bad_documents(tmp_path: Path, doc: bytes, pattern: str) -> None:
    with pytest.raises(FormatError, match=pattern):
        read_all(write(tmp_path / "bad.json", doc))


def test_json_non_object_record_and_skip_mode(tmp_path: Path) -> None:
    path = write(tmp_path / "items.json", b'[{"a": 1}, "oops", {"a": 3}]')
    with pytest.raises(FormatError, match=r"^items\.json record 1: expected a JSON object, got string"):
        read_all(path)
    records, errors = collect(path)
    assert [r.locator for r in records] == ["items.json record 0", "items.json record 2"]
    assert [loc for loc, _ in errors] == ["items.json record 1"]


def test_json_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "l1.json", '[\n {"a": "ok"},\n {"a": "café"}\n]'.encode("latin-1"))
    with pytest.raises(FormatError, match=r"^l1\.json line 3: not valid UTF-8 at byte 12 \(0xe9\)"):
        read_all(path)
    assert read_all(path, encoding="latin-1")[1].record == {"a": "café"}


def test_json_compressed_and_json_lines_in_a_json_file(tmp_path: Path) -> None:
    gz = write(tmp_path / "rows.json.gz", gzip.compress(orjson.dumps({"data": ROWS})))
    assert [r.record for r in read_all(gz)] == ROWS
    zst = write(tmp_path / "rows.json.zst", zstandard.ZstdCompressor().compress(orjson.dumps(ROWS)))
    assert [r.record for r in read_all(zst)] == ROWS
    # many "train.json" files in the wild are JSON Lines: read them as such
    assert detect_format(write(tmp_path / "train.json", jsonl_bytes(ROWS))) == "jsonl"
    lines = read_all(tmp_path / "train.json")
    assert [r.record for r in lines] == ROWS and lines[0].locator == "train.json line 1"


# --------------------------------------------------------------------------------------------- Parquet


def test_parquet_rows_batches_and_count(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    rows = [{"id": i, "text": f"t{i}", "tags": ["a"] * (i % 3)} for i in range(2500)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    batches = list(iter_batches(path, batch_size=700))
    assert all(len(b) <= 700 for b in batches) and sum(map(len, batches)) == 2500
    records = [r for b in batches for r in b]
    assert [r.record for r in records] == rows
    assert records[1234].locator == "data.parquet row 1234"
    assert count_hint(path) == 2500


def test_parquet_that_is_json_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "x.parquet", jsonl_bytes([{"a": 1}]))
    with pytest.raises(FormatError) as info:
        read_all(path)
    assert str(info.value) == (
        "x.parquet: not a Parquet file (starts with '{\"a\"'); expected Parquet (magic PAR1) — is it JSON Lines?"
    )


def test_parquet_truncated(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), good)
    bad = write(tmp_path / "cut.parquet", good.read_bytes()[:-30])
    with pytest.raises(FormatError, match=r"^cut\.parquet: not a readable Parquet file"):
        read_all(bad)


# ------------------------------------------------------------------------------------------------- CSV


def test_csv_quoted_fields_and_line_numbers(tmp_path: Path) -> None:
    text = 'id,text,label\n1,"hello, world",a\n2,"two\nlines ""quoted""",b\n\n3,plain,c\n'
    records = read_all(write(tmp_path / "file.csv", text))
    assert [r.record for r in records] == [
        {"id": "1", "text": "hello, world", "label": "a"},
        {"id": "2", "text": 'two\nlines "quoted"', "label": "b"},
        {"id": "3", "text": "plain", "label": "c"},
    ]
    assert [r.locator for r in records] == ["file.csv line 2", "file.csv line 3", "file.csv line 6"]


@pytest.mark.parametrize("suffix", [".tsv", ".csv.gz", ".tsv.zst"])
def test_csv_tsv_and_compressed(tmp_path: Path, suffix: str) -> None:
    sep = "\t" if ".tsv" in suffix else ","
    data = f"a{sep}b\n1{sep}x y\n2{sep}z\n".encode()
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    records = read_all(write(tmp_path / f"t{suffix}", data))
    assert [r.record for r in records] == [{"a": "1", "b": "x y"}, {"a": "2", "b": "z"}]
    assert records[1].locator == f"t{suffix} line 3"


def test_csv_ragged_row_and_skip_mode(tmp_path: Path) -> None:
    path = write(tmp_path / "file.csv", "a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12\n")
    with pytest.raises(FormatError) as info:
        read_all(path)
    assert str(info.value).startswith("file.csv line 3: 2 fields, expected 3 as in the header")
    records, errors = collect(path)
    assert [r.record["a"] for r in records] == ["1", "10"]
    assert [loc for loc, _ in errors] == ["file.csv line 3", "file.csv line 4"]


def test_csv_bad_encoding_skips_the_whole_record(tmp_path: Path) -> None:
    data = 'a,b\n1,"multi\nline caf\xe9"\n2,ok\n'.encode("latin-1")
    path = write(tmp_path / "enc.csv", data)
    with pytest.raises(FormatError, match=r"^enc\.csv line 3: not valid UTF-8 at byte 9 \(0xe9\)"):
        read_all(path)
    records, errors = collect(path)
    assert [r.record for r in records] == [{"a": "2", "b": "ok"}]
    assert [loc for loc, _ in errors] == ["enc.csv line 3"]
    assert read_all(path, encoding="latin-1")[0].record["b"] == "multi\nline café"


def test_csv_unclosed_quote(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"^open\.csv line 3: not valid CSV"):
        read_all(write(tmp_path / "open.csv", 'a,b\n1,x\n2,"never closed\n3,y\n'))


def test_csv_duplicate_columns_and_long_fields(tmp_path: Path) -> None:
    long = "x" * 300_000  # beyond the csv module's default field limit
    records = read_all(write(tmp_path / "dup.csv", f"a,a,b\n1,2,{long}\n"))
    assert records[0].record == {"a": "1", "a.1": "2", "b": long}


@pytest.mark.parametrize(("content", "pattern"), [
    ("", r"^e\.csv: empty file"),
    ("a,b\n", r"^e\.csv: has a header line but no rows"),
    ('[{"a": 1}]', r"^e\.csv: looks like JSON .*not CSV"),
    ('{"a": 1}\n{"a": 2}\n', r"^e\.csv: looks like JSON Lines"),
])
def test_csv_bad_files(tmp_path: Path, content: str, pattern: str) -> None:
    with pytest.raises(FormatError, match=pattern):
        read_all(write(tmp_path / "e.csv", content))


# ---------------------------------------------------------------------------- files that are not their name


@pytest.mark.parametrize(("name", "data", "pattern"), [
    ("a.jsonl.gz", b'{"a": 1}\n', r"^a\.jsonl\.gz: not gzip-compressed \(looks like JSON Lines\)"),
    ("a.jsonl.zst", gzip.compress(b'{"a": 1}\n'), r"^a\.jsonl\.zst: not zstd-compressed \(looks like gzip"),
    ("a.csv.gz", b"a,b\n1,2\n", r"^a\.csv\.gz: not gzip-compressed \(looks like text\)"),
    ("a.jsonl", gzip.compress(b'{"a": 1}\n'), r"^a\.jsonl: looks like gzip-compressed data.*rename it"),
    ("a.jsonl", b"\x00\x01\x02binary\x00", r"^a\.jsonl: looks like binary data, not JSONL text"),
    ("a.csv", b"PAR1\x00\x00", r"^a\.csv: looks like a Parquet file, not CSV text"),
])
def test_file_that_is_not_what_its_name_says(tmp_path: Path, name: str, data: bytes, pattern: str) -> None:
    with pytest.raises(FormatError, match=pattern):
        read_all(write(tmp_path / name, data))


def test_jsonl_that_is_parquet(tmp_path: Path) -> None:
    path = tmp_path / "real.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    fake = write(tmp_path / "fake.jsonl", path.read_bytes())
    with pytest.raises(FormatError, match=r"^fake\.jsonl: looks like a Parquet file, not JSONL text"):
        read_all(fake)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_truncated_compressed_stream(tmp_path: Path, compression: str) -> None:
    rows = [{"id": i, "text": f"text number {i} " * (i % 7)} for i in range(50_000)]
    raw = jsonl_bytes(rows)
    data = gzip.compress(raw) if compression == "gzip" else zstandard.ZstdCompressor().compress(raw)
    suffix = ".gz" if compression == "gzip" else ".zst"
    path = write(tmp_path / f"cut.jsonl{suffix}", data[: len(data) // 2])
    pattern = rf"^cut\.jsonl\{suffix}: {compression} stream is corrupt or truncated after line \d+"
    with pytest.raises(FormatError, match=pattern):
        read_all(path)
    doc = orjson.dumps(rows)
    data = gzip.compress(doc) if compression == "gzip" else zstandard.ZstdCompressor().compress(doc)
    json_path = write(tmp_path / f"cut.json{suffix}", data[: len(data) // 2])
    with pytest.raises(FormatError, match=rf"^cut\.json\{suffix}: {compression} stream is corrupt or truncated \("):
        read_all(json_path)


def test_zstd_with_several_frames(tmp_path: Path) -> None:
    frames = b"".join(zstandard.ZstdCompressor().compress(jsonl_bytes([r])) for r in ROWS)
    assert [r.record for r in read_all(write(tmp_path / "multi.jsonl.zst", frames))] == ROWS


# ---------------------------------------------------------------------------------------------- folders


def test_folder_of_shards_in_name_order(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    write(shards / "part-001.jsonl", jsonl_bytes(ROWS[:4]))
    write(shards / "part-000.jsonl.gz", gzip.compress(jsonl_bytes(ROWS[4:6])))
    write(shards / "more" / "part-002.jsonl", jsonl_bytes(ROWS[6:]))
    write(shards / "README.md", "docs are ignored")
    write(shards / ".hidden.jsonl", b"not read")
    assert detect_format(shards) == "jsonl"
    batches = list(iter_batches(shards, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 3, 1]  # batches run across shard boundaries
    records = [r for b in batches for r in b]
    # sorted by path inside the folder: more/part-002, part-000, part-001
    assert [r.record["id"] for r in records] == [6, 7, 8, 9, 4, 5, 0, 1, 2, 3]
    assert [records[i].locator for i in (0, 4, 6)] == [
        "shards/more/part-002.jsonl line 1", "shards/part-000.jsonl.gz line 1", "shards/part-001.jsonl line 1",
    ]


def test_folder_shards_sorted_by_relative_path(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    write(shards / "a" / "part-1.csv", "x\n1\n")
    write(shards / "b.csv", "x\n2\n3\n")
    write(shards / "part-002.csv", "x\n4\n")
    records = read_all(shards)
    assert [r.record["x"] for r in records] == ["1", "2", "3", "4"]
    assert [r.locator for r in records] == ["shards/a/part-1.csv line 2", "shards/b.csv line 2",
                                            "shards/b.csv line 3", "shards/part-002.csv line 2"]


def test_folder_mixing_formats_and_empty_folder(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    write(mixed / "a.jsonl", jsonl_bytes(ROWS[:2]))
    write(mixed / "b.csv", "x\n1\n")
    with pytest.raises(FormatError, match=r"^mixed/: mixes formats \(csv: b\.csv; jsonl: a\.jsonl\)"):
        read_all(mixed)
    assert [r.record for r in read_all(mixed, format="jsonl")] == ROWS[:2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match=r"^empty/: no data files \(found: nothing\)"):
        read_all(tmp_path / "empty")


def test_folder_split_filter_and_parquet_count(tmp_path: Path) -> None:
    folder = tmp_path / "hubcopy"
    for split, rows in (("train", ROWS[:7]), ("test", ROWS[7:])):
        (folder / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / "data" / f"{split}-00000-of-00001.parquet")
    assert count_hint(folder) == 10
    assert count_hint(folder, split="test") == 3
    records = read_all(folder, split="test")
    assert [r.record for r in records] == ROWS[7:]
    assert records[0].locator == "hubcopy/data/test-00000-of-00001.parquet row 0"


# ---------------------------------------------------------------------------------- save_to_disk, hub


def test_save_to_disk_dataset(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    assert detect_format(folder) == "arrow"
    assert count_hint(folder) == 10
    batches = list(iter_batches(folder, batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    records = [r for b in batches for r in b]
    assert [r.record for r in records] == ROWS
    assert records[5].locator == "saved row 5"


def test_save_to_disk_dataset_dict(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:8]),
                          "test": datasets.Dataset.from_list(ROWS[8:])}).save_to_disk(str(folder))
    assert detect_format(folder) == "arrow"
    with pytest.raises(FormatError, match=r"^dd/: holds several splits \(train, test\).*split="):
        read_all(folder)
    with pytest.raises(FormatError, match=r"has no split 'valid' \(splits: train, test\)"):
        read_all(folder, split="valid")
    records = read_all(folder, split="test")
    assert [r.record for r in records] == ROWS[8:]
    assert records[1].locator == "dd split test row 1"
    assert count_hint(folder, split="train") == 8
    one = tmp_path / "one"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(one))
    assert read_all(one)[9].locator == "one split train row 9"


def test_hub_offline_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FormatError) as info:
        read_all("assay-test-owner/no-such-dataset")
    message = str(info.value)
    assert message.startswith("hub dataset 'assay-test-owner/no-such-dataset' could not be loaded: ")
    assert "the Hugging Face hub is not reachable from here" in message
    assert info.value.path == "hub:assay-test-owner/no-such-dataset"
    assert count_hint("assay-test-owner/no-such-dataset") is None


# --------------------------------------------------------------------------------------- real shared data


@pytest.mark.parametrize(("relative", "count", "first_keys"), [
    ("gsm8k/train.jsonl", 7473, ["question", "answer"]),
    ("alpaca-gpt4-demo-1k/alpaca_en_demo.json", 999, ["instruction", "input", "output"]),
    ("hate-offensive-crowd/labeled_data.csv", 24783,
     ["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"]),
    ("oasst-sample/en_100_tree.jsonl", 100, ["message_tree_id", "tree_state", "prompt"]),
    ("rte-crowd/rte.standardized.csv", 8000, None),
    ("alpaca-eval/gpt4_model_outputs.json", 805, None),
])
def test_real_shared_files(shared: Path, relative: str, count: int, first_keys: list[str] | None) -> None:
    records = read_all(shared / relative)
    assert len(records) == count
    assert len({r.locator for r in records}) == count
    if first_keys is not None:
        assert list(records[0].record) == first_keys


def test_real_csv_matches_pandas(shared: Path) -> None:
    import pandas as pd

    path = shared / "hate-offensive-crowd" / "labeled_data.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns={"Unnamed: 0": ""})
    records = read_all(path)
    assert [r.record for r in records] == frame.to_dict("records")
    # tweets with newlines inside quotes: the locator is the record's first line, not its index + 2
    assert records[-1].locator.startswith("labeled_data.csv line ")
    assert int(records[-1].locator.rsplit(" ", 1)[1]) > 24784
