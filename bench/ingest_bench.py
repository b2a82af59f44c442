"""Ingest benchmark: 1,000,000 records built from real shared data, JSONL and Parquet, vs pandas.

    python -m bench.ingest_bench [--rows 1000000]
    python -m bench.ingest_bench --chat [--rows 1000000] [--skip-records]   # multi-turn conversations

The chat case also measures the floor under ingest on the same file: `datasets.load_dataset("json")`
(conversion to Arrow only) and DuckDB's `CREATE TABLE AS SELECT * FROM read_json(...)`. Assay's figure is
given whole (what `assay ingest` takes, search index included) and for the load alone (without the search
index that core/browse builds after it), with the stages of its path.

Each measurement runs in its own process so that its peak memory is its own. Writes
bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.common import peak_rss_mb, run_isolated, shared_dir, write_results


def build_inputs(folder: Path, rows: int) -> tuple[Path, Path]:
    """GSM8K train and test records repeated with new ids, as JSONL and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shared = shared_dir()
    base = [json.loads(line) for name in ("train.jsonl", "test.jsonl")
            for line in (shared / "gsm8k" / name).read_text().splitlines() if line.strip()]
    jsonl, parquet = folder / "records.jsonl", folder / "records.parquet"
    with jsonl.open("w") as out:
        for i in range(rows):
            rec = base[i % len(base)]
            out.write(json.dumps({"id": f"r{i}", "question": rec["question"], "answer": rec["answer"]}) + "\n")
    chunk = 100_000
    with pq.ParquetWriter(parquet, pa.schema([("id", pa.string()), ("question", pa.string()),
                                              ("answer", pa.string())])) as writer:
        for start in range(0, rows, chunk):
            idx = range(start, min(rows, start + chunk))
            writer.write_table(pa.table({
                "id": [f"r{i}" for i in idx],
                "question": [base[i % len(base)]["question"] for i in idx],
                "answer": [base[i % len(base)]["answer"] for i in idx],
            }))
    return jsonl, parquet


def build_chat_input(folder: Path, rows: int) -> Path:
    """Multi-turn OpenAI-style conversations from real shared data: GSM8K question/answer pairs and
    Alpaca-GPT4 instruction/output pairs, 2-6 turns each, a system prompt on every fifth, new ids."""
    shared = shared_dir()
    qa = [json.loads(line) for line in (shared / "gsm8k" / "train.jsonl").read_text().splitlines() if line.strip()]
    alpaca = json.loads((shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").read_text())
    pairs = [(r["question"], r["answer"]) for r in qa] + [(r["instruction"], r["output"]) for r in alpaca]
    path = folder / "chat.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            turns = [{"role": "system", "content": "You are a helpful assistant."}] if i % 5 == 0 else []
            for k in range(1 + i % 3):
                q, a = pairs[(i * 7 + k * 131) % len(pairs)]
                turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            out.write(json.dumps({"id": f"c{i}", "messages": turns, "source": "gsm8k+alpaca"}) + "\n")
    return path


def measure_hf_datasets(path: str, db: str) -> dict:
    """`datasets.load_dataset("json")`: conversion to Arrow only, no normalisation (the floor)."""
    import datasets

    datasets.disable_progress_bars()
    load_before = os.getloadavg()
    started, cpu = time.perf_counter(), time.process_time()
    ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=db + ".hf-cache")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"rows": len(ds), "seconds": round(seconds, 2), "rows_per_s": round(len(ds) / seconds),
            "cpu_s": round(cpu, 1), "peak_rss_mb": round(peak_rss_mb()), "load_avg": _load(load_before)}


def measure_duckdb_ctas(path: str, db: str) -> dict:
    """DuckDB's own reader into a table, no normalisation (the other floor)."""
    import duckdb

    load_before = os.getloadavg()
    started, cpu = time.perf_counter(), time.process_time()
    con = duckdb.connect(db)
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_json('{path}', format = 'newline_delimited')")
    n = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    con.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds),
            "cpu_s": round(cpu, 1), "peak_rss_mb": round(peak_rss_mb()), "load_avg": _load(load_before)}


