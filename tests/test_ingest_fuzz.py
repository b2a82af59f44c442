"""Fuzzing ingest with real records: random truncation, byte flips and nesting, in every format and compression.

Every case must end one of two ways: the dataset loads (and holds what the report says), or a UserError
names the file (or the dataset) and the store is exactly as it was. Never another exception, never a
hang (each case runs under an alarm), never a half-written dataset. Seeded, so a failure replays.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from core.errors import UserError
from core.ingest.importer import ingest
from core.store.database import Store

SEED = 14
CASES = 80
CASE_SECONDS = 60  # generous for a loaded 2-core box; a hang (a quadratic read, a bomb) takes far longer

# (folder under ../shared, file, how many records to take)
SOURCES = [
    ("datasets", "gsm8k/test.jsonl", 8),
    ("datasets", "arena-hard/arena_hard_v0.1_question.jsonl", 6),
    ("datasets", "alpaca/seed_tasks.jsonl", 6),
    ("datasets", "hate-offensive-crowd/labeled_data.csv", 8),
    ("real-formats", "openai_cookbook_toy_chat_fine_tuning.jsonl", 5),
    ("real-formats", "magpie_example_instructions.jsonl", 4),
    ("real-formats", "lf_dpo_en_demo.json", 6),
    ("real-formats", "fastchat_dummy_conversation.json", 6),
    ("real-formats", "lf_alpaca_zh_demo.json", 6),
    ("real-formats", "torchtune_chat_tiny.json", 4),
]


def _first_records(path: Path, n: int) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        with open(path, "rb") as fh:
            return [orjson.loads(next(fh)) for _ in range(n)]
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return [dict(next(reader)) for _ in range(n)]
    doc = orjson.loads(path.read_bytes())
    return list(doc if isinstance(doc, list) else next(v for v in doc.values() if isinstance(v, list)))[:n]


@pytest.fixture(scope="module")
def pools(shared: Path) -> list[list[dict[str, Any]]]:
    """Groups of real records, one group per source file (so that many cases hold one shape)."""
    out = []
    for folder, name, n in SOURCES:
        path = shared.parent / folder / name if folder != "datasets" else shared / name
        if not path.is_file():
            pytest.skip(f"{path} is absent")
        out.append(_first_records(path, n))
    return out


# ---- building one case ----------------------------------------------------------------------------------


_DEEP: dict[str, bytes] = {}  # placeholder string -> the JSON text it stands for


def _nest(value: Any, rng: random.Random) -> str:
    """The value buried under a random pile of lists and objects, sometimes deeper than any parser allows;
    built as JSON text (a Python object that deep would overflow the stack of whoever walks it), and
    returned as a placeholder that _encode swaps for it."""
    opens = [rng.random() < 0.5 for _ in range(rng.choice([1, 3, 30, 260, 600, 1100]))]
    text = (b"".join(b"[" if o else b'{"k":' for o in opens) + orjson.dumps(value)
            + b"".join(b"]" if o else b"}" for o in reversed(opens)))
    key = f"@deep{len(_DEEP)}@"
    _DEEP[key] = text
    return key


def _records(pools: list[list[dict[str, Any]]], rng: random.Random, nest: bool) -> list[dict[str, Any]]:
    group = rng.choice(pools)
    records = [dict(r) for r in rng.sample(group, rng.randint(1, len(group)))]
    if rng.random() < 0.2:  # a stranger from another source
        records.insert(rng.randrange(len(records) + 1), dict(rng.choice(rng.choice(pools))))
    if nest:
        for i in rng.sample(range(len(records)), rng.randint(1, len(records))):
            key = rng.choice(list(records[i]) or ["x"])
            records[i][key] = _nest(records[i].get(key), rng)
            if rng.random() < 0.3:
                records[i] = {"wrapped": records[i]}
    return records


def _flat(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Records as CSV/Parquet rows: nested values become their JSON text."""
    rows = []
    for record in records:
        rows.append({k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in record.items()})
    return rows


