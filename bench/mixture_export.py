"""Benchmark: export a 1,000,000-sample mixture from a 2,000,000-sample store, with filters, per-source
quotas (proportions) and exact de-duplication. Prints figures and writes bench/results/mixture_export.json.

The store is built once (and reused) from real shared data repeated with new ids: GSM8K questions and
Alpaca-GPT4 instructions, each repeated as variants ("... (variant k)"), with 1 in 20 rows an exact repeat
so that de-duplication has work to do. The export itself runs in a fresh process so its peak memory is
its own.

    .venv/bin/python -m bench.mixture_export [--rows 2000000] [--work /tmp/assay-bench-mix]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import peak_rss_mb, run_isolated, shared_dir, write_results

RECIPE = """
name: bench-1m
seed: 1
sources:
  - dataset: bench-math
    filters:
      - {field: n_tokens, op: le, value: 400}
      - {field: meta.level, op: in, value: [0, 1, 2, 3]}
  - dataset: bench-chat
    filters:
      - {field: meta.level, op: ge, value: 1}
targets: {total: TOTAL, by: source, proportions: {bench-math: 0.6, bench-chat: 0.4}}
dedup: {run: DEDUP_RUN}
export: {formats: [openai, parquet]}
"""


def _variants(records: list[dict], keys: tuple[str, ...], n: int) -> pa.Table:
    """n rows cycling over records; row i is variant i // 20 * 20 (so 1 row in 20 repeats the one before)."""
    base = len(records)
    cols: dict[str, list] = {k: [] for k in keys}
    cols["level"] = []
    for i in range(n):
        rec = records[i % base]
        variant = (i // base) - (1 if (i // base) % 20 == 19 else 0)
        cols[keys[0]].append(f"{rec[keys[0]]} (variant {variant})")
        for k in keys[1:]:
            cols[k].append(rec[k])
        cols["level"].append(i % 5)
    return pa.table(cols)


def build(store_path: Path, work: Path, rows: int) -> dict:
    from core.ingest.importer import ingest
    from core.store.database import Store

    shared = shared_dir()
    math = [json.loads(x) for x in (shared / "gsm8k/train.jsonl").read_text().splitlines()]
    math += [json.loads(x) for x in (shared / "gsm8k/test.jsonl").read_text().splitlines()]
    chat = json.loads((shared / "alpaca-gpt4-demo-1k/alpaca_en_demo.json").read_text())
    half = rows // 2
    store = Store(store_path, busy_timeout=60)
    timings = {}
    for name, records, keys, shape in (("bench-math", math, ("question", "answer"), "qa"),
                                       ("bench-chat", chat, ("instruction", "input", "output"), "alpaca")):
        path = work / f"{name}.parquet"
        pq.write_table(_variants(records, keys, half), path)
        t0 = time.perf_counter()
        ingest(store, path, name=name, shape=shape, license="MIT")
        timings[name] = round(time.perf_counter() - t0, 1)
        path.unlink()
    return {"ingest_seconds": timings}


def child(store_path: str, recipe_path: str, out: str) -> None:
    from core.mixture.export import export_mixture
    from core.mixture.recipe import load_recipe
    from core.store.database import Store

    t0 = time.perf_counter()
    result = export_mixture(Store(store_path, busy_timeout=60), load_recipe(Path(recipe_path)), out, overwrite=True)
    seconds = time.perf_counter() - t0
    sizes = {f["path"]: f["bytes"] for f in result.files}
    print(json.dumps({"seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb()), "samples": result.composition.n_selected,
                      "tokens": result.composition.n_tokens, "files": sizes,
                      "filters": result.composition.filter_counts.to_dict("records")}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--work", default="/tmp/assay-bench-mix")
    parser.add_argument("--child", nargs=3, metavar=("STORE", "RECIPE", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from core.dedup.groups import find_duplicates
    from core.store.database import Store

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store_path = work / f"store-{args.rows}.duckdb"
    results: dict = {"rows_in_store": args.rows}
    if not store_path.exists():
        results["build"] = build(store_path, work, args.rows)
    store = Store(store_path, busy_timeout=60)
    runs = store.query_df("SELECT run_id FROM runs WHERE kind = 'dedup' AND status = 'finished' ORDER BY run_id DESC")
    if runs.empty:
        t0 = time.perf_counter()
        dedup = find_duplicates(store, ["bench-math", "bench-chat"], method="exact")
        results["exact_dedup_run"] = {"seconds": round(time.perf_counter() - t0, 1), "groups": dedup.n_groups,
                                      "to_drop": dedup.n_to_drop}
        run_id = dedup.run_id
    else:
        run_id = int(runs.run_id[0])
    recipe_path = work / "recipe.yaml"
    recipe_path.write_text(RECIPE.replace("DEDUP_RUN", str(run_id)).replace("TOTAL", str(args.rows // 2)))
    out = work / "export"
    shutil.rmtree(out, ignore_errors=True)
    results["export"] = run_isolated("bench.mixture_export", "--child", str(store_path), str(recipe_path), str(out))
    print(json.dumps(results, indent=2))
    path = write_results("mixture_export", results)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
