"""Clusters on a 2-D projection (HDBSCAN or k-means) and readable cluster labels.

Clustering runs on the 2-D layout (as Embedding Atlas and BERTopic do after UMAP): the clusters are the
islands the user sees, and HDBSCAN on 2-D takes seconds at 100k points where 384-D takes very long.
Labels: c-TF-IDF keywords (class-based TF-IDF over the cluster texts, English stop words removed), no
LLM needed; where ASSAY_LLM_BASE_URL and ASSAY_LLM_MODEL name an OpenAI-compatible endpoint, an LLM
also writes a short title from those keywords and a few example texts.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.embed import text_sql
from core.project import load_projection, projection_params
from core.store import Store

METHODS = ("hdbscan", "kmeans")
DOCS_PER_CLUSTER = 1500  # texts per cluster read for keywords: enough for stable terms, fast at 1M points
N_KEYWORDS = 4


def fit_labels(xy: np.ndarray, method: str = "hdbscan", *, k: int | None = None,
               min_cluster_size: int | None = None, seed: int = 42) -> np.ndarray:
    """Cluster ids per point (-1: HDBSCAN noise)."""
    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if method == "kmeans":
        from sklearn.cluster import KMeans, MiniBatchKMeans

        k = max(1, min(k or max(2, int(np.sqrt(n / 2))), n))
        model = (MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096) if n > 20_000
                 else KMeans(n_clusters=k, random_state=seed, n_init=4))
        return model.fit_predict(xy).astype(np.int32)
    if method != "hdbscan":
        raise ValueError(f"clusters must be one of {', '.join(METHODS)}; got {method!r}")
    from sklearn.cluster import HDBSCAN

    size = min_cluster_size or max(5, n // 100)
    return HDBSCAN(min_cluster_size=min(size, max(2, n)), min_samples=min(10, size), copy=True).fit_predict(xy).astype(np.int32)


def ctfidf_keywords(docs_by_cluster: dict[int, list[str]], n_keywords: int = N_KEYWORDS) -> dict[int, list[str]]:
    """Top terms per cluster by c-TF-IDF: term frequency in the cluster x log(1 + avg words / term freq)."""
    from sklearn.feature_extraction.text import CountVectorizer

    clusters = sorted(docs_by_cluster)
    joined = [" ".join(docs_by_cluster[c]) for c in clusters]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9_-]{2,}\b",
                                 ngram_range=(1, 1), max_features=50_000, lowercase=True)
    try:
        counts = vectorizer.fit_transform(joined).astype(np.float64)
    except ValueError:  # no terms at all (empty or stop words only)
        return {c: [] for c in clusters}
    terms = np.asarray(vectorizer.get_feature_names_out())
    tf = counts.multiply(1.0 / np.maximum(counts.sum(axis=1), 1)).tocsr()
    average = counts.sum() / max(len(clusters), 1)
    idf = np.log(1 + average / np.maximum(np.asarray(counts.sum(axis=0)).ravel(), 1))
    scores = tf.multiply(idf).toarray()
    return {c: [str(terms[j]) for j in np.argsort(-scores[i])[:n_keywords * 3] if scores[i, j] > 0]
            for i, c in enumerate(clusters)}


def distinct_labels(keywords: dict[int, list[str]], n_keywords: int = N_KEYWORDS) -> dict[int, str]:
    """'kw1 · kw2 · kw3' per cluster, never empty, never shared by two clusters."""
    labels: dict[int, str] = {}
    used: set[str] = set()
    for c in sorted(keywords, key=lambda c: (c == -1, c)):
        words = keywords[c]
        label = " · ".join(words[:n_keywords]) or f"cluster {c}"
        extra = n_keywords
        while label in used and extra < len(words):  # add the next keyword until it differs
            extra += 1
            label = " · ".join(words[:extra])
        if label in used:
            label = f"{label} ({c})"
        if c == -1:
            label = f"unclustered: {label}"
        used.add(label)
        labels[c] = label
    return labels


def llm_label(keywords: list[str], examples: list[str], *, timeout: float = 30.0) -> str | None:
    """A short title from an OpenAI-compatible endpoint, or None when none is configured or it fails."""
    base, model = os.environ.get("ASSAY_LLM_BASE_URL"), os.environ.get("ASSAY_LLM_MODEL")
    if not base or not model:
        return None
    prompt = ("Give a short title (at most 6 words) for a cluster of training examples.\nKeywords: "
              + ", ".join(keywords) + "\nExamples:\n" + "\n".join(f"- {e[:300]}" for e in examples[:5])
              + "\nAnswer with the title only.")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "temperature": 0, "max_tokens": 24}).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("ASSAY_LLM_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['ASSAY_LLM_API_KEY']}"
    request = urllib.request.Request(base.rstrip("/") + "/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())["choices"][0]["message"]["content"]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return " ".join(str(answer).strip().strip('"').split())[:80] or None


def _cluster_texts(store: Store, ids: np.ndarray, labels: np.ndarray, text_field: str, seed: int) -> dict[int, list[str]]:
    """Up to DOCS_PER_CLUSTER texts per cluster (a seeded sample), read in one query."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        members = ids[labels == c]
        chosen.append(rng.choice(members, size=min(len(members), DOCS_PER_CLUSTER), replace=False))
    pick = pd.DataFrame({"id": np.concatenate(chosen) if chosen else np.zeros(0, np.int64)})
    pick["cluster"] = pd.Series(labels, index=ids).reindex(pick.id).to_numpy()
    table = pa.Table.from_pandas(pick, preserve_index=False)  # noqa: F841 - read by DuckDB
    with store.connect() as con:
        con.register("pick", table)
        rows = con.execute(f"SELECT p.cluster, left({text_sql(text_field)}, 2000) AS text FROM pick p "
                           "JOIN samples s ON s.id = p.id").df()
    return {int(c): group.text.tolist() for c, group in rows.groupby("cluster")}


