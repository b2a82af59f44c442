"""Map scale: (1) server time to build the map figure and bytes of its JSON at 10k, 100k and 1M points
(synthetic 2-D points, the point budget and density-preserving downsampling on); (2) the heavy path on
100,000 x 384 vectors: k-NN graph, UMAP, HDBSCAN, c-TF-IDF labels, with time and peak memory.

    .venv/bin/python -m bench.map_scale [--vectors 100000] [--skip-umap]   -> bench/results/map_scale.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from bench.common import peak_rss_mb, write_results

WORDS = ("apple orange money cost price python code function bug server river mountain travel city music song "
         "guitar recipe flour sugar oven planet orbit star galaxy law court contract tax health doctor fever "
         "cell football goal match team poem verse rhyme story dragon castle").split()


def synthetic_points(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, size=(40, 2))
    which = rng.integers(0, 40, n)
    xy = centres[which] + rng.normal(0, 1, size=(n, 2))
    return pd.DataFrame({"id": np.arange(n), "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32),
                         "cluster": which, "title": [f"topic {c}" for c in which] if n <= 100_000 else "topic",
                         "dataset": "synthetic", "n_tokens": rng.integers(5, 800, n),
                         "preview": "A sample text of about sixty characters, as the hover shows it."})


def figure_bench() -> list[dict]:
    from core.maps.figures import map_figure

    out = []
    for n in (10_000, 100_000, 1_000_000):
        points = synthetic_points(n)
        labels = points.groupby("cluster").agg(x=("x", "median"), y=("y", "median"), size=("id", "size"))
        labels = labels.reset_index().assign(title=lambda d: "topic " + d.cluster.astype(str))
        for color in ("cluster", "n_tokens"):
            start = time.perf_counter()
            fig, info = map_figure(points, color=color, labels=labels, density=True)
            payload = fig.to_json()  # what st.plotly_chart serialises
            seconds = time.perf_counter() - start
            out.append({"points": n, "color": color, "shown": info.shown, "hover_text": info.hover_text,
                        "seconds_build_and_serialise": round(seconds, 3), "json_bytes": len(payload),
                        "json_mb": round(len(payload) / 1e6, 2)})
            print(out[-1], flush=True)
    return out


def heavy_bench(n: int) -> dict:
    from core.maps.cluster import ctfidf_keywords, distinct_labels, fit_labels
    from core.maps.neighbours import approximate_knn
    from core.maps.project import umap_2d

    rng = np.random.default_rng(1)
    topics = rng.integers(0, 60, n)
    centres = rng.normal(size=(60, 384)).astype(np.float32)
    vectors = centres[topics] + 0.6 * rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(WORDS[(t % 10) * 4:(t % 10) * 4 + 6], 8)) for t in topics]
    times = {}
    start = time.perf_counter()
    idx, dist = approximate_knn(vectors, 15)
    times["knn_graph_s"] = time.perf_counter() - start
    t = time.perf_counter()
    xy = umap_2d(vectors, (idx, dist), n_neighbors=15, seed=None)  # unseeded: all cores
    times["umap_s (incl. numba JIT)"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = fit_labels(xy, "hdbscan")
    times["hdbscan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    docs = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)[:1500]
        docs[int(c)] = [texts[i] for i in members]
    names = distinct_labels(ctfidf_keywords(docs))
    times["labels_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - start
    return {"vectors": n, "dims": 384, "n_clusters": int(len(set(labels)) - (-1 in labels)),
            "labels_distinct": len(set(names.values())) == len(names),
            **{k: round(v, 2) for k, v in times.items()}, "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--skip-umap", action="store_true")
    args = parser.parse_args()
    results: dict = {"figure": figure_bench()}
    if not args.skip_umap:
        results["umap_hdbscan_labels"] = heavy_bench(args.vectors)
        print(results["umap_hdbscan_labels"], flush=True)
    path = write_results("map_scale", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
