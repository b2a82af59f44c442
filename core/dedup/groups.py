"""Duplicate detection: exact (normalised hash), near (MinHash + LSH), SemDeDup, and cosine groups.

- exact, near and semantic ("cosine groups": k-means, then pairs with cosine >= threshold in a cluster) end
  the same way: pairs of duplicate samples -> connected groups -> one representative per group chosen by a
  rule (first, longest response, highest quality tag).
- semdedup is Abbas et al. 2023's own procedure (`semdedup`): no pairs chained into groups; within each
  k-means cluster, a point more similar than 1 - eps to an earlier point (ordered farthest from the
  centroid first) is removed, so the kept one is the paper's (farthest from the centroid).
All write rows in `dup_groups` under a recorded run. The mixture designer drops
`duplicate_ids_to_drop(store, run_id)`.

Texts are the samples' turns joined by newlines (`CONTENT_SQL`), streamed from the store in id order in
batches, so memory holds one batch of texts plus the MinHash signatures (num_perm x 4 bytes a sample).
"""

from __future__ import annotations

import difflib
import html
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from datasketch import LeanMinHash, MinHash, MinHashLSH

from core import textnorm
from core.store.database import Store

METHODS = ("exact", "near", "semdedup", "semantic")
KEEP_RULES = ("first", "longest", "quality")
SIGNAL_KEEP = "signal:"  # keep="signal:NAME": the member with the highest value of a numeric signal
DEFAULTS: dict[str, Any] = {"near_threshold": 0.7, "num_perm": 128, "shingle": 3, "semantic_threshold": 0.95,
                            "semdedup_eps": 0.05}
SEMDEDUP_KEEP = "farthest from centroid (SemDeDup)"
# One line per method: what made the groups, the paper, and any deviation (the page and run records show it).
METHOD_NOTES = {
    "exact": "Exact duplicates: identical text after NFKC, lower case and punctuation/whitespace folding.",
    "near": "MinHash + LSH (Broder 1997; datasketch's MinHashLSH) on word shingles; pairs at estimated Jaccard >= "
            "threshold chained into connected groups.",
    "semdedup": "SemDeDup (Abbas et al. 2023): k-means on embeddings; in each cluster, ordered farthest from the "
                "centroid first, a point with cosine > 1 - eps to an earlier point is removed (no chaining); the "
                "point farthest from the centroid is kept. MiniBatchKMeans instead of spherical k-means.",
    "semantic": "Cosine groups (not SemDeDup): k-means on embeddings, pairs with cosine >= threshold inside a "
                "cluster chained into connected groups; representative by the keep rule.",
}
CONTENT_SQL = "array_to_string(list_transform(s.messages, lambda m: coalesce(m.content, '')), chr(10))"
RESPONSE_CHARS_SQL = (
    "coalesce(list_sum(list_transform(list_filter(s.messages, lambda m: m.role = 'assistant'), "
    "lambda m: length(coalesce(m.content, '')))), 0)"
)
Progress = Callable[[int, int | None], None]
# Hooks returning a quality score per sample id (higher is better) or None when no quality tag exists.
QUALITY_SOURCES: list[Callable[[Store, list[int]], pd.Series | None]] = []


@dataclass
class DedupResult:
    run_id: int
    method: str
    n_samples: int
    n_groups: int
    n_in_groups: int
    n_to_drop: int
    keep: str
    keep_used: str  # "quality" falls back to "first" where no quality tag exists

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_QUALITY_WORDS = {"very poor": 0.0, "poor": 1.0, "average": 2.0, "fair": 2.0, "good": 3.0, "excellent": 4.0}


def _quality_from_tags(store: Store, ids: list[int]) -> pd.Series | None:
    """The newest `response_quality` tag (core/tags/results.py's table): its score, else its word on a 0-4 scale.

    Only a reward model or a judge writes response_quality; the offline Bradley-Terry proxy is the tag
    `preference_proxy` (what one preference set preferred) and is deliberately not read as quality."""
    from core.tags.results import newest_ok_sql

    sql, params = newest_ok_sql("coalesce(t.value, CAST(t.score AS VARCHAR))", ["response_quality"])
    try:
        df = store.query_df(f"SELECT sample_id, score, value FROM ({sql}) WHERE list_contains(?, sample_id)",
                            [*params, ids])
    except Exception:  # no tags table in this store (older schema): no quality known
        return None
    if df.empty:
        return None
    words = df["value"].astype(str).str.lower().map(_QUALITY_WORDS)
    return pd.Series(df["score"].fillna(words).to_numpy(float), index=df["sample_id"].to_numpy())


