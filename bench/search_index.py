"""Benchmark: the Datasets page's search over 1M (and 10M) samples, from the search index vs today's scan.

Builds (once per size, in a temporary folder unless --db is given) a store whose dataset `big` repeats the
real GSM8K train and hate-offensive-crowd samples with new ids (bench/browse_page.py), builds its search index
(timed: wall, CPU, load average, size), then times `core.browse.samples.query_samples` as the page calls it (first
page of 50) for word, phrase and punctuation searches, each through the index and through the scan in the
same run, and checks that both give the same total and page.

The repeated seeds hold only ~43k distinct words, while a real 10M-sample corpus holds millions; the one
cost that grows with the vocabulary (finding the words that contain the term) is therefore also timed on a
synthetic vocabulary of --vocab words, and reported apart.

    .venv/bin/python -m bench.search_index [--rows 1000000 10000000] [--db-dir DIR] [--repeat 7]

Writes bench/results/search_index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import core.browse.samples as browse
import core.browse.search_index as search_index
from bench.browse_page import build
from bench.common import RESULTS, write_results
from core.browse.samples import Filter, query_samples
from core.store.database import Store

WORDS = ["marbles", "apples", "money", "bitch", "the"]
OTHER = ["two apples", "$5", "how many"]
FILTERED = {"filters": [Filter("n_turns", "eq", 2)], "sort": "n_chars"}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _times(fn, repeat: int) -> tuple[list[float], Any]:
    out, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        out.append((time.perf_counter() - started) * 1000)
    return out, result


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1)}


def _scan(fn):
    saved, background = search_index.open_index, search_index.BACKGROUND_REBUILD
    search_index.open_index, search_index.BACKGROUND_REBUILD = (lambda *a, **k: None), False
    try:
        return fn()
    finally:
        search_index.open_index, search_index.BACKGROUND_REBUILD = saved, background


def _search_step(store: Store, term: str, query: dict[str, Any]) -> tuple[int, list[int]]:
    """What the search itself costs inside query_samples: the total and the page's ids (without reading the
    page's rows, which costs the same either way)."""
    filters, sort = query.get("filters", []), query.get("sort")
    with store.connect() as con:
        info = browse._resolve(con, store, "big")
        catalog = browse._catalog(con, store, info)
        plan = browse._search_plan(store, info, term, None)
        if plan is not None and plan.exact and plan.in_row_order and not filters and not sort:
            return plan.page(0, 50)
        scope = browse._Scope(con, info, catalog, None)
        return browse._find_page(con, scope, info, term, None, filters, None, sort, False, 0, 50,
                                 browse._search_ids(con, info, plan, term))


def _case(store: Store, term: str, repeat: int, scan_repeat: int, **query: Any) -> dict[str, Any]:
    def run():
        return query_samples(store, "big", search=term, limit=50, **query)

    def step():
        return _search_step(store, term, query)

    run()  # the first call opens the index and reads its vocabulary once per process
    indexed, page = _times(run, repeat)
    indexed_step, found = _times(step, repeat)
    load = _load()
    scanned, scan_page = _scan(lambda: _times(run, scan_repeat))
    scanned_step, scan_found = _scan(lambda: _times(step, scan_repeat))
    assert (page.total, page.ids) == (scan_page.total, scan_page.ids) and found == scan_found, term
    info = store.dataset("big")
    index = search_index.open_index(store, info.dataset_id, info.loaded_at, info.n_samples)
    plan = search_index.plan(index, term) if index else None
    index_s, scan_s = _summary(indexed_step), _summary(scanned_step)
    return {"term": term, "query": {k: str(v) for k, v in query.items()}, "matches": page.total,
            "answered_by": _answered_by(plan, not query and plan is not None and plan.exact, info.n_samples),
            "index": index_s, "scan": scan_s, "speedup_p50": round(scan_s["p50_ms"] / max(index_s["p50_ms"], 0.01), 1),
            "page_index": _summary(indexed), "page_scan": _summary(scanned), "loadavg": load}


def _answered_by(plan: search_index.Plan | None, page_only: bool, size: int) -> str:
    if plan is None:
        return "scan"
    if page_only:
        return "index"
    if not browse.index_pays(plan, plan.count(), size):
        return "scan (too many hits)"
    return "index" if plan.exact else "index + check"


