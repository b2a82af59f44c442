"""Local engine vs Ray with two workers, same machine, same run: embedding real GSM8K questions.

    .venv/bin/python -m bench.scale [--samples 600] [--rows-per-shard 100]

Each engine gets its own copy of the same store (so neither finds the other's vectors in the cache) and
embeds the same texts with the same model; both figures come from this one process run, one after the
other, so the ratio compares like with like on this machine at this moment. The machine's load average
is recorded beside them: on a shared 2-core machine other work changes both figures.
Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import shared_dir, write_results


def _store(folder: Path, records: list[dict]):  # noqa: ANN202
    from core.ingest.importer import ingest_records
    from core.store.database import Store

    store = Store(folder / "store.duckdb")
    ingest_records(store, records, name="gsm8k-bench", shape="qa", license="MIT")
    return store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--rows-per-shard", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from core.scale import EmbedStep, init_ray, run_step

    with open(shared_dir() / "gsm8k" / "train.jsonl") as f:
        records = [json.loads(line) for line in itertools.islice(f, args.samples)]
    tmp = Path(tempfile.mkdtemp(prefix="assay-bench-scale-"))
    results: dict[str, dict] = {}
    try:
        init_ray(num_cpus=os.cpu_count())  # started before timing: cluster start-up is not the step's cost
        for engine in ("local", "ray"):
            folder = tmp / engine
            folder.mkdir()
            store = _store(folder, records)
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            report = run_step(EmbedStep(), store, "gsm8k-bench", engine=engine, num_workers=args.workers,
                              rows_per_shard=args.rows_per_shard, job_dir=folder / "job")
            wall = time.monotonic() - t0
            compute = sum(c["seconds"] for c in _computations(report.job_dir))
            results[engine] = {"samples": report.n_rows, "shards": report.n_shards, "workers": report.workers,
                               "wall_s": round(wall, 2), "samples_per_s": round(report.n_rows / wall, 1),
                               "shard_compute_s_summed": round(compute, 2), "load_average_before": load}
            print(engine, results[engine], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = results["ray"]["samples_per_s"] / results["local"]["samples_per_s"]
    out = {"step": "embed (all-MiniLM-L6-v2, torch fp32, CPU, first user turn of GSM8K train)",
           "engines": results, "ray_over_local_throughput": round(ratio, 3),
           "note": "wall time includes export from the store, model loading (once per Ray actor), the step, "
                   "and import into the store; local Ray started before timing"}
    print(json.dumps(out, indent=2))
    print("wrote", write_results("scale", out))


def _computations(job_dir: str) -> list[dict]:
    from core.scale import Job

    return Job.load(job_dir).computations()


if __name__ == "__main__":
    main()