QUALITY_SOURCES.append(_quality_from_tags)


# ---- reading the store -------------------------------------------------------------------------------

def _dataset_ids(store: Store, datasets: list[str] | None) -> list[int]:
    if datasets:
        return [store.dataset(name).dataset_id for name in datasets]
    df = store.query_df("SELECT dataset_id FROM datasets ORDER BY dataset_id")
    return [int(x) for x in df["dataset_id"]]


def count_samples(store: Store, dataset_ids: list[int]) -> int:
    df = store.query_df("SELECT count(*) AS n FROM samples WHERE list_contains(?, dataset_id)", [dataset_ids])
    return int(df["n"].iloc[0])


def iter_texts(store: Store, dataset_ids: list[int], batch_size: int = 5000,
               expr: str = CONTENT_SQL) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(ids, texts) in id order, one short connection per batch so the store stays usable meanwhile."""
    last = -1
    sql = (f"SELECT s.id, {expr} AS t FROM samples s WHERE list_contains(?, s.dataset_id) AND s.id > ? "
           "ORDER BY s.id LIMIT ?")
    while True:
        with store.connect() as con:
            table = con.sql(sql, params=[dataset_ids, last, batch_size]).to_arrow_table()
        if table.num_rows == 0:
            return
        ids = table.column("id").to_numpy()
        yield ids, table.column("t").to_pylist()
        last = int(ids[-1])


# ---- pairs -> groups ---------------------------------------------------------------------------------

def groups_from_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Connected components of the pair graph: DataFrame(sample_id, group_id, similarity).

    `pairs` has columns a, b, similarity. A member's similarity is the highest of its edges.
    """
    if pairs.empty:
        return pd.DataFrame({"sample_id": pd.Series(dtype="int64"), "group_id": pd.Series(dtype="int64"),
                             "similarity": pd.Series(dtype="float64")})
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(pairs["a"].to_numpy(), pairs["b"].to_numpy(), strict=True):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    sims = pd.concat([pairs[["a", "similarity"]].rename(columns={"a": "sample_id"}),
                      pairs[["b", "similarity"]].rename(columns={"b": "sample_id"})])
    best = sims.groupby("sample_id")["similarity"].max()
    members = pd.DataFrame({"sample_id": best.index.astype("int64"), "similarity": best.to_numpy()})
    members["root"] = [find(int(x)) for x in members["sample_id"]]
    members["group_id"] = members["root"].rank(method="dense").astype("int64")
    return members[["sample_id", "group_id", "similarity"]].sort_values(["group_id", "sample_id"])


# ---- exact -------------------------------------------------------------------------------------------

def exact_pairs(store: Store, dataset_ids: list[int]) -> pd.DataFrame:
    """Samples whose normalised text (NFKC, case, punctuation, whitespace) is identical, grouped in SQL."""
    key = textnorm.normalize_sql(CONTENT_SQL)
    sql = f"""
        WITH k AS (SELECT s.id, {key} AS key FROM samples s WHERE list_contains(?, s.dataset_id)),
             g AS (SELECT key, min(id) AS first_id FROM k GROUP BY key HAVING count(*) > 1)
        SELECT g.first_id AS a, k.id AS b, 1.0 AS similarity FROM k JOIN g USING (key)
        WHERE k.id <> g.first_id ORDER BY a, b
    """
    with store.connect() as con:
        textnorm.register_sql(con)
        return con.execute(sql, [dataset_ids]).df()


# ---- near (MinHash + LSH) ----------------------------------------------------------------------------

