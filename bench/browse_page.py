"""Benchmark: a filtered, sorted page of 50 rows from a 1,000,000-row dataset (target: under 300 ms).

Builds (once, in a temporary folder unless --db is given) a store whose dataset `big` holds 1M samples made
by repeating the real gsm8k train and hate-offensive-crowd samples with new ids, then times core.browse.samples
queries the way the dataset page runs them (open the store, count, fetch one page, close).

    .venv/bin/python -m bench.browse_page [--rows 1000000] [--db PATH] [--repeat 5]

Prints the figures and writes them to bench/results/browse_page.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from core.browse.samples import Filter, query_samples
from core.ingest.importer import ingest
from core.store.database import Store, now_utc

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASSAY_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "bench" / "results" / "browse_page.json"


def build(store: Store, rows: int) -> None:
    if "big" in store.dataset_names():
        return
    ingest(store, SHARED / "gsm8k" / "train.jsonl", name="seed-gsm8k", license="MIT")
    ingest(store, SHARED / "hate-offensive-crowd" / "labeled_data.csv", name="seed-hate", license="MIT",
           shape="mapped", mapping={"text": "tweet"})
    with store.transaction() as con:
        seed = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        fields = [f for (raw,) in con.execute("SELECT fields FROM datasets").fetchall() for f in json.loads(raw or "[]")]
        con.execute(
            "INSERT INTO datasets (dataset_id, name, source, format, shape, license, n_samples, n_records, fields, "
            "load_options, loaded_at) VALUES (nextval('dataset_id_seq'), 'big', 'bench: repeated seeds', 'bench', "
            "'mixed', 'MIT', ?, ?, ?, '{}', ?)", [rows, rows, json.dumps(fields), now_utc()],
        )
        big_id = con.execute("SELECT dataset_id FROM datasets WHERE name = 'big'").fetchone()[0]
        base = con.execute("SELECT max(id) FROM samples").fetchone()[0]
        con.execute(
            """
            INSERT INTO samples
            SELECT ? + r.i + 1, ?, CAST(r.i AS VARCHAR), r.i, s.messages, s.rejected, s.text, s.n_turns, s.n_chars,
                   s.n_tokens, s.meta, s.raw, s.tools, s.kto_label
            FROM range(?) r(i)
            JOIN (SELECT *, row_number() OVER (ORDER BY id) - 1 AS k FROM samples) s ON s.k = r.i % ?
            """,
            [base, big_id, rows, seed],
        )


def timed(store: Store, repeat: int, **query) -> dict:
    times, total = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        page = query_samples(store, "big", limit=50, **query)
        times.append((time.perf_counter() - started) * 1000)
        total = page.total
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", help="store to build into / reuse (default: a temporary file)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="assay-bench-")) / "browse.duckdb"
    store = Store(path)
    started = time.perf_counter()
    build(store, args.rows)
    build_s = time.perf_counter() - started
    query_samples(store, "big", limit=1)  # first call reads the column catalog; the page does that once too
    cases = {
        "first page, no filter": {},
        "filter n_chars 200-600, sort n_tokens desc": {
            "filters": [Filter("n_chars", "between", (200, 600))], "sort": "n_tokens", "descending": True},
        "meta filter class in [0], sort n_chars desc": {
            "filters": [Filter("class", "in", [0])], "sort": "n_chars", "descending": True},
        "meta range hate_speech >= 2, sort by meta count": {
            "filters": [Filter("hate_speech", "between", (2, None))], "sort": "count", "descending": True},
        "search 'marbles' + n_turns = 2, sort n_chars": {
            "search": "marbles", "filters": [Filter("n_turns", "eq", 2)], "sort": "n_chars"},
        "page 1000 of a sorted filter": {
            "filters": [Filter("n_chars", "between", (100, None))], "sort": "n_chars", "offset": 50_000},
    }
    results = {name: timed(store, args.repeat, **query) for name, query in cases.items()}
    report = {"rows": args.rows, "build_seconds": round(build_s, 1), "cpu_count": os.cpu_count(),
              "target_ms": 300, "cases": results}
    for name, figures in results.items():
        print(f"{name:55s} median {figures['median_ms']:7.1f} ms  max {figures['max_ms']:7.1f} ms  "
              f"({figures['total']:,} match)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
