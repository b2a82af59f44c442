"""Run every benchmark in turn: `python -m bench.run_all [--only NAME ...]`.

Each benchmark prints its figures and writes bench/results/NAME.json. They are long (minutes each, the
ingest and mixture ones build million-row stores); run one with `python -m bench.NAME`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = ("ingest_bench", "hostile_input", "browse_page", "browse_signals", "search_index", "embed_throughput",
              "time_to_first_answer", "map_scale", "map_draw", "umap_compile", "tagging", "label_latency", "noise",
              "dedup_contamination", "mixture_export", "scale")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"=== bench.{name}", flush=True)
        started = time.perf_counter()
        if subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode != 0:
            failed.append(name)
        print(f"=== bench.{name}: {time.perf_counter() - started:.0f}s", flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
