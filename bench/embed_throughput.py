"""Embedding throughput on real GSM8K questions: plain SentenceTransformer.encode vs Assay's default path
(core.maps.embed.embed into a store, cache cold) vs the ONNX fp32 and ONNX int8 paths, with agreement figures.

    .venv/bin/python -m bench.embed_throughput [--n 1000]   -> bench/results/embed_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import shared_dir, write_results

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each text's k nearest neighbours that both vector sets agree on."""
    def top(v: np.ndarray) -> np.ndarray:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k, axis=1)[:, :k]

    ta, tb = top(a), top(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)]))


def timed(fn, texts):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    out = fn(texts)
    return out, len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    from core.ingest.importer import ingest_records
    from core.maps.embed import OnnxEmbedder, embed, get_embedder, load_vectors
    from core.store.database import Store

    rows = [json.loads(line) for line in (shared_dir() / "gsm8k" / "train.jsonl").open()][: args.n]
    texts = [r["question"] for r in rows]
    reference = get_embedder()  # loads the model (not timed)
    st = reference._st  # noqa: SLF001
    st.encode(texts[:32])  # warm up
    plain, plain_tps = timed(lambda t: st.encode(t, batch_size=32, normalize_embeddings=True), texts)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        ingest_records(store, rows, name="gsm8k", shape="qa")
        start = time.perf_counter()
        report = embed(store, "gsm8k")
        default_tps = len(texts) / (time.perf_counter() - start)
        _, default_vectors = load_vectors(store, report.run_id)
        start = time.perf_counter()
        cached = embed(store, "gsm8k")
        cached_seconds = time.perf_counter() - start

    results = {"n_texts": len(texts), "data": "gsm8k train questions",
               "plain_encode": {"texts_per_s": round(plain_tps, 1), "batch_size": 32},
               "assay_default_torch": {"texts_per_s": round(default_tps, 1), "incl": "store reads+writes, commits",
                                       "mean_cosine_to_plain": float((default_vectors * plain).sum(1).mean())},
               "assay_cached_rerun": {"seconds": round(cached_seconds, 3), "n_cached": cached.n_cached}}
    for name, int8 in (("onnx_fp32", False), ("onnx_int8", True)):
        fast = OnnxEmbedder(int8=int8)
        fast.encode(texts[:32])
        vectors, tps = timed(fast.encode, texts)
        cos = (vectors * plain).sum(1)
        results[name] = {"texts_per_s": round(tps, 1), "speedup_vs_plain": round(tps / plain_tps, 2),
                         "mean_cosine": round(float(cos.mean()), 4), "min_cosine": round(float(cos.min()), 4),
                         "knn10_overlap": round(knn_overlap(vectors, plain), 3)}
    path = write_results("embed_throughput", results)
    print(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
