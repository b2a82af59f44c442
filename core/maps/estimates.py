"""What a long job will compute, what is cached already, and about how long it will take.

Pages show this before a job starts. Rates come from this store's own finished runs (embedding runs
record how many texts they computed and in how many seconds; other runs their samples and duration);
where there are none yet, a typical figure for a 2-core CPU, said to be one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import core.maps.embed as embed
from core.store.database import Store
from core.store.jobs import duration

__all__ = ["WorkPlan", "embedding_plan", "run_rate", "describe_seconds"]

# Texts per second of all-MiniLM-L6-v2 on a 2-core CPU by backend (bench/embed_throughput.py, 1,000 GSM8K
# questions, the quieter run quoted in issue 17), used only until this store has measured its own.
TYPICAL_EMBED_RATE = {"torch": 111.0, "onnx": 220.0, "onnx-int8": 389.0}
_GPU_FACTOR = 20.0


@dataclass(frozen=True)
class WorkPlan:
    """What an embedding step will do."""

    n_samples: int          # samples in scope
    n_distinct: int         # distinct texts among them
    n_cached: int           # distinct texts whose vectors are cached for this model
    rate: float             # texts per second expected
    rate_source: str        # "measured here (N runs)" or "typical 2-core CPU"

    @property
    def n_to_compute(self) -> int:
        return self.n_distinct - self.n_cached

    @property
    def seconds(self) -> float:
        return self.n_to_compute / self.rate if self.rate > 0 else 0.0

    def describe(self, model: str) -> str:
        if self.n_to_compute == 0:
            return f"Embeddings: all {self.n_distinct:,} texts are cached for {model}; nothing to compute."
        return (f"Embeddings: {self.n_to_compute:,} of {self.n_distinct:,} distinct texts to compute with {model} "
                f"({self.n_cached:,} cached), about {describe_seconds(self.seconds)} at {self.rate:,.0f} texts/s "
                f"({self.rate_source}).")


def describe_seconds(seconds: float) -> str:
    """A duration for people ("45 s", "3 min 20 s", "1 h 05 min"): the job views' own wording."""
    return duration(max(seconds, 1))


def embedding_plan(store: Store, datasets: str | Sequence[str], *, model: str | None = None,
                   text: str = "instruction", backend: str = "auto", device: str = "auto") -> WorkPlan:
    """How many texts an `embed.embed` call with these arguments would compute, and how long it would take."""
    names, ids = embed.dataset_ids(store, datasets)
    key = embed.model_key(model, backend, device)
    counts = _hash_counts(store, ids, key, text)
    rate, source = _embed_rate(store, key, embed.resolve_backend(backend, device))
    return WorkPlan(*counts, rate, source)


_COUNTS: dict[tuple, tuple[int, int, int]] = {}


def _hash_counts(store: Store, ids: list[int], key: str, text: str) -> tuple[int, int, int]:
    """(samples, distinct texts, distinct texts cached). Pages ask on every rerun, and hashing every text
    is the cost, so the answer is kept until the model's cached vectors or the datasets change."""
    stamp = store.query_df(
        "SELECT (SELECT count(*) FROM embedding_vectors WHERE model_key = ?) AS n_vectors, "
        "(SELECT CAST(max(loaded_at) AS VARCHAR) FROM datasets WHERE dataset_id IN (SELECT unnest(?::INTEGER[]))) "
        "AS loaded", [key, ids]).iloc[0]
    memo = (str(store.path), tuple(ids), key, text, int(stamp.n_vectors), stamp.loaded)
    if memo not in _COUNTS:
        row = store.query_df(
            f"WITH h AS (SELECT DISTINCT md5({embed.text_sql(text)}) AS content_hash FROM samples s "
            "WHERE s.dataset_id IN (SELECT unnest(?::INTEGER[]))) "
            "SELECT (SELECT count(*) FROM samples WHERE dataset_id IN (SELECT unnest(?::INTEGER[]))) AS n_samples, "
            "count(*) AS n_distinct, count(v.content_hash) AS n_cached FROM h "
            "LEFT JOIN (SELECT content_hash FROM embedding_vectors WHERE model_key = ?) v USING (content_hash)",
            [ids, ids, key]).iloc[0]
        if len(_COUNTS) >= 64:
            _COUNTS.clear()
        _COUNTS[memo] = (int(row.n_samples), int(row.n_distinct), int(row.n_cached))
    return _COUNTS[memo]


def _embed_rate(store: Store, key: str, backend: str) -> tuple[float, str]:
    runs = store.query_df(
        "SELECT n_computed, seconds FROM embedding_runs WHERE model_key = ? AND seconds > 1 AND n_computed > 50 "
        "ORDER BY run_id DESC LIMIT 5", [key])
    if not runs.empty and runs.seconds.sum() > 0:
        return float(runs.n_computed.sum() / runs.seconds.sum()), f"measured here over {len(runs)} run(s)"
    rate = TYPICAL_EMBED_RATE.get(backend, 100.0)
    if embed.pick_device() == "cuda":
        return rate * _GPU_FACTOR, "a rough guess for a GPU"
    return rate, "typical on a 2-core CPU"


def run_rate(store: Store, kind: str) -> tuple[float, int] | None:
    """Samples per second of this store's recent finished runs of `kind`, and how many runs that is."""
    runs = store.query_df(
        "SELECT n_samples, epoch(finished_at) - epoch(started_at) AS seconds FROM runs "
        "WHERE kind = ? AND status = 'finished' AND n_samples > 0 AND finished_at > started_at "
        "ORDER BY run_id DESC LIMIT 5", [kind])
    if runs.empty or runs.seconds.sum() <= 0:
        return None
    return float(runs.n_samples.sum() / runs.seconds.sum()), len(runs)