def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class MinHasher:
    """MinHash signatures for whole batches at once, with datasketch's affine32 permutations.

    Equal to `datasketch.MinHash(num_perm, seed, hashfunc=<32-bit shingle hash>).update_batch(shingles)`,
    computed for thousands of documents in a few numpy operations instead of one Python loop per shingle.
    """

    def __init__(self, num_perm: int = 128, shingle: int = 3, seed: int = 1) -> None:
        self.num_perm, self.shingle, self.seed = num_perm, shingle, seed
        self.a, self.b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        self.hasher = textnorm.WordHasher()

    @staticmethod
    def shingle_hash32(h64: np.ndarray) -> np.ndarray:
        return (h64 ^ (h64 >> np.uint64(32))).astype(np.uint32)

    def signatures(self, texts: list[str], chunk: int = 20_000) -> np.ndarray:
        """(len(texts), num_perm) uint32; an empty text gets the all-max signature (matches nothing)."""
        batch = textnorm.ngram_batch([textnorm.tokens(t) for t in texts], self.shingle, self.hasher,
                                     short_docs=True)
        out = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        hv = _fmix32(self.shingle_hash32(batch.hashes))
        for lo in range(0, len(hv), chunk):  # bound the (shingles x num_perm) matrix
            part = hv[lo:lo + chunk, None] * self.a[None, :] + self.b[None, :]
            docs = batch.doc[lo:lo + chunk]
            starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
            mins = np.minimum.reduceat(part, starts, axis=0)
            rows = docs[starts]
            out[rows] = np.minimum(out[rows], mins)
        return out

    def lean(self, signature: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme="affine32")


def near_pairs(batches: Iterator[tuple[np.ndarray, list[str]]], *, threshold: float = 0.7, num_perm: int = 128,
               shingle: int = 3, seed: int = 1, progress: Progress | None = None,
               total: int | None = None) -> pd.DataFrame:
    """Candidate pairs from LSH, kept where the signatures' Jaccard estimate reaches `threshold`."""
    hasher = MinHasher(num_perm, shingle, seed)
    signed = ((ids, hasher.signatures(texts)) for ids, texts in batches)
    return signature_pairs(signed, threshold=threshold, num_perm=num_perm, seed=seed, progress=progress,
                           total=total)


def signature_pairs(batches: Iterator[tuple[np.ndarray, np.ndarray]], *, threshold: float = 0.7,
                    num_perm: int = 128, seed: int = 1, progress: Progress | None = None,
                    total: int | None = None) -> pd.DataFrame:
    """The LSH pass over MinHash signatures computed elsewhere (here, or on Ray workers: core/scale).
    Memory: the LSH index plus num_perm x 4 bytes per sample."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    store_sigs = np.empty((0, num_perm), dtype=np.uint32)  # signatures indexed so far, by position
    positions: list[np.ndarray] = []
    found_a: list[int] = []
    found_b: list[int] = []
    found_s: list[float] = []
    done = 0
    empty = np.full(num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
    for ids, sigs in batches:
        base = done
        if base + len(sigs) > len(store_sigs):  # grow by doubling: amortised O(n) copying
            grown = np.empty((max(2 * len(store_sigs), base + len(sigs)), num_perm), dtype=np.uint32)
            grown[:base] = store_sigs[:base]
            store_sigs = grown
        store_sigs[base:base + len(sigs)] = sigs
        positions.append(np.asarray(ids, dtype=np.int64))
        for i, sig in enumerate(sigs):
            if np.array_equal(sig, empty):
                continue
            m = LeanMinHash(seed=seed, hashvalues=sig, scheme="affine32")
            for other in lsh.query(m):
                sim = float(np.mean(store_sigs[other] == sig))
                if sim >= threshold:
                    found_a.append(other)
                    found_b.append(base + i)
                    found_s.append(sim)
            lsh.insert(base + i, m, check_duplication=False)
        done += len(ids)
        if progress:
            progress(done, total)
    all_ids = np.concatenate(positions) if positions else np.empty(0, np.int64)
    return pd.DataFrame({"a": all_ids[np.asarray(found_a, dtype=np.int64)],
                         "b": all_ids[np.asarray(found_b, dtype=np.int64)], "similarity": found_s})


# ---- semantic: SemDeDup (Abbas et al. 2023) and cosine groups ----------------------------------------

def _unit(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans_labels(x: np.ndarray, n_clusters: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cluster label per row, unit-length centroids) of unit vectors; k defaults to about sqrt(n)."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(x)
    k = min(n_clusters or max(1, min(n // 50, int(np.sqrt(n)))), max(n, 1))
    if k == 1:
        return np.zeros(n, dtype=np.int64), _unit(x.mean(axis=0, keepdims=True))
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x)
    return km.labels_.astype(np.int64), _unit(km.cluster_centers_)


def max_earlier_similarity(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each row j of unit vectors: the highest cosine to any row i < j, and that i (-1 for row 0).

    Computed block by block against every earlier block, so a cluster bigger than `chunk` is compared across
    block boundaries (memory chunk x chunk)."""
    n = len(x)
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        for plo in range(0, hi, chunk):
            phi = min(plo + chunk, hi)
            sims = x[lo:hi] @ x[plo:phi].T
            if plo == lo:  # same block: only earlier rows (strictly below the diagonal)
                sims = np.where(np.tri(hi - lo, phi - plo, k=-1, dtype=bool), sims, -np.inf)
            j = sims.argmax(axis=1)
            m = sims[np.arange(hi - lo), j]
            better = m > best[lo:hi]
            best[lo:hi] = np.where(better, m, best[lo:hi])
            arg[lo:hi] = np.where(better, plo + j, arg[lo:hi])
    return best, arg


