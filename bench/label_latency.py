"""Labelling latency in a real browser on a 100,000-sample dataset, and label write throughput.

    .venv/bin/python -m bench.label_latency [--samples 100000] [--presses 30]

Builds the dataset by repeating GSM8K train (real data, new ids) through core.ingest.importer, starts the
workbench, names an annotator, then times Enter (submit a picked label) -> the next sample's id shown,
measured from Python around the key press. Then 8 threads write labels through core.labels.labelling.record_label
(the page's path) and one bulk write of 1,000 samples. Writes bench/results/label_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import core.labels.labelling as L
from core.ingest.importer import ingest
from core.store.database import Store
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, _stop, start_workbench

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASSAY_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "bench" / "results"
SCHEMA = {"name": "task", "fields": [{"name": "category", "vocabulary": "magpie_task_category"}]}
IDLE = "() => document.querySelector('[data-test-script-state]')?.getAttribute('data-test-script-state') === 'notRunning'"
SHOWN = "() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')].map(e => e.innerText).find(t => t.startsWith('sample ')) || ''"


def build_store(folder: Path, n: int) -> Store:
    store = Store(folder / "bench.duckdb", busy_timeout=60)
    rows = [json.loads(line) for line in (SHARED / "gsm8k" / "train.jsonl").read_text().splitlines()]
    src = folder / "gsm8k_x.jsonl"
    with src.open("w") as out:
        for i in range(n):
            out.write(json.dumps({**rows[i % len(rows)], "id": f"rep{i // len(rows)}-{i % len(rows)}"}) + "\n")
    t0 = time.perf_counter()
    ingest(store, src, name="gsm8k-100k", shape="qa", license="MIT")
    print(f"ingested {n} samples in {time.perf_counter() - t0:.1f}s")
    L.save_schema(store, L.parse_schema(SCHEMA))
    return store


def browser_latency(store: Store, presses: int, log: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    proc, url = start_workbench(store.path, log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.goto(url + "/Label")
            page.get_by_label("Your name").fill("bench")
            page.get_by_role("button", name="Start labelling").click()
            page.get_by_text("Progress (bench)").wait_for()
            page.evaluate("document.activeElement && document.activeElement.blur()")
            times = []
            for i in range(presses + 2):
                page.wait_for_function(IDLE)
                page.keyboard.press("6")
                page.locator("[data-testid=stBaseButton-primary]", has_text="6 · Math").wait_for()
                page.wait_for_function(IDLE)
                before = page.evaluate(SHOWN)
                t0 = time.perf_counter()
                page.keyboard.press("Enter")
                page.wait_for_function(f"(b) => ({SHOWN})() !== b", arg=before, polling="raf")
                if i >= 2:  # the first presses warm caches
                    times.append((time.perf_counter() - t0) * 1000)
            browser.close()
    finally:
        _stop(proc)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "min_ms": times[0], "max_ms": times[-1], "presses": len(times)}


def write_throughput(store: Store, threads: int = 8, per_thread: int = 100) -> dict[str, float]:
    schema = L.get_schema(store, "task")
    ids = store.query_df("SELECT id FROM samples ORDER BY row_idx LIMIT ?", [per_thread])["id"].tolist()

    def work(k: int) -> None:
        for sid in ids:
            L.record_label(store, schema, sid, {"category": "Math"}, annotator=f"writer-{k}", origin="api")

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - t0
    bulk_ids = store.query_df("SELECT id FROM samples ORDER BY row_idx LIMIT 1000")["id"].tolist()
    t1 = time.perf_counter()
    L.record_bulk(store, schema, bulk_ids, {"category": "Math"}, annotator="bulk-writer")
    bulk = time.perf_counter() - t1
    return {"threads": threads, "labels": threads * per_thread, "seconds": seconds,
            "labels_per_s": threads * per_thread / seconds, "bulk_1000_seconds": bulk}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--presses", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = build_store(folder, args.samples)
        latency = browser_latency(store, args.presses, folder / "streamlit.log")
        print(f"key press -> next sample: median {latency['median_ms']:.0f} ms, p90 {latency['p90_ms']:.0f} ms")
        writes = write_throughput(store)
        print(f"writes: {writes['labels_per_s']:.0f} labels/s from {writes['threads']} threads; "
              f"bulk 1,000 in {writes['bulk_1000_seconds']:.2f}s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"samples": args.samples, "latency": latency, "writes": writes, "target_median_ms": 300,
              "machine": f"{os.cpu_count()} cores", "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (RESULTS / "label_latency.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