def chat_main(rows: int, skip_records: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"building {rows:,} conversations ...", file=sys.stderr)
        path = build_chat_input(folder, rows)
        results: dict = {"rows": rows, "source": "gsm8k train + alpaca-gpt4 1k as 2-6 turn conversations",
                         "file_mb": round(path.stat().st_size / 1e6)}
        for what in ("assay", "assay_records", "hf_datasets", "duckdb_ctas"):
            if what == "assay_records" and skip_records:
                continue
            res = run_isolated("bench.ingest_bench", "--measure", what, str(path), str(folder / f"{what}.db"))
            results[what] = res
            print(f"chat {what:14s} {res['rows_per_s']:>9,} rows/s  {res['seconds']:7.1f}s  cpu {res['cpu_s']:6.1f}s  "
                  f"peak {res['peak_rss_mb']:,} MB  load {res['load_avg']['before']}-{res['load_avg']['after']}  "
                  f"{res.get('path', '')}", file=sys.stderr)
            if "load_rows_per_s" in res:
                print(f"    the load alone (no search index): {res['load_rows_per_s']:,} rows/s  "
                      f"{res['load_seconds']:.1f}s  cpu {res['load_cpu_s']:.1f}s", file=sys.stderr)
            for label, (wall, cpu) in res.get("stages_wall_cpu_s", {}).items():
                print(f"    {label:40s} {wall:7.1f}s  cpu {cpu:6.1f}s", file=sys.stderr)
        for floor in ("hf_datasets", "duckdb_ctas", "assay_records"):
            if floor in results:
                ratio = round(results["assay"]["rows_per_s"] / results[floor]["rows_per_s"], 2)
                load_ratio = round(results["assay"]["load_rows_per_s"] / results[floor]["rows_per_s"], 2)
                results[f"assay_vs_{floor}"], results[f"assay_load_vs_{floor}"] = ratio, load_ratio
                print(f"chat assay / {floor}: {ratio} (the load alone, without the search index: {load_ratio})",
                      file=sys.stderr)
    print(write_results("ingest_chat" if rows == 1_000_000 else f"ingest_chat_{rows}", results))


_INDEX_STAGE = "search index build (after the load)"


