"""2-D projections of an embedding run: UMAP (cosine, on the stored k-NN graph) or PCA.

UMAP is given the k-NN graph from core.maps.neighbours.knn_graph (computed once per embedding run and
stored), so re-projecting with another min_dist or seed skips the neighbour search. umap-learn's numba
functions are compiled once and kept on disk (see `cache_umap_compilation`): `make install` pays that
compilation (about 45 s on 2 cores, `warm_umap_compilation`), else the first UMAP does; PCA is the fast
choice for small or quick maps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.maps.embed import embed_run_info
from core.maps.neighbours import get_index, knn_graph
from core.store.database import Store
from core.store.runs import Run

METHODS = ("umap", "pca")
Progress = Callable[[float, str], None]


def pca_2d(vectors: np.ndarray, seed: int = 42) -> np.ndarray:
    from sklearn.decomposition import PCA

    if len(vectors) < 2:
        return np.zeros((len(vectors), 2), dtype=np.float32)
    return PCA(n_components=2, random_state=seed).fit_transform(vectors).astype(np.float32)


_UMAP_CACHE_LOCK = threading.Lock()
_UMAP_CACHED: list[Any] = []  # the dispatchers whose compilation numba now keeps on disk


def cache_umap_compilation() -> list[Any]:
    """Let numba keep umap-learn's compiled functions on disk, as pynndescent's already are.

    umap-learn compiles its numba functions in every new process: a UMAP of 80 points took 9.5 s as shipped
    and 1.7 s with them cached, 3,000 points 14.3 s and 5.7 s, with identical projections
    (bench/umap_compile.py). numba recompiles when umap's source changes, and writes beside it (or to
    $NUMBA_CACHE_DIR, or a user cache folder)."""
    with _UMAP_CACHE_LOCK:
        if not _UMAP_CACHED:
            import umap.distances
            import umap.layouts
            import umap.sparse
            import umap.spectral
            import umap.umap_
            import umap.utils
            from numba.core.caching import NullCache
            from numba.core.registry import CPUDispatcher

            for module in (umap.umap_, umap.layouts, umap.spectral, umap.utils, umap.distances, umap.sparse):
                for fn in vars(module).values():
                    if isinstance(fn, CPUDispatcher) and isinstance(fn._cache, NullCache):
                        fn.enable_caching()
                        _UMAP_CACHED.append(fn)
    return list(_UMAP_CACHED)


def warm_umap_compilation(n: int = 64, seed: int = 0) -> float:
    """Run one small UMAP as the Map page does (cosine k-NN graph given) so that numba compiles umap-learn
    and pynndescent now and keeps the code on disk; `make install` calls it, so a user's first map does not
    wait for the compilation (about a minute on 2 cores). Returns the seconds it took."""
    from core.maps.neighbours import exact_knn

    started = time.perf_counter()
    x = np.random.default_rng(seed).normal(size=(n, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    umap_2d(x, exact_knn(x, 15))  # the default n_neighbors: the graph arrives as the Map page passes it
    return time.perf_counter() - started


def umap_2d(vectors: np.ndarray, knn: tuple[np.ndarray, np.ndarray] | None, *, n_neighbors: int = 15,
            min_dist: float = 0.1, seed: int | None = 42) -> np.ndarray:
    import umap

    cache_umap_compilation()

    n_neighbors = max(2, min(n_neighbors, len(vectors) - 1))
    kwargs: dict[str, Any] = {}
    if knn is not None:
        kwargs["precomputed_knn"] = (knn[0][:, :n_neighbors], knn[1][:, :n_neighbors], None)
    # A seed makes UMAP single-threaded; without one it uses every core (faster, not reproducible).
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed,
                        n_components=2, init="spectral" if len(vectors) > 10 else "random", **kwargs)
    return reducer.fit_transform(vectors).astype(np.float32)


def project(
    store: Store,
    embedding_run_id: int,
    *,
    method: str = "umap",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int | None = 42,
    progress: Progress | None = None,
) -> int:
    """Project an embedding run to 2-D; a recorded run whose points go to `projections`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    info = embed_run_info(store, embedding_run_id)
    if info["status"] != "finished":
        raise ValueError(f"embedding run {embedding_run_id} is {info['status']}, not finished")
    params = {"embedding_run_id": embedding_run_id, "method": method}
    if method == "umap":
        params |= {"n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed, "metric": "cosine"}
    dataset_id = None if pd.isna(info.get("dataset_id")) else int(info["dataset_id"])
    with store.run("project", params, dataset_id=dataset_id, model=info["model_key"]) as run:
        t0 = time.monotonic()
        _tell(progress, 0.05, "loading vectors")
        index = get_index(store, embedding_run_id)
        if method == "pca":
            xy = pca_2d(index.vectors, seed or 0)
        else:
            _tell(progress, 0.15, "nearest-neighbour graph (stored, reused by later projections)")
            knn_run, _, positions, distances = knn_graph(store, embedding_run_id, n_neighbors)
            run.set_metrics(knn_run_id=knn_run)
            _tell(progress, 0.4, "UMAP layout")
            xy = umap_2d(index.vectors, (positions, distances), n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
        _tell(progress, 0.9, "writing points")
        run.set_metrics(seconds=round(time.monotonic() - t0, 3))
        _write(store, run, index.ids, xy)
    _tell(progress, 1.0, "done")
    return run.run_id


def _tell(progress: Progress | None, fraction: float, what: str) -> None:
    if progress:
        progress(fraction, what)


def _write(store: Store, run: Run, ids: np.ndarray, xy: np.ndarray) -> None:
    table = pa.table({"sample_id": pa.array(ids, pa.int64()), "x": pa.array(xy[:, 0], pa.float32()),  # noqa: F841
                      "y": pa.array(xy[:, 1], pa.float32())})
    with store.transaction() as con:
        con.register("points", table)
        con.execute("INSERT INTO projections SELECT ?, sample_id, x, y FROM points", [run.run_id])
        run.finish(len(ids), con=con)


def load_projection(store: Store, projection_run_id: int) -> pd.DataFrame:
    """id, x, y of a projection run, keyed by sample id."""
    return store.query_df("SELECT sample_id AS id, x, y FROM projections WHERE run_id = ? ORDER BY sample_id",
                          [projection_run_id])


def projection_params(store: Store, projection_run_id: int) -> dict[str, Any]:
    import json

    df = store.query_df("SELECT params FROM runs WHERE run_id = ? AND kind = 'project'", [projection_run_id])
    if df.empty:
        raise KeyError(f"No projection run {projection_run_id}")
    return json.loads(df.params[0])