def _index_build(store: Store) -> dict[str, Any]:
    info = store.dataset("big")
    search_index.drop_index(store, info.dataset_id)
    load0, cpu0, started = _load(), _cpu(), time.perf_counter()
    folder = search_index.build_index(store, "big")
    wall, cpu = time.perf_counter() - started, _cpu() - cpu0
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    marker = search_index._read_marker(folder) or {}
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "loadavg_before": load0, "loadavg_after": _load(),
            "index_mb": round(size / 1e6, 1), "store_mb": round(store.path.stat().st_size / 1e6, 1),
            "n_terms": marker.get("n_terms")}


def _vocabulary_cost(n_terms: int) -> dict[str, Any]:
    """matching_terms over a synthetic vocabulary of n_terms random words (3-12 letters, some digits)."""
    rng = random.Random(0)
    letters = string.ascii_lowercase + string.digits
    terms = sorted({"".join(rng.choices(letters, k=rng.randint(3, 12))) for _ in range(n_terms)})
    blob = ("\n" + "\n".join(terms) + "\n").encode()
    fake = search_index.SearchIndex(Path("."), {}, None, None)  # type: ignore[arg-type]
    fake._vocab = (blob, np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 10), terms)
    out = {"n_terms": len(terms), "blob_mb": round(len(blob) / 1e6, 1)}
    for needle, left, right in (("marbles", True, True), ("the", True, True), ("marbles", False, True)):
        times, found = _times(lambda n=needle, a=left, b=right: fake.matching_terms(n, a, b), 5)
        out[f"{needle} ({'substring' if left else 'prefix'})"] = {**_summary(times), "terms": len(found)}
    out["loadavg"] = _load()
    return out


def run_size(rows: int, db: Path, repeat: int) -> dict[str, Any]:
    store = Store(db, busy_timeout=120)
    started = time.perf_counter()
    build(store, rows)
    store_s = time.perf_counter() - started
    result: dict[str, Any] = {"rows": rows, "store_build_s": round(store_s, 1), "index_build": _index_build(store)}
    query_samples(store, "big", limit=1)  # the column catalog, read once by the page too
    big = rows > 2_000_000  # a scan takes seconds there: fewer cases and repeats
    scan_repeat = 2 if big else repeat
    terms = ["marbles", "money", "the", "two apples"] if big else WORDS + OTHER
    cases = [_case(store, t, repeat, scan_repeat) for t in terms]
    cases.append(_case(store, "apples", repeat, scan_repeat, **FILTERED))
    result["cases"] = cases
    for case in cases:
        print(f"{rows:>10,} {case['term']!r:14} {case['answered_by']:13} {case['matches']:>9,} match  "
              f"search: index p50 {case['index']['p50_ms']:7.1f} ms p95 {case['index']['p95_ms']:7.1f}  "
              f"scan p50 {case['scan']['p50_ms']:7.1f} ms  x{case['speedup_p50']}  whole page: index "
              f"{case['page_index']['p50_ms']:7.1f} scan {case['page_scan']['p50_ms']:7.1f}  load {case['loadavg'][0]}",
              flush=True)
    store.release()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--db-dir", help="folder for the stores (kept and reused; default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--vocab", type=int, default=5_000_000)
    args = parser.parse_args()
    folder = Path(args.db_dir) if args.db_dir else Path(tempfile.mkdtemp(prefix="assay-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for rows in args.rows:
        sizes.append(run_size(rows, folder / f"search-{rows}.duckdb", args.repeat))
    vocabulary = _vocabulary_cost(args.vocab)
    print(f"vocabulary of {vocabulary['n_terms']:,} words: {vocabulary}")
    previous = RESULTS / "search_index.json"
    kept = json.loads(previous.read_text()).get("sizes", []) if previous.exists() else []
    sizes = sorted([s for s in kept if s["rows"] not in args.rows] + sizes, key=lambda s: s["rows"])
    path = write_results("search_index", {
        "command": "python -m bench.search_index --rows N [N ...] (each size's figures from its own run)",
        "target_ms": {"1M": 100, "10M": 300}, "sizes": sizes, "synthetic_vocabulary": vocabulary,
        "note": "index/scan: p50/p95 of the search step of query_samples(search=term, limit=50) (the total and "
                "the page's ids); page_index/page_scan: the whole call, which also reads the 50 rows and their "
                "meta; index and scan in the same run, same answers asserted; loadavg: the shared machine's "
                "1/5/15-min load average (2 cores)",
    })
    print(f"wrote {path}")
    if not args.db_dir:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