def cluster(
    store: Store,
    projection_run_id: int,
    *,
    method: str = "hdbscan",
    k: int | None = None,
    min_cluster_size: int | None = None,
    text: str | None = None,
    use_llm: bool = True,
    seed: int = 42,
) -> int:
    """Cluster a projection and label every cluster; a recorded run (tables clusters, cluster_labels)."""
    proj = projection_params(store, projection_run_id)
    emb = store.query_df("SELECT e.text_field, r.dataset_id, e.model_key FROM embedding_runs e JOIN runs r "
                         "USING (run_id) WHERE run_id = ?", [proj["embedding_run_id"]]).iloc[0]
    text = text or emb.text_field
    params = {"projection_run_id": projection_run_id, "embedding_run_id": proj["embedding_run_id"],
              "method": method, "k": k, "min_cluster_size": min_cluster_size, "text": text, "seed": seed}
    dataset_id = None if pd.isna(emb.dataset_id) else int(emb.dataset_id)
    run_id = store.start_run("cluster", dataset_id=dataset_id, params=params)
    try:
        t0 = time.monotonic()
        points = load_projection(store, projection_run_id)
        ids, xy = points.id.to_numpy(), points[["x", "y"]].to_numpy(np.float32)
        labels = fit_labels(xy, method, k=k, min_cluster_size=min_cluster_size, seed=seed)
        t_fit = time.monotonic() - t0
        summary = label_clusters(store, ids, xy, labels, text, use_llm=use_llm, seed=seed)
        _write(store, run_id, ids, labels, summary)
        timing = {"seconds_fit": round(t_fit, 3), "seconds": round(time.monotonic() - t0, 3)}
        with store.transaction() as con:
            con.execute("UPDATE runs SET params = json_merge_patch(params, ?::JSON), model = ? WHERE run_id = ?",
                        [json.dumps(timing), os.environ.get("ASSAY_LLM_MODEL") if summary.llm_label.notna().any()
                         else None, run_id])
            store.finish_run(run_id, n_samples=len(ids), con=con)
    except BaseException as exc:
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return run_id


def label_clusters(store: Store, ids: np.ndarray, xy: np.ndarray, labels: np.ndarray, text_field: str,
                   *, use_llm: bool = True, seed: int = 42) -> pd.DataFrame:
    """One row per cluster: cluster, size, label, keywords, llm_label, x, y (the label's position)."""
    texts = _cluster_texts(store, ids, labels, text_field, seed)
    keywords = ctfidf_keywords(texts)
    names = distinct_labels(keywords)
    rows = []
    for c in sorted(names):
        members = labels == c
        cx, cy = np.median(xy[members], axis=0) if members.any() else (np.nan, np.nan)
        llm = llm_label(keywords[c][:8], texts.get(c, [])) if use_llm and c != -1 else None
        rows.append({"cluster": c, "size": int(members.sum()), "label": names[c], "keywords": keywords[c][:10],
                     "llm_label": llm, "x": float(cx), "y": float(cy)})
    return pd.DataFrame(rows, columns=["cluster", "size", "label", "keywords", "llm_label", "x", "y"])


def _write(store: Store, run_id: int, ids: np.ndarray, labels: np.ndarray, summary: pd.DataFrame) -> None:
    table = pa.table({"sample_id": pa.array(ids, pa.int64()), "cluster": pa.array(labels, pa.int32())})  # noqa: F841
    with store.transaction() as con:
        con.register("assigned", table)
        con.execute("INSERT INTO clusters SELECT ?, sample_id, cluster FROM assigned", [run_id])
        con.register("summary", summary)
        con.execute("INSERT INTO cluster_labels SELECT ?, cluster, size, label, keywords, llm_label, x, y FROM summary",
                    [run_id])


def cluster_table(store: Store, cluster_run_id: int) -> pd.DataFrame:
    """The clusters of a run with their sizes and labels (LLM title where there is one), largest first."""
    return store.query_df(
        "SELECT cluster, size, coalesce(llm_label, label) AS title, label, keywords, x, y FROM cluster_labels "
        "WHERE run_id = ? ORDER BY size DESC", [cluster_run_id])


def params_of(store: Store, run_id: int) -> dict[str, Any]:
    df = store.query_df("SELECT params FROM runs WHERE run_id = ?", [run_id])
    return json.loads(df.params[0]) if len(df) else {}