def _stage_timer() -> dict[str, list[float]]:
    """Wall and CPU seconds of the columnar path's stages (staging the lines, each SQL statement over
    0.2 s), gathered by wrapping the calls: where the time goes, recorded with the figure."""
    import duckdb

    import core.browse.search_index as search_index
    import core.ingest.columnar as ingest_columnar

    stages: dict[str, list[float]] = {}

    def timed(label: str, call, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if wall > 0.2:
                total = stages.setdefault(label, [0.0, 0.0])
                total[0], total[1] = round(total[0] + wall, 2), round(total[1] + cpu, 2)

    stage, execute = ingest_columnar.stage_jsonl, duckdb.DuckDBPyConnection.execute
    ingest_columnar.stage_jsonl = lambda *a, **k: timed("stage lines (Python)", stage, *a, **k)
    _time_arrow_path(stages)
    index = search_index.after_ingest
    search_index.after_ingest = lambda *a, **k: timed(_INDEX_STAGE, index, *a, **k)

    def execute_timed(self, sql, *args, **kwargs):
        words = str(sql).split()
        label = " ".join(words[:3]) if words and words[0] == "INSERT" else " ".join(words[:2])
        return timed("sql " + label[:40], execute, self, sql, *args, **kwargs)

    duckdb.DuckDBPyConnection.execute = execute_timed
    return stages


def _time_arrow_path(stages: dict[str, list[float]]) -> None:
    """The Arrow path's two overlapping stages: building a block (parse, turns, text, tokens; in a worker
    thread) and inserting it (DuckDB). Wall seconds each, summed over blocks; they overlap, so they add up
    to more than the load's wall time. CPU: the building thread's own seconds; the INSERT's are the process's
    (DuckDB's threads, and the builder's share while it overlaps)."""
    import duckdb

    import core.ingest.arrow_turns as arrow_turns

    build = arrow_turns.build

    def add(label: str, wall: float, cpu: float) -> None:
        total = stages.setdefault(label, [0.0, 0.0])
        total[0], total[1] = round(total[0] + wall, 2), round(total[1] + cpu, 2)

    def build_timed(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return build(*args, **kwargs)
        finally:
            add("arrow: build blocks (worker thread)", time.perf_counter() - wall, time.thread_time() - cpu)

    arrow_turns.build = build_timed
    query = duckdb.DuckDBPyRelation.query

    def query_timed(self, name, sql, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return query(self, name, sql, *args, **kwargs)
        finally:
            add("arrow: INSERT blocks (DuckDB; CPU incl. the builder's)", time.perf_counter() - wall,
                time.process_time() - cpu)

    duckdb.DuckDBPyRelation.query = query_timed


def measure_assay(path: str, db: str, columnar: bool = True) -> dict:
    from core.ingest.importer import ingest
    from core.store.database import Store

    stages = _stage_timer()
    store = Store(db)
    load_before = os.getloadavg()
    started, cpu = time.perf_counter(), time.process_time()
    report = ingest(store, path, name="bench", columnar=columnar)
    store.release()  # include the checkpoint that closing the store costs
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    with store.connect() as con:
        loaded_by = json.loads(con.execute("SELECT load_options FROM datasets").fetchall()[0][0])["path"]
    index_wall, index_cpu = stages.get(_INDEX_STAGE, [0.0, 0.0])
    load_s = seconds - index_wall  # the load alone: the search index is built after it, by core/browse
    return {"rows": report.n_samples, "seconds": round(seconds, 2), "rows_per_s": round(report.n_samples / seconds),
            "cpu_s": round(cpu, 1), "load_seconds": round(load_s, 2), "load_rows_per_s": round(report.n_samples / load_s),
            "load_cpu_s": round(cpu - index_cpu, 1), "peak_rss_mb": round(peak_rss_mb()), "path": loaded_by,
            "store_mb": round(Path(db).stat().st_size / 1e6), "load_avg": _load(load_before),
            "stages_wall_cpu_s": stages}


def _load(before: tuple[float, float, float]) -> dict:
    """The 1-minute load average before and after a measurement (the machine is shared: with 2 cores, a
    load above 2 means the figure is a fraction of what the code does alone)."""
    return {"before": round(before[0], 2), "after": round(os.getloadavg()[0], 2)}


def measure_assay_records(path: str, db: str) -> dict:
    """The record-by-record path on the same file: what the columnar path is measured against."""
    return measure_assay(path, db, columnar=False)


def measure_pandas(path: str, db: str) -> dict:
    """The obvious alternative: read the whole file with pandas, write it with to_sql."""
    import pandas as pd

    started = time.perf_counter()
    df = pd.read_json(path, lines=True) if path.endswith(".jsonl") else pd.read_parquet(path)
    with sqlite3.connect(db) as con:
        df.to_sql("samples", con, index=False, chunksize=50_000)
    seconds = time.perf_counter() - started
    return {"rows": len(df), "seconds": round(seconds, 2), "rows_per_s": round(len(df) / seconds),
            "peak_rss_mb": round(peak_rss_mb())}


def measure_page(db: str) -> dict:
    """A filtered, sorted page of 50 rows from the big store (what the dataset page asks for)."""
    from core.browse.samples import Filter, query_samples
    from core.store.database import Store

    store = Store(db)
    timings = {}
    cases = {
        "filter n_tokens 50-150, sort n_chars desc": dict(
            filters=[Filter("n_tokens", "between", (50, 150))], sort="n_chars", descending=True),
        "search 'apples', sort n_tokens": dict(search="apples", sort="n_tokens"),
        "page 1000 of unfiltered, sort source_id": dict(sort="source_id", offset=50_000),
    }
    for label, kwargs in cases.items():
        query_samples(store, "bench", limit=50, **kwargs)  # warm the OS cache once
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            page = query_samples(store, "bench", limit=50, **kwargs)
            runs.append(time.perf_counter() - started)
        runs.sort()
        timings[label] = {"median_ms": round(runs[2] * 1000, 1), "total_matching": int(page.total)}
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chat", action="store_true", help="the multi-turn conversation case")
    parser.add_argument("--skip-records", action="store_true", help="chat case: leave out the record path")
    parser.add_argument("--measure", nargs=3, metavar=("WHAT", "PATH", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        what, path, db = args.measure
        measures = {"assay": measure_assay, "assay_records": measure_assay_records, "pandas": measure_pandas,
                    "hf_datasets": measure_hf_datasets, "duckdb_ctas": measure_duckdb_ctas}
        result = measure_page(db) if what == "page" else measures[what](path, db)
        print(json.dumps(result))
        return
    if args.chat:
        chat_main(args.rows, args.skip_records)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"building {args.rows:,} records ...", file=sys.stderr)
        jsonl, parquet = build_inputs(folder, args.rows)
        results: dict = {"rows": args.rows, "source": "gsm8k train+test repeated with new ids"}
        for kind, path in (("jsonl", jsonl), ("parquet", parquet)):
            for what in ("assay", "assay_records", "pandas"):
                db = folder / f"{kind}-{what}.db"
                res = run_isolated("bench.ingest_bench", "--measure", what, str(path), str(db))
                results[f"{kind}_{what}"] = res
                print(f"{kind:8s} {what:7s} {res['rows_per_s']:>9,} rows/s  {res['seconds']:7.1f}s  "
                      f"peak {res['peak_rss_mb']:,} MB", file=sys.stderr)
            ratio = results[f"{kind}_assay"]["rows_per_s"] / results[f"{kind}_pandas"]["rows_per_s"]
            results[f"{kind}_speed_ratio_vs_pandas"] = round(ratio, 2)
            results[f"{kind}_columnar_vs_record_path"] = round(
                results[f"{kind}_assay"]["rows_per_s"] / results[f"{kind}_assay_records"]["rows_per_s"], 2)
        page = run_isolated("bench.ingest_bench", "--measure", "page", "-", str(folder / "parquet-assay.db"))
        results["page_query"] = page
        for label, t in page.items():
            print(f"page: {label}: {t['median_ms']} ms (matching {t['total_matching']:,})", file=sys.stderr)
    print(write_results("ingest", results))


if __name__ == "__main__":
    main()
