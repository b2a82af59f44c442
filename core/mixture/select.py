"""Selection within a quota: every method returns an ORDER over a cell's candidates; the quota is a prefix.

- random: a permutation from numpy's Generator seeded by (recipe seed, source, category);
- top: by score, highest first (ties and missing scores: lowest sample id first / last);
- diverse ("Diversify and Conquer", kM): k-means on stored embeddings, then round-robin over clusters, so
  any prefix holds an equal quota per cluster (a cluster that runs out leaves its share to the others);
- kmq: as diverse, but within each cluster samples are drawn without replacement with probability
  softmax(score / temperature) (Gumbel-top-k: sort by score/T + Gumbel noise).

A count quota takes the first n of the order; a token budget takes the longest prefix whose tokens fit.
A quota above what is available, on a source with `replace: true`, repeats the whole order and then takes
a prefix (copy numbers 0, 1, ... tell the repeats apart).

Candidates always arrive sorted by sample id, so the same store and seed give the same selection.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.mixture.filters import MixtureDataError
from core.store.database import Store


def cell_rng(seed: int, src: int, category: str, purpose: str = "select") -> np.random.Generator:
    """A generator per cell, independent of the other cells and of Python's hash seed."""
    return np.random.default_rng([seed, src + 1, zlib.crc32(category.encode()), zlib.crc32(purpose.encode())])


def order_random(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(n)


def order_top(scores: np.ndarray) -> np.ndarray:
    """Highest score first; NaN last; ties keep id order (candidates are sorted by id)."""
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.argsort(key, kind="stable")


def gumbel_order(scores: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """A draw without replacement with probabilities softmax(score / T), as an order (Gumbel-top-k)."""
    logits = np.where(np.isnan(scores), -np.inf, scores / max(temperature, 1e-9))
    noisy = logits + rng.gumbel(size=len(scores))
    return np.argsort(-noisy, kind="stable")


def kmeans_labels(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(vectors)))
    if k == 1:
        return np.zeros(len(vectors), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(vectors.astype(np.float64))


def order_diverse(vectors: np.ndarray, k: int, rng: np.random.Generator, seed: int,
                  scores: np.ndarray | None = None, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(order, cluster label per candidate): round-robin over k-means clusters, random or kMQ inside each."""
    labels = kmeans_labels(vectors, k, seed)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        inner = gumbel_order(scores[members], temperature, rng) if scores is not None else rng.permutation(len(members))
        rank[members[inner]] = np.arange(len(members))
    # Sort by (rank within cluster, cluster): the first k are one per cluster, then the next k, ...
    return np.lexsort((labels, rank)), labels


def take(order: np.ndarray, tokens: np.ndarray, count: int | None, budget: int | None,
         replace: bool) -> tuple[np.ndarray, np.ndarray]:
    """(positions into the candidates, copy number) for a count or token quota."""
    n = len(order)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    if count is not None:
        full, rest = (divmod(count, n) if replace else (0, min(count, n)))
    else:
        total = int(tokens.sum())
        full = int(budget // total) if replace and total and budget > total else 0
        left = budget - full * total
        cum = np.cumsum(tokens[order])
        rest = int(np.searchsorted(cum, left, side="right"))
    picks = [order] * full + [order[:rest]]
    copies = [np.full(n, c, np.int32) for c in range(full)] + [np.full(rest, full, np.int32)]
    return np.concatenate(picks), np.concatenate(copies)


@dataclass
class EmbeddingSource:
    """Stored embeddings (core/maps/embed.py), one run per dataset, loaded once."""

    store: Store
    run_id: int | None = None
    _cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = None

    def run_for(self, dataset: str) -> int:
        if self.run_id is not None:
            return self.run_id
        from core.maps.embed import embedding_runs

        runs = embedding_runs(self.store, dataset)
        runs = runs[runs.status == "finished"] if "status" in runs else runs
        if runs.empty:
            raise MixtureDataError(f"diversity-aware selection needs embeddings of {dataset!r}: embed the dataset "
                                   f"first (assay embed --dataset {dataset}), or set selection.embed_run")
        return int(runs.run_id.iloc[0])

    def vectors(self, dataset: str, ids: np.ndarray) -> tuple[np.ndarray, int]:
        from core.maps.embed import load_vectors

        run = self.run_for(dataset)
        self._cache = self._cache or {}
        if run not in self._cache:
            self._cache[run] = load_vectors(self.store, run)
        run_ids, matrix = self._cache[run]
        if len(run_ids) == 0:
            missing, pos = len(ids), np.zeros(0, np.int64)
        else:
            pos = np.clip(np.searchsorted(run_ids, ids), 0, len(run_ids) - 1)
            missing = int(np.count_nonzero(run_ids[pos] != ids))
        if missing:
            raise MixtureDataError(f"{missing} candidate samples of {dataset!r} have no vector in embedding run {run}: "
                                   f"embed the dataset first (assay embed --dataset {dataset})")
        return matrix[pos], run


Progress = Callable[[str, float], None]
