"""Benchmark: a filtered, sorted page of 50 rows over 1,000,000 samples with three signal filters (target:
under 300 ms), beside bench/browse_page.py (same store, same `big` dataset).

On top of that store it records real runs and their rows for every sample of `big`: a finished tag run
(category and the preference proxy), a noise run (cleanlab score and flag) and a contamination run (1% of
samples flagged); then times core.browse.samples the way the Datasets page runs it, with signal filters
(`tag.category:eq:Math`, `noise.cleanlab.flag:is_false`, `contamination:eq:clean`) and a signal sort. A
second case adds a newer tag run over 10% of the samples, so the "newest ok value per sample" window runs.

    .venv/bin/python -m bench.browse_signals [--rows 1000000] [--db PATH] [--repeat 5]

Prints the figures and writes them, with the machine's load average and CPU time, to
bench/results/browse_signals.json; a calibration case repeats one of browse_page's queries without signals, so
a figure taken on a loaded machine can be read against browse_page's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.browse_page import build
from core import signals
from core.browse.samples import query_samples
from core.signals.registry import list_on
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "browse_signals.json"
CATEGORIES = ["Math", "Coding", "Writing", "Reasoning", "Advice", "Brainstorm", "Other"]
FILTERS = ["tag.category:eq:Math", "noise.cleanlab.flag:is_false", "contamination:eq:clean"]


def add_signals(store: Store) -> None:
    """One finished run per capability with a row for every sample of `big` (contamination: the flagged 1%)."""
    if not store.query_df("SELECT 1 FROM runs WHERE kind = 'tag' LIMIT 1").empty:
        return
    big = store.dataset("big").dataset_id
    tag = store.start_run("tag", dataset_id=big)
    noise = store.start_run("noise", dataset_id=big)
    contam = store.start_run("contamination", dataset_id=big)
    with store.transaction() as con:
        con.execute("INSERT INTO tag_runs VALUES (?, 'offline', ['category', 'preference_proxy'], 'dataset:big', "
                    "?, '{}', '{}')", [tag, store.dataset("big").n_samples])
        con.execute("INSERT INTO tags SELECT ?, id, 'category', (?::VARCHAR[])[CAST(1 + hash(id) % 7 AS BIGINT)], 0.9, 'ok', NULL, "
                    "'bench' FROM samples WHERE dataset_id = ?", [tag, CATEGORIES, big])
        con.execute("INSERT INTO tags SELECT ?, id, 'preference_proxy', NULL, (hash(id * 7) % 10000) / 1000.0, "
                    "'ok', NULL, 'bench' FROM samples WHERE dataset_id = ?", [tag, big])
        con.execute("INSERT INTO noise_runs VALUES (?, ?, 'meta:class', 0, ['a', 'b'], ['cleanlab'], ?, 0, 0, '{}')",
                    [noise, big, store.dataset("big").n_samples])
        con.execute("INSERT INTO noise_scores (run_id, sample_id, given_label, label_score, is_label_issue, "
                    "cleanlab_score, cleanlab_flag) SELECT ?, id, 'a', (hash(id) % 1000) / 1000.0, hash(id) % 10 = 0, "
                    "(hash(id) % 1000) / 1000.0, hash(id) % 10 = 0 FROM samples WHERE dataset_id = ?", [noise, big])
        con.execute("INSERT INTO contamination_results (run_id, sample_id, eval_dataset_id, contaminated) "
                    "SELECT ?, id, 1, true FROM samples WHERE dataset_id = ? AND hash(id * 3) % 100 = 0",
                    [contam, big])
    for run in (tag, noise, contam):
        store.finish_run(run)


def drop_partial_tag_runs(store: Store) -> None:
    """Remove the partial tag runs an earlier run of this benchmark left in a reused store (--db), so that the
    first cases always measure one tag run and the last exactly one newer partial run."""
    with store.transaction() as con:
        runs = [r[0] for r in con.execute("SELECT run_id FROM tag_runs WHERE target = 'selection:bench'").fetchall()]
        for table in ("tags", "tag_runs", "runs"):
            con.execute(f"DELETE FROM {table} WHERE list_contains(?::INTEGER[], run_id)", [runs])


def add_partial_tag_run(store: Store) -> None:
    """A newer tag run over 10% of the samples: the current value per sample now needs the window."""
    big = store.dataset("big").dataset_id
    run = store.start_run("tag", dataset_id=big)
    with store.transaction() as con:
        con.execute("INSERT INTO tag_runs VALUES (?, 'offline', ['category'], 'selection:bench', 0, '{}', '{}')", [run])
        con.execute("INSERT INTO tags SELECT ?, id, 'category', 'Math', 0.8, 'ok', NULL, 'bench' FROM samples "
                    "WHERE dataset_id = ? AND id % 10 = 0", [run, big])
    store.finish_run(run)


def timed(store: Store, repeat: int, **query) -> dict:
    walls, cpus, total = [], [], 0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        page = query_samples(store, "big", limit=50, **query)
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
        total = page.total
    return {"median_ms": round(statistics.median(walls), 1), "max_ms": round(max(walls), 1),
            "median_cpu_ms": round(statistics.median(cpus), 1), "total": total,
            "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


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
    add_signals(store)
    drop_partial_tag_runs(store)
    build_s = time.perf_counter() - started
    query_samples(store, "big", limit=1)  # the column catalog, read once per dataset as the page does
    filters = [signals.parse_filter(f) for f in FILTERS]
    three = {"filters": filters, "sort": "reward.proxy", "descending": True}
    cases = {"listing the signals (registry)": None,
             # The same query as browse_page's second case (26.5 ms committed, idle machine): how loaded is it now?
             "calibration, no signals: n_chars 200-600, sort n_tokens desc": {
                 "filters": [signals.parse_filter("n_chars:between:200,600")], "sort": "n_tokens", "descending": True},
             "3 signal filters, sort by reward.proxy desc": three,
             "3 signal filters, sort by reward.proxy, 3 signals shown": {**three, "signals": ["tag.category",
                                                                                              "noise.cleanlab.score",
                                                                                              "contamination"]},
             "3 signal filters, page 100": {**three, "offset": 5_000}}
    results = {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    for name, query in cases.items():
        if query is None:
            walls = []
            for _ in range(args.repeat):
                wall = time.perf_counter()
                with store.connect() as con:
                    n = len(list_on(con, [store.dataset("big").dataset_id]))
                walls.append((time.perf_counter() - wall) * 1000)
            results[name] = {"median_ms": round(statistics.median(walls), 1), "max_ms": round(max(walls), 1),
                             "total": n, "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
            continue
        results[name] = timed(store, args.repeat, **query)
    add_partial_tag_run(store)
    results["3 signal filters after a newer 10% tag run (window)"] = timed(store, args.repeat, **three)
    report = {"rows": args.rows, "build_seconds": round(build_s, 1), "cpu_count": os.cpu_count(),
              "target_ms": 300, "filters": FILTERS, "load_avg_before": load_before, "cases": results}
    for name, figures in results.items():
        cpu = f"cpu {figures['median_cpu_ms']:7.1f} ms  " if "median_cpu_ms" in figures else ""
        print(f"{name:60s} median {figures['median_ms']:7.1f} ms  max {figures['max_ms']:7.1f} ms  {cpu}"
              f"({figures['total']:,})  load {figures['load_avg_after']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
