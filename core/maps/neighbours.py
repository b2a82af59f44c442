"""Nearest neighbours over an embedding run: the k-NN graph (shared by UMAP), neighbours of a sample,
free-text semantic search and hybrid search (filter first, then vector top-k on the survivors).

Exact (one matrix product, vectors are L2-normalised so cosine = dot) below EXACT_LIMIT vectors, a
pynndescent index above it (already installed with umap-learn). Loaded vectors and indexes are kept per
process for the last few runs, so repeated searches on the page cost milliseconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.maps.embed import embed_run_info, get_embedder, load_vectors, onnx_dir
from core.store.database import Store

EXACT_LIMIT = 50_000
_BLOCK = 2048  # rows per block of the exact k-NN graph: 2048 x n floats at a time


class VectorIndex:
    """The vectors of one embedding run with exact or approximate top-k queries."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, *, exact: bool | None = None) -> None:
        self.ids, self.vectors = ids, vectors
        self.position = pd.Series(np.arange(len(ids)), index=ids)
        self.exact = len(ids) <= EXACT_LIMIT if exact is None else exact
        self._nnd = None

    def _ann(self):  # noqa: ANN202 - pynndescent type
        if self._nnd is None:
            from pynndescent import NNDescent

            self._nnd = NNDescent(self.vectors, metric="cosine", n_neighbors=30, random_state=0, low_memory=True)
            self._nnd.prepare()
        return self._nnd

    def query(self, vector: np.ndarray, k: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cosine similarities) of the top k, best first; restricted to `candidates` positions."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if candidates is not None:
            return _top(self.vectors[candidates] @ vector, k, candidates)
        if self.exact:
            return _top(self.vectors @ vector, k, None)
        positions, dists = self._ann().query(vector[None, :], k=min(k, len(self.ids)))
        return positions[0], 1.0 - dists[0]


