"""UMAP in a new process: umap-learn's numba compilation kept on disk (core.maps.project.cache_umap_compilation)
against compiling it again in every process (umap-learn as shipped).

Each figure is one fresh Python process projecting n random unit vectors (cosine k-NN graph given, as the
Map page does) with a numba cache folder of its own: "cold" is the first process (compiles and writes the
cache), "cached" the next one (reads it), "as shipped" a process that never enables the cache.

    .venv/bin/python -m bench.umap_compile [--sizes 80 3000]   -> bench/results/umap_compile.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from bench.common import ROOT, write_results

CHILD = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from sklearn.neighbors import NearestNeighbors
import core.maps.project as project
if sys.argv[2] == "shipped":
    project.cache_umap_compilation = lambda: []
n = int(sys.argv[1])
x = np.random.default_rng(0).normal(size=(n, 384)).astype("float32")
x /= np.linalg.norm(x, axis=1, keepdims=True)
d, i = NearestNeighbors(n_neighbors=16, metric="cosine").fit(x).kneighbors(x)
started = time.perf_counter()
y = project.umap_2d(x, (i, d.astype("float32")))
print(json.dumps({"umap_s": round(time.perf_counter() - started, 2), "first": y[0].tolist()}))
"""


def _child(n: int, mode: str, cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), mode], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="*", type=int, default=[80, 3000])
    args = parser.parse_args()
    results = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as cache:
            cold = _child(n, "cached", cache)
            cached = _child(n, "cached", cache)
            shipped = _child(n, "shipped", cache)
        assert cold["first"] == cached["first"] == shipped["first"], "the cache changed the projection"
        results[str(n)] = {"cold_s": cold["umap_s"], "cached_s": cached["umap_s"], "as_shipped_s": shipped["umap_s"],
                           "speedup_vs_as_shipped": round(shipped["umap_s"] / cached["umap_s"], 1)}
        print(f"{n:>6} points: cold {cold['umap_s']} s, cached {cached['umap_s']} s, as shipped "
              f"{shipped['umap_s']} s ({results[str(n)]['speedup_vs_as_shipped']}x); identical projections")
    print(write_results("umap_compile", {"sizes": results, "load_avg": os.getloadavg()}))


if __name__ == "__main__":
    main()
