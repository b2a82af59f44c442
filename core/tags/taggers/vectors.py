"""Sentence embeddings for the offline taggers, with the same model as core/maps/embed.py.

Vectors already in the store's embedding cache (written by embedding runs for the map) are reused,
looked up by the md5 of the text as core/maps/embed.py keys them; the rest are computed in memory. The
taggers never write that cache: it belongs to the embedding runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

import core.maps.embed as embed
from core.store.database import Store


def encode(texts: Sequence[str], model: str | None = None, store: Store | None = None) -> np.ndarray:
    """L2-normalised float32 vectors of `texts` (n x d), in order."""
    texts = [t if t.strip() else " " for t in texts]
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    cached = _memory_hits(texts, model)
    if store is not None and len(cached) < len(texts):
        cached |= _cached(store, texts, model)
    missing = [i for i, t in enumerate(texts) if _md5(t) not in cached]
    out: np.ndarray | None = None
    if missing:
        vecs = embed.get_embedder(model).encode([texts[i] for i in missing])
        out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
        out[missing] = vecs
        _remember([texts[i] for i in missing], vecs, model)
    for i, t in enumerate(texts):
        vec = cached.get(_md5(t))
        if vec is not None:
            if out is None:
                out = np.zeros((len(texts), len(vec)), dtype=np.float32)
            out[i] = vec
    return out  # type: ignore[return-value]


MEMORY_LIMIT = 200_000  # vectors kept in process (~300 MB at 384 dims): retraining and re-tagging are free
_MEMORY: dict[tuple[str, str], np.ndarray] = {}


def _memory_hits(texts: Sequence[str], model: str | None) -> dict[str, np.ndarray]:
    name = model_name(model)
    hits = {}
    for t in texts:
        h = _md5(t)
        vec = _MEMORY.get((name, h))
        if vec is not None:
            hits[h] = vec
    return hits


def _remember(texts: Sequence[str], vecs: np.ndarray, model: str | None) -> None:
    if len(_MEMORY) + len(texts) > MEMORY_LIMIT:
        _MEMORY.clear()
    name = model_name(model)
    for t, v in zip(texts, vecs, strict=True):
        _MEMORY[(name, _md5(t))] = v


def model_name(model: str | None) -> str:
    return model or embed.DEFAULT_MODEL


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _cached(store: Store, texts: Sequence[str], model: str | None) -> dict[str, np.ndarray]:
    key = embed.model_key(model, "torch")
    hashes = sorted({_md5(t) for t in texts})
    try:
        df = store.query_df("SELECT content_hash, vector FROM embedding_vectors WHERE model_key = ? AND "
                            "content_hash IN (SELECT unnest(?::VARCHAR[]))", [key, hashes])
    except Exception:  # noqa: BLE001 - no embedding cache table in this store: compute everything
        return {}
    return {h: np.asarray(v, dtype=np.float32) for h, v in zip(df["content_hash"], df["vector"], strict=True)}