def semdedup(ids: np.ndarray, vectors: np.ndarray, *, eps: float = DEFAULTS["semdedup_eps"],
             n_clusters: int | None = None, seed: int = 0, chunk: int = 4096) -> pd.DataFrame:
    """SemDeDup (Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale through semantic
    deduplication", section 3 and Algorithm 1), re-derived from the paper:

    1. k-means on the unit-length embeddings (the paper: spherical k-means);
    2. within each cluster, order the points by cosine similarity to their centroid, lowest first (the
       farthest from the centroid first);
    3. a point is removed when its cosine similarity to any point before it in that order exceeds 1 - eps
       (the maximum over the upper triangle of the cluster's similarity matrix); pairs are never chained
       into groups, and the point kept from a set of duplicates is the one farthest from the centroid
       (the paper's rule: "keep the example with the lowest cosine similarity to the cluster centroid").

    As in the paper's algorithm, "before it" counts removed points too: of A ~ B ~ C with A and C not
    similar, both B and C go. Clusters bigger than `chunk` are compared block by block, across blocks.
    Returns members for `dup_groups`: every removed point and the kept point it was matched to (following
    removed matches back to the kept one), `similarity` = its highest cosine to an earlier point (for the
    kept point, the highest of its group)."""
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    ids = np.asarray(ids, dtype=np.int64)
    empty = pd.DataFrame({"sample_id": pd.Series(dtype="int64"), "group_id": pd.Series(dtype="int64"),
                          "similarity": pd.Series(dtype="float64"), "is_representative": pd.Series(dtype=bool)})
    if len(ids) < 2:
        return empty
    x = _unit(vectors)
    labels, centroids = kmeans_labels(x, n_clusters, seed)
    removed_ids, parent_ids, sims = [], [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        to_centroid = x[members] @ centroids[c]
        order = members[np.lexsort((ids[members], to_centroid))]  # farthest first; ties by sample id
        best, arg = max_earlier_similarity(x[order], chunk)
        gone = np.flatnonzero(best > 1 - eps)
        removed_ids.append(ids[order[gone]])
        parent_ids.append(ids[order[arg[gone]]])
        sims.append(best[gone])
    removed = np.concatenate(removed_ids)
    if len(removed) == 0:
        return empty
    parent = dict(zip(removed.tolist(), np.concatenate(parent_ids).tolist(), strict=True))

    def root(i: int) -> int:
        while i in parent:  # a removed point's match may itself be removed: follow to the kept one
            i = parent[i]
        return i

    out = pd.DataFrame({"sample_id": removed, "similarity": np.concatenate(sims).astype(float),
                        "is_representative": False})
    out["root"] = [root(int(i)) for i in out["sample_id"]]
    reps = out.groupby("root")["similarity"].max().rename("similarity").reset_index()
    reps = reps.assign(sample_id=reps["root"], is_representative=True)
    out = pd.concat([out, reps[out.columns]], ignore_index=True)
    out["group_id"] = out["root"].rank(method="dense").astype("int64")
    return out[["sample_id", "group_id", "similarity", "is_representative"]].sort_values(
        ["group_id", "sample_id"], ignore_index=True)


def semantic_pairs(ids: np.ndarray, vectors: np.ndarray, *, threshold: float = 0.95, n_clusters: int | None = None,
                   seed: int = 0, max_cluster: int = 20_000) -> pd.DataFrame:
    """Cosine groups (the method named "semantic"; not SemDeDup's procedure): k-means, then every pair
    inside a cluster with cosine >= threshold, later chained into connected groups by `groups_from_pairs`.
    Clusters bigger than `max_cluster` are compared block by block, across blocks."""
    ids = np.asarray(ids, dtype=np.int64)
    x = _unit(vectors)
    if len(ids) < 2:
        return pd.DataFrame({"a": [], "b": [], "similarity": []})
    labels, _ = kmeans_labels(x, n_clusters, seed)
    out_a, out_b, out_s = [], [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        for lo in range(0, len(members), max_cluster):
            part = members[lo:lo + max_cluster]
            for plo in range(0, lo + 1, max_cluster):  # this block against itself and every earlier block
                prev = members[plo:plo + max_cluster]
                sims = x[prev] @ x[part].T
                hit = sims >= threshold
                if plo == lo:
                    hit = np.triu(hit, k=1)
                ii, jj = np.nonzero(hit)
                out_a.append(ids[prev[ii]])
                out_b.append(ids[part[jj]])
                out_s.append(sims[ii, jj])
    return pd.DataFrame({"a": np.concatenate(out_a), "b": np.concatenate(out_b),
                         "similarity": np.concatenate(out_s).astype(float)})


def load_embeddings(store: Store, datasets: list[str], *, embed_run_id: int | None = None, model: str | None = None,
                    text: str = "conversation", progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Vectors from core/maps/embed.py: a given embed run, or a (cached, recorded) embed run over the datasets."""
    import core.maps.embed as embed

    if embed_run_id is None:
        embed_run_id = embed.embed(store, datasets, model=model, text=text, progress=progress).run_id
    ids, vectors = embed.load_vectors(store, embed_run_id)
    return ids, vectors, embed_run_id


# ---- representatives ---------------------------------------------------------------------------------

def quality_scores(store: Store, ids: list[int]) -> pd.Series | None:
    """Quality per sample id from the first hook that knows one; None where no quality tag exists."""
    for source in QUALITY_SOURCES:
        scores = source(store, ids)
        if scores is not None and not scores.empty:
            return scores
    return None


def signal_scores(store: Store, name: str, ids: list[int]) -> pd.Series:
    """A numeric signal's values for these samples (core/signals): the "keep the highest X" rule."""
    from core import signals

    signal = signals.get(store, name)
    if signal.kind != "number":
        raise ValueError(f"keep=signal:{name}: {name} is a {signal.kind} signal; the keep rule needs a number")
    df = signals.values(store, name, sample_ids=ids)
    return pd.Series(df["value"].to_numpy(float), index=df["sample_id"].to_numpy("int64"))


def choose_representatives(store: Store, members: pd.DataFrame, keep: str = "first") -> tuple[pd.DataFrame, str]:
    """Mark one representative per group. Returns (members with is_representative, rule actually used).
    `keep` is a rule of KEEP_RULES or `signal:NAME`: the highest value of any numeric signal (core/signals)."""
    if keep not in KEEP_RULES and not keep.startswith(SIGNAL_KEEP):
        raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)} or signal:NAME, got {keep!r}")
    members = members.copy()
    if members.empty:
        members["is_representative"] = pd.Series(dtype=bool)
        return members, keep
    ids = [int(x) for x in members["sample_id"]]
    info = store.query_df(f"SELECT s.id AS sample_id, {RESPONSE_CHARS_SQL} AS response_chars, s.n_chars "
                          "FROM samples s WHERE list_contains(?, s.id)", [ids])
    members = members.merge(info, on="sample_id", how="left")
    used = keep
    if keep == "longest":
        # Texts without an assistant turn (plain text datasets) count their whole length.
        members["score"] = members["response_chars"].where(members["response_chars"] > 0, members["n_chars"])
    elif keep.startswith(SIGNAL_KEEP):
        scores = signal_scores(store, keep[len(SIGNAL_KEEP):], ids)
        members["score"] = members["sample_id"].map(scores).fillna(-np.inf)
    elif keep == "quality":
        scores = quality_scores(store, ids)
        if scores is None:
            used, members["score"] = "first", 0.0
        else:
            members["score"] = members["sample_id"].map(scores).fillna(-np.inf)
    else:
        members["score"] = 0.0
    # Highest score wins; ties go to the first sample (lowest id = earliest loaded).
    order = members.sort_values(["group_id", "score", "sample_id"], ascending=[True, False, True])
    first = order.groupby("group_id")["sample_id"].transform("first")
    members = order.assign(is_representative=order["sample_id"] == first)
    return members[["sample_id", "group_id", "similarity", "is_representative"]].sort_values(
        ["group_id", "sample_id"]), used


# ---- the run -----------------------------------------------------------------------------------------

def find_duplicates(
    store: Store,
    datasets: list[str] | None = None,
    *,
    method: str = "exact",
    threshold: float | None = None,
    num_perm: int = DEFAULTS["num_perm"],
    shingle: int = DEFAULTS["shingle"],
    keep: str = "first",
    n_clusters: int | None = None,
    embed_run_id: int | None = None,
    embed_model: str | None = None,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> DedupResult:
    """Find duplicate groups within the named datasets (all datasets in the store when None); a recorded run."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    dataset_ids = _dataset_ids(store, datasets)
    if threshold is None:
        threshold = DEFAULTS["semantic_threshold"] if method in ("semantic", "semdedup") else DEFAULTS["near_threshold"]
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if method == "semdedup":
        if keep != "first":
            raise ValueError(f"SemDeDup keeps the point farthest from its cluster's centroid (the paper's rule); "
                             f"keep={keep!r} applies to the exact, near and semantic methods")
        keep = SEMDEDUP_KEEP
    params = {"method": method, "datasets": datasets or "all", "dataset_ids": dataset_ids, "keep": keep,
              "method_note": METHOD_NOTES[method]}
    if method == "near":
        params |= {"threshold": threshold, "num_perm": num_perm, "shingle": shingle}
    elif method in ("semantic", "semdedup"):
        # The embed run (cached, recorded) comes first so that this run's parameters name it.
        ids, vectors, embed_run_id = load_embeddings(store, datasets or store.dataset_names(),
                                                     embed_run_id=embed_run_id, model=embed_model, progress=progress)
        params |= {"threshold": threshold, "n_clusters": n_clusters, "embed_run_id": embed_run_id,
                   "embed_model": embed_model or "all-MiniLM-L6-v2"}
        if method == "semdedup":
            params["eps"] = round(1 - threshold, 12)  # the paper's parameter: removed above cosine 1 - eps
    with store.run("dedup", params, dataset_id=dataset_ids[0] if len(dataset_ids) == 1 else None,
                   sample_filter="all datasets" if not datasets else f"datasets: {', '.join(datasets)}") as run:
        total = count_samples(store, dataset_ids)
        if method == "exact":
            pairs = exact_pairs(store, dataset_ids)
            if progress:
                progress(total, total)
        elif method == "near":
            pairs = near_pairs(iter_texts(store, dataset_ids, batch_size), threshold=threshold, num_perm=num_perm,
                               shingle=shingle, progress=progress, total=total)
        elif method == "semantic":
            pairs = semantic_pairs(ids, vectors, threshold=threshold, n_clusters=n_clusters)
        if method == "semdedup":
            members, used = semdedup(ids, vectors, eps=1 - threshold, n_clusters=n_clusters), keep
        else:
            members, used = choose_representatives(store, groups_from_pairs(pairs), keep)
        write_groups(store, run.run_id, members)
        run.finish(total)
    n_groups = int(members["group_id"].nunique()) if len(members) else 0
    return DedupResult(run_id=run.run_id, method=method, n_samples=total, n_groups=n_groups, n_in_groups=len(members),
                       n_to_drop=len(members) - n_groups, keep=keep, keep_used=used)


def write_groups(store: Store, run_id: int, members: pd.DataFrame) -> None:
    table = pa.table({
        "group_id": pa.array(members["group_id"].to_numpy(np.int64), pa.int32()),
        "sample_id": pa.array(members["sample_id"].to_numpy(np.int64), pa.int64()),
        "is_representative": pa.array(members["is_representative"].to_numpy(bool)),
        "similarity": pa.array(members["similarity"].to_numpy(float)),
    })
    with store.transaction() as con:
        con.register("new_groups", table)
        con.execute("INSERT INTO dup_groups SELECT ?, group_id, sample_id, is_representative, similarity "
                    "FROM new_groups", [run_id])
        con.unregister("new_groups")


# ---- reading results ---------------------------------------------------------------------------------

def dedup_runs(store: Store) -> pd.DataFrame:
    return store.query_df(
        "SELECT r.run_id, r.status, r.params, r.started_at, r.n_samples, "
        "(SELECT count(DISTINCT group_id) FROM dup_groups g WHERE g.run_id = r.run_id) AS n_groups, "
        "(SELECT count(*) FILTER (WHERE NOT is_representative) FROM dup_groups g WHERE g.run_id = r.run_id) AS n_to_drop "
        "FROM runs r WHERE r.kind = 'dedup' ORDER BY r.run_id DESC")


def duplicate_groups(store: Store, run_id: int, *, group_id: int | None = None, with_text: bool = False) -> pd.DataFrame:
    """Members of the run's groups (one group with `group_id`), representative first, keyed by sample id."""
    text = f", {CONTENT_SQL} AS text" if with_text else ""
    sql = (f"SELECT g.group_id, g.sample_id, g.is_representative, g.similarity, d.name AS dataset, s.row_idx{text} "
           "FROM dup_groups g JOIN samples s ON s.id = g.sample_id JOIN datasets d ON d.dataset_id = s.dataset_id "
           "WHERE g.run_id = ?" + (" AND g.group_id = ?" if group_id is not None else "") +
           " ORDER BY g.group_id, g.is_representative DESC, g.sample_id")
    return store.query_df(sql, [run_id] + ([group_id] if group_id is not None else []))


def group_summary(store: Store, run_id: int) -> pd.DataFrame:
    """One row per group: size, datasets involved, lowest similarity."""
    return store.query_df(
        "SELECT g.group_id, count(*) AS size, string_agg(DISTINCT d.name, ', ') AS datasets, "
        "min(g.similarity) AS min_similarity, any_value(g.sample_id) FILTER (WHERE g.is_representative) AS representative "
        "FROM dup_groups g JOIN samples s ON s.id = g.sample_id JOIN datasets d ON d.dataset_id = s.dataset_id "
        "WHERE g.run_id = ? GROUP BY g.group_id ORDER BY size DESC, g.group_id", [run_id])


def duplicate_ids_to_drop(store: Store, run_id: int) -> set[int]:
    """Every grouped sample except its group's representative: what a mixture drops to keep one per group."""
    df = store.query_df("SELECT sample_id FROM dup_groups WHERE run_id = ? AND NOT is_representative", [run_id])
    return {int(x) for x in df["sample_id"]}


# ---- showing differences -----------------------------------------------------------------------------

def _word_diff(wa: list[str], wb: list[str], *, cell: Callable[[str], str], deleted: str,
               inserted: str) -> tuple[str, str]:
    """Both sides of a word-level diff; `cell` renders a run of words, the templates mark the changed ones."""
    out_a: list[str] = []
    out_b: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        left, right = cell(" ".join(wa[i1:i2])), cell(" ".join(wb[j1:j2]))
        if op == "equal":
            out_a.append(left)
            out_b.append(right)
            continue
        if left:
            out_a.append(deleted.format(left))
        if right:
            out_b.append(inserted.format(right))
    return " ".join(out_a), " ".join(out_b)


def diff_markers(a: str, b: str) -> tuple[str, str]:
    """Plain-text side-by-side rendering: words only in one text are wrapped as [-removed-] / {+added+}."""
    return _word_diff(a.split(), b.split(), cell=str, deleted="[-{}-]", inserted="{{+{}+}}")


def diff_html(a: str, b: str) -> tuple[str, str]:
    """Side-by-side HTML with differing words highlighted; the dataset text is escaped before any markup."""
    left, right = _word_diff(a.split(" "), b.split(" "), cell=html.escape,
                             deleted='<del style="background:#fdd">{}</del>',
                             inserted='<ins style="background:#dfd">{}</ins>')
    wrap = '<div style="white-space:pre-wrap;font-family:monospace;font-size:0.85em">{}</div>'
    return wrap.format(left), wrap.format(right)


def method_note(store: Store, run_id: int) -> str:
    """One line: what method made this run's groups, the paper, and any deviation (from the run record)."""
    df = store.query_df("SELECT params FROM runs WHERE run_id = ?", [run_id])
    if df.empty:
        raise KeyError(f"No run {run_id}")
    params = json.loads(df["params"].iloc[0] or "{}")
    note = params.get("method_note") or METHOD_NOTES.get(params.get("method", ""), "")
    detail = {"near": f"threshold {params.get('threshold')}", "semantic": f"cosine >= {params.get('threshold')}",
              "semdedup": f"eps {params.get('eps')}"}.get(params.get("method", ""), "")
    return f"{note} ({detail})" if detail else note
