"""Embedding throughput on real GSM8K questions: plain SentenceTransformer.encode vs Assay's default path
(core.maps.embed.embed into a store, cache cold: ONNX fp32 on a CPU) vs Assay's torch path vs the raw ONNX fp32
and int8 models, with agreement figures. The int8 agreement (mean cosine, 10-NN overlap to fp32) is also
written to core/maps/embed_agreement.json, which the CLI's --backend help and the Map page quote.

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


def store_run(rows: list[dict], folder: Path, backend: str) -> tuple[float, np.ndarray, dict]:
    """texts/s of core.maps.embed.embed (store reads and writes, commits included) into a fresh store."""
    from core.ingest.importer import ingest_records
    from core.maps.embed import embed, load_vectors
    from core.store.database import Store

    store = Store(folder / f"bench-{backend}.duckdb")
    ingest_records(store, rows, name="gsm8k", shape="qa")
    start, cpu = time.perf_counter(), time.process_time()
    report = embed(store, "gsm8k", backend=backend)
    wall = time.perf_counter() - start
    _, vectors = load_vectors(store, report.run_id)
    return len(rows) / wall, vectors, {"computed_with": report.computed_with, "cpu_s": round(time.process_time() - cpu, 1),
                                       "wall_s": round(wall, 1), "fallback_reason": report.fallback_reason}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    import core.maps.onnx_models as onnx_models
    from core.maps.embed import DEFAULT_MODEL, OnnxEmbedder, get_embedder, onnx_dir, record_agreement

    rows = [json.loads(line) for line in (shared_dir() / "gsm8k" / "train.jsonl").open()][: args.n]
    texts = [r["question"] for r in rows]
    load_before = os.getloadavg()
    reference = get_embedder(backend="torch")  # loads the model (not timed)
    st = reference._st  # noqa: SLF001
    st.encode(texts[:32])  # warm up
    plain, plain_tps = timed(lambda t: st.encode(t, batch_size=32, normalize_embeddings=True), texts)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ASSAY_ONNX_DIR"] = str(Path(tmp) / "onnx")  # a cold export: time it once
        start = time.perf_counter()
        onnx_models.ensure_export(DEFAULT_MODEL, onnx_dir(), "fp32")
        export_s = time.perf_counter() - start
        get_embedder().encode(texts[:32])  # load + warm up the default embedder (not timed)
        default_tps, default_vectors, default_info = store_run(rows, Path(tmp), "auto")
        torch_tps, torch_vectors, torch_info = store_run(rows, Path(tmp), "torch")
        results = {"n_texts": len(texts), "data": "gsm8k train questions",
                   "plain_encode": {"texts_per_s": round(plain_tps, 1), "batch_size": 32},
                   "assay_default_auto": {"texts_per_s": round(default_tps, 1), **default_info,
                                          "incl": "store reads+writes, commits",
                                          "max_abs_diff_to_plain": float(np.abs(default_vectors - plain).max())},
                   "assay_torch": {"texts_per_s": round(torch_tps, 1), **torch_info,
                                   "max_abs_diff_to_plain": float(np.abs(torch_vectors - plain).max())},
                   "onnx_fp32_export_s (once per model revision and store folder, incl. the check against torch)":
                       round(export_s, 1)}
        for name, int8 in (("onnx_fp32", False), ("onnx_int8", True)):
            fast = OnnxEmbedder(int8=int8)
            fast.encode(texts[:32])
            vectors, tps = timed(fast.encode, texts)
            cos = (vectors * plain).sum(1)
            results[name] = {"texts_per_s": round(tps, 1), "speedup_vs_plain": round(tps / plain_tps, 2),
                             "mean_cosine": round(float(cos.mean()), 4), "min_cosine": round(float(cos.min()), 4),
                             "max_abs_diff": float(np.abs(vectors - plain).max()),
                             "knn10_overlap": round(knn_overlap(vectors, plain), 3)}
    results["load_average_before_after"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    int8 = results["onnx_int8"]
    record_agreement(DEFAULT_MODEL, "onnx-int8", {
        "mean_cosine": int8["mean_cosine"], "min_cosine": int8["min_cosine"], "knn10_overlap": int8["knn10_overlap"],
        "n_texts": len(texts), "data": "GSM8K train questions", "command": "python -m bench.embed_throughput",
        "measured_at": time.strftime("%Y-%m-%d"), "texts_per_s_int8": int8["texts_per_s"],
        "texts_per_s_fp32": results["onnx_fp32"]["texts_per_s"]})
    path = write_results("embed_throughput", results)
    print(json.dumps(results, indent=2))
    print(f"wrote {path} and core/maps/embed_agreement.json")


if __name__ == "__main__":
    main()
