"""Clusters on a 2-D projection (HDBSCAN or k-means) and readable cluster labels.

Clustering runs on the 2-D layout (as Embedding Atlas and BERTopic do after UMAP): the clusters are the
islands the user sees, and HDBSCAN on 2-D takes seconds at 100k points where 384-D takes very long.
Labels: c-TF-IDF phrases (class-based TF-IDF over word 1-3-grams that contain no stop word nor an
instruction verb, the best ones sharing no word), no LLM needed; where ASSAY_LLM_BASE_URL and ASSAY_LLM_MODEL name an OpenAI-compatible endpoint, an LLM
also writes a short title from those keywords and a few example texts.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.maps.embed import text_sql
from core.maps.project import load_projection, projection_params
from core.store.database import Store

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


# Words that say what to do, not what about: with scikit-learn's English stop words they never start,
# end or sit inside a label phrase (instruction data is full of them: "write the following ...").
INSTRUCTION_WORDS = frozenset("""
    write rewrite create generate given following provide please explain describe make use using list
    answer question questions input output need want like know help tell give example examples based new
    just really think way different sure let used does did got get gets thing things want wants ve ll don
    doesn didn isn aren won can could would should shall might must may also instruction instructions task
    response respond words word sentence sentences paragraph text article form type include includes
    following way ways good best better lot lots able important various specific simple possible
    identify suggest summarize classify compose convert find determine calculate compute name edit
    paraphrase choose select outline tasked imagine pretend assume consider come act role
    """.split())
# A word (letters, inner apostrophes or hyphens) or a punctuation mark that ends a phrase.
_TOKEN = re.compile(r"[^\W\d_](?:[\w'-]*[^\W_])?|[.,;:!?()\[\]{}\"/|\n]")
N_PHRASES = 3
PHRASE_BOOST = 0.5  # score x (1 + boost x (words - 1))


def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | INSTRUCTION_WORDS


def phrases(text: str, stop: frozenset[str], max_n: int = 3) -> list[str]:
    """Word n-grams (1..max_n) of `text` that neither cross a stop word or punctuation nor contain one:
    "write a python function that sorts a list" -> python, function, sorts, python function, ..."""
    out: list[str] = []
    run: list[str] = []
    for token in [*_TOKEN.findall(text.lower()), "."]:
        word = token.removesuffix("'s")
        if len(word) > 2 and word not in stop and "'" not in word and not word[-1].isdigit():
            run.append(word)
            continue
        if run:  # a stop word, a short word or punctuation closes the run of content words
            out += run
            if max_n > 1 and len(run) > 1:
                out += [f"{a} {b}" for a, b in zip(run, run[1:], strict=False)]
                if max_n > 2:
                    out += [f"{a} {b} {c}" for a, b, c in zip(run, run[1:], run[2:], strict=False)]
            run = []
    return out


def ctfidf_keywords(docs_by_cluster: dict[int, list[str]], n_keywords: int = N_KEYWORDS) -> dict[int, list[str]]:
    """Top phrases per cluster by c-TF-IDF over word n-grams (1-3) without stop words: per cluster the
    share of its texts holding a phrase x log(1 + mean phrase count per cluster / the phrase's count in
    all clusters); then the best phrases that share no word (so 'farmers market' and not also 'market')."""
    from sklearn.feature_extraction.text import CountVectorizer

    clusters = sorted(docs_by_cluster)
    docs = [d for c in clusters for d in docs_by_cluster[c]]
    owner = np.repeat(np.arange(len(clusters)), [len(docs_by_cluster[c]) for c in clusters])
    stop = stop_words()
    vectorizer = CountVectorizer(analyzer=lambda text: phrases(text, stop), binary=True, max_features=100_000)
    try:
        per_doc = vectorizer.fit_transform(docs).tocsc()
    except ValueError:  # no phrase at all (empty or stop words only)
        return {c: [] for c in clusters}
    from scipy import sparse

    member = sparse.csr_matrix((np.ones(len(docs)), (owner, np.arange(len(docs)))), shape=(len(clusters), len(docs)))
    df = (member @ per_doc).toarray()  # clusters x phrases: how many of the cluster's texts hold each phrase
    terms = np.asarray(vectorizer.get_feature_names_out())
    sizes = np.maximum(member.sum(axis=1).A.ravel(), 1)
    idf = np.log(1 + df.sum() / max(len(clusters), 1) / np.maximum(df.sum(axis=0), 1))
    # Longer phrases are rarer by nature: a mild boost lets a phrase that names the topic ("python code")
    # win over its single words.
    length = np.char.count(terms.astype(str), " ") + 1
    scores = df / sizes[:, None] * idf * (1 + PHRASE_BOOST * (length - 1))
    # A phrase in only one text of a sizeable cluster is an accident, not a topic.
    scores[(df < 2) & (sizes[:, None] >= 10)] = 0
    return {c: _non_overlapping(terms, scores[i], n_keywords * 3) for i, c in enumerate(clusters)}


def _stems(phrase: str) -> set[str]:
    """The words of a phrase with a plural -s dropped, so that "hour" and "hours" count as one word."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in phrase.split()}


def _non_overlapping(terms: np.ndarray, scores: np.ndarray, n: int) -> list[str]:
    """The `n` best phrases, none sharing a word with another; a phrase takes the place of the chosen
    words it contains ("python" and "code" -> "python code") when it scores at least half as well as
    the best of them (it names the topic more precisely)."""
    chosen: list[tuple[str, float]] = []
    for j in np.argsort(-scores)[: n * 30]:
        if scores[j] <= 0:
            break
        term, words = str(terms[j]), _stems(str(terms[j]))
        clash = [k for k, (t, _) in enumerate(chosen) if words & _stems(t)]
        if not clash:
            if len(chosen) < n:
                chosen.append((term, float(scores[j])))
            continue
        best = max(chosen[k][1] for k in clash)
        if all(_stems(chosen[k][0]) < words for k in clash) and scores[j] >= 0.5 * best:
            chosen[clash[0]] = (term, best)
            chosen = [c for k, c in enumerate(chosen) if k not in clash[1:]]
    return [t for t, _ in chosen]


def distinct_labels(keywords: dict[int, list[str]], n_keywords: int = N_PHRASES) -> dict[int, str]:
    """'phrase · phrase · phrase' per cluster, never empty, never shared by two clusters."""
    labels: dict[int, str] = {}
    used: set[str] = set()
    for c in sorted(keywords, key=lambda c: (c == -1, c)):
        words = keywords[c]
        label = " · ".join(words[:n_keywords]) or f"cluster {c}"
        extra = n_keywords
        while label in used and extra < len(words):  # add the next phrase until it differs
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
    with store.run("cluster", params, dataset_id=dataset_id) as run:
        t0 = time.monotonic()
        points = load_projection(store, projection_run_id)
        ids, xy = points.id.to_numpy(), points[["x", "y"]].to_numpy(np.float32)
        labels = fit_labels(xy, method, k=k, min_cluster_size=min_cluster_size, seed=seed)
        t_fit = time.monotonic() - t0
        summary = label_clusters(store, ids, xy, labels, text, use_llm=use_llm, seed=seed)
        _write(store, run.run_id, ids, labels, summary)
        run.set_metrics(seconds_fit=round(t_fit, 3), seconds=round(time.monotonic() - t0, 3))
        run.model = os.environ.get("ASSAY_LLM_MODEL") if summary.llm_label.notna().any() else None
        run.finish(len(ids))
    return run.run_id


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