def _top(scores: np.ndarray, k: int, positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    part = np.argpartition(-scores, k - 1)[:k]
    best = part[np.argsort(-scores[part], kind="stable")]
    return (best if positions is None else positions[best]), scores[best]


_indexes: OrderedDict[tuple[str, int], VectorIndex] = OrderedDict()
_lock = threading.Lock()


def get_index(store: Store, run_id: int) -> VectorIndex:
    """The (cached) index of an embedding run; the last 3 runs stay in memory."""
    key = (str(store.path.resolve()), int(run_id))
    with _lock:
        if key in _indexes:
            _indexes.move_to_end(key)
            return _indexes[key]
    ids, vectors = load_vectors(store, run_id)
    index = VectorIndex(ids, vectors)
    with _lock:
        _indexes[key] = index
        while len(_indexes) > 3:
            _indexes.popitem(last=False)
    return index


# ---- the k-NN graph ---------------------------------------------------------------------------


def exact_knn(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN (positions, cosine distances), blockwise so memory stays at _BLOCK x n."""
    n = len(vectors)
    k = min(k, n)
    idx = np.zeros((n, k), dtype=np.int64)
    dist = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, _BLOCK):
        sims = vectors[start:start + _BLOCK] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = 2.0  # the point itself first, as UMAP expects
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, 1)
        idx[start:start + len(rows)] = best
        dist[start:start + len(rows)] = np.clip(1.0 - np.take_along_axis(sims, best, 1), 0.0, 2.0)
    dist[:, 0] = 0.0
    return idx, dist


def approximate_knn(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from pynndescent import NNDescent

    nnd = NNDescent(vectors, metric="cosine", n_neighbors=k, random_state=0, low_memory=True,
                    n_jobs=-1, compressed=True)
    idx, dist = nnd.neighbor_graph
    return idx.astype(np.int64), dist.astype(np.float32)


def knn_graph(store: Store, embedding_run_id: int, k: int = 15) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(knn run id, sample ids, neighbour positions n x k, cosine distances n x k), computed once per
    embedding run and stored; a later call with k no larger than the stored one reuses it."""
    found = store.query_df(
        "SELECT run_id, params FROM runs WHERE kind = 'knn' AND status = 'finished' "
        "AND json_extract(params, '$.embedding_run_id')::INTEGER = ? ORDER BY run_id DESC", [embedding_run_id])
    for row in found.itertuples():
        if json.loads(row.params)["k"] >= k:
            return (int(row.run_id), *_read_graph(store, int(row.run_id), embedding_run_id, k))
    return _compute_graph(store, embedding_run_id, k)


def _read_graph(store: Store, knn_run_id: int, embedding_run_id: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = get_index(store, embedding_run_id)
    with store.connect() as con:
        table = con.sql("SELECT sample_id, neighbours, distances FROM knn_graphs WHERE run_id = ? ORDER BY sample_id",
                        params=[knn_run_id]).to_arrow_table()
    n = table.num_rows
    neighbours = table.column("neighbours").combine_chunks().flatten().to_numpy().reshape(n, -1)[:, :k]
    distances = table.column("distances").combine_chunks().flatten().to_numpy().reshape(n, -1)[:, :k]
    positions = index.position.reindex(neighbours.reshape(-1)).to_numpy().reshape(n, -1)
    return index.ids, positions.astype(np.int64), distances.astype(np.float32)


def _compute_graph(store: Store, embedding_run_id: int, k: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    info = embed_run_info(store, embedding_run_id)
    index = get_index(store, embedding_run_id)
    method = "exact" if len(index.ids) <= EXACT_LIMIT else "nndescent"
    with store.run("knn", {"embedding_run_id": embedding_run_id, "k": k, "method": method},
                   dataset_id=_opt_int(info.get("dataset_id")), model=info["model_key"]) as run:
        t0 = time.monotonic()
        finder = exact_knn if method == "exact" else approximate_knn
        positions, distances = finder(index.vectors, k)
        n, kk = positions.shape
        table = pa.table({  # noqa: F841 - read by DuckDB
            "sample_id": pa.array(index.ids, pa.int64()),
            "neighbours": pa.FixedSizeListArray.from_arrays(pa.array(index.ids[positions].reshape(-1)), kk)
                            .cast(pa.list_(pa.int64())),
            "distances": pa.FixedSizeListArray.from_arrays(pa.array(distances.reshape(-1), pa.float32()), kk)
                           .cast(pa.list_(pa.float32())),
        })
        run.set_metrics(seconds=round(time.monotonic() - t0, 3))
        with store.transaction() as con:
            con.register("graph", table)
            con.execute("INSERT INTO knn_graphs SELECT ?, sample_id, neighbours, distances FROM graph", [run.run_id])
            run.finish(n, con=con)
    return run.run_id, index.ids, positions, distances


def _opt_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


# ---- neighbours and search --------------------------------------------------------------------


def _with_text(store: Store, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    result = pd.DataFrame({"id": ids.astype(np.int64), "score": scores.astype(np.float32)})
    result["rank"] = np.arange(1, len(result) + 1)
    if result.empty:
        return result.assign(dataset=pd.Series(dtype=str), text=pd.Series(dtype=str))
    texts = store.query_df(
        "SELECT s.id, d.name AS dataset, left(s.text, 300) AS text FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE s.id IN (SELECT unnest(?::BIGINT[]))", [result.id.tolist()])
    return result.merge(texts, on="id", how="left")


def neighbours(store: Store, embedding_run_id: int, sample_id: int, k: int = 10) -> pd.DataFrame:
    """The k nearest samples to `sample_id` (itself excluded): id, score (cosine), rank, dataset, text."""
    index = get_index(store, embedding_run_id)
    if sample_id not in index.position.index:
        raise KeyError(f"sample {sample_id} is not in embedding run {embedding_run_id}")
    pos = int(index.position[sample_id])
    positions, scores = index.query(index.vectors[pos], k + 1)
    keep = positions != pos
    return _with_text(store, index.ids[positions[keep]][:k], scores[keep][:k])


def embed_query(store: Store, embedding_run_id: int, text: str) -> np.ndarray:
    """The query text embedded with the same model and backend as the run (so scores are comparable)."""
    params = json.loads(embed_run_info(store, embedding_run_id)["params"])
    embedder = get_embedder(params["model"], backend=params["backend"], folder=onnx_dir(store.path))
    return embedder.encode([text])[0]


def search(
    store: Store,
    embedding_run_id: int,
    text: str,
    k: int = 10,
    *,
    candidate_ids: Sequence[int] | None = None,
    dataset: str | None = None,
    filters: Sequence[Any] = (),
    keyword: str | None = None,
) -> pd.DataFrame:
    """Semantic search by free text. Hybrid: `filters`/`keyword` (core.browse.samples, on `dataset`) or
    `candidate_ids` narrow the samples first; the vector top-k is then exact over the survivors."""
    if not text.strip():
        raise ValueError("search text is empty")
    index = get_index(store, embedding_run_id)
    if (filters or keyword) and dataset:
        from core.browse.samples import matching_ids

        found = matching_ids(store, dataset, search=keyword, filters=list(filters))
        candidate_ids = found if candidate_ids is None else sorted(set(found) & set(map(int, candidate_ids)))
    candidates = None
    if candidate_ids is not None:
        pos = index.position.reindex(np.asarray(list(candidate_ids), dtype=np.int64)).dropna()
        candidates = pos.to_numpy().astype(np.int64)
    positions, scores = index.query(embed_query(store, embedding_run_id, text), k, candidates)
    return _with_text(store, index.ids[positions], scores)


# ---- signals (core/signals): distance to the nearest neighbour ----------------------------------------


def _nn_distance(con: Any, dataset_ids: Sequence[int], run: int | None) -> Any:
    from core.maps.signals import newest_map_runs
    from core.signals.registry import Bound

    if run is None:
        runs = newest_map_runs(con, dataset_ids)
        rows = con.execute("SELECT run_id FROM runs WHERE kind = 'knn' AND status = 'finished' ORDER BY "
                           "(json_extract(params, '$.embedding_run_id')::INTEGER = ?) DESC, run_id DESC LIMIT 1",
                           [runs[0] if runs else -1]).fetchall()
        run = int(rows[0][0]) if rows else -1
    # The graph lists the sample itself first: its nearest other sample is the second entry.
    return Bound("SELECT sample_id, distances[2] AS value FROM knn_graphs WHERE run_id = ?", [run],
                 (run,) if run >= 0 else ())


def signals(con: Any, dataset_ids: Sequence[int] | None) -> list[Any]:
    """Signal provider: nn.distance where a k-NN graph was computed."""
    from core.signals.registry import Signal

    if not con.execute("SELECT 1 FROM runs WHERE kind = 'knn' AND status = 'finished' LIMIT 1").fetchall():
        return []
    return [Signal("nn.distance", "number", "cosine distance to the nearest other sample in the embedding k-NN "
                   "graph of the newest map's embedding (core/maps/neighbours.py)",
                   "0 = an identical neighbour; small = near-duplicate region; large = isolated", _nn_distance,
                   family="maps")]