def _dump(record: dict[str, Any]) -> bytes:
    text = orjson.dumps(record)
    for key in [k for k in _DEEP if k.encode() in text]:
        text = text.replace(b'"' + key.encode() + b'"', _DEEP[key])
    return text


def _encode(records: list[dict[str, Any]], fmt: str, rng: random.Random) -> bytes:
    if fmt == "jsonl":
        return b"".join(_dump(r) + b"\n" for r in records)
    if fmt == "json":
        body = b"[" + b",\n".join(_dump(r) for r in records) + b"]"
        return b'{"data": ' + body + b"}" if rng.random() < 0.3 else body
    rows = _flat(records)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode()
    sink = io.BytesIO()
    pq.write_table(pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in columns}), sink)
    return sink.getvalue()


def _compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gz":
        return gzip.compress(data, compresslevel=1)
    if compression == "zst":
        return zstandard.ZstdCompressor(level=1).compress(data)
    return data


def _mutate(data: bytes, how: str, rng: random.Random) -> bytes:
    if how == "truncate" and len(data) > 1:
        return data[: rng.randrange(1, len(data))]
    if how == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out))
            out[i] = rng.choice([0, 0x22, 0x0A, 0x7B, 0xFF, rng.randrange(256)])
        return bytes(out)
    return data


def _cases(pools: list[list[dict[str, Any]]]) -> Iterator[tuple[int, str, str | None, str, str, bytes]]:
    rng = random.Random(SEED)
    for i in range(CASES):
        fmt = rng.choice(["jsonl", "json", "csv", "parquet"])
        compression = None if fmt == "parquet" else rng.choice([None, "gz", "zst"])
        how = rng.choice(["none", "truncate", "flip", "nest", "nest"])
        records = _records(pools, rng, nest=how == "nest" and fmt in ("jsonl", "json"))
        data = _mutate(_compress(_encode(records, fmt, rng), compression), how, rng)
        yield i, fmt, compression, how, rng.choice(["error", "skip"]), data


# ---- running them ---------------------------------------------------------------------------------------


class _Hang(Exception):
    pass


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise _Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _state(store: Store) -> tuple[Any, ...]:
    with store.connect() as con:
        return (tuple(r[0] for r in con.execute("SELECT name FROM datasets ORDER BY name").fetchall()),
                con.execute("SELECT count(*), coalesce(sum(id), 0) FROM samples").fetchone(),
                con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone())


def test_ingest_fuzz(pools: list[list[dict[str, Any]]], tmp_path: Path) -> None:
    store = Store(tmp_path / "fuzz.duckdb", busy_timeout=30)
    outcomes = {"loaded": 0, "refused": 0}
    for i, fmt, compression, how, on_bad, data in _cases(pools):
        name = f"case{i}"
        path = tmp_path / (f"{name}.{fmt}" + (f".{compression}" if compression else ""))
        path.write_bytes(data)
        before = _state(store)
        where = f"case {i} ({fmt}, {compression}, {how}, on_bad={on_bad}, seed {SEED})"
        try:
            with _deadline(CASE_SECONDS):
                report = ingest(store, path, name=name, on_bad=on_bad)
        except UserError as exc:
            assert path.name in str(exc) or name in str(exc), f"{where}: the error names neither: {exc}"
            assert "\n" not in str(exc).strip() or "Traceback" not in str(exc), where
            assert _state(store) == before, f"{where}: the store changed after a refusal"
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - the failure under test, reported with its case
            raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
        else:
            info = store.dataset(name)
            n = store.query_df("SELECT count(*) AS n FROM samples WHERE dataset_id = ?", [info.dataset_id])["n"][0]
            assert (info.n_samples, n) == (report.n_samples, report.n_samples) and n > 0, where
            outcomes["loaded"] += 1
    assert outcomes["loaded"] >= 10 and outcomes["refused"] >= 10, outcomes  # both ways are exercised
