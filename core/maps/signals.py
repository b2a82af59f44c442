"""Signal provider for maps (core/signals): map.cluster, map.x and map.y from the newest map holding each
dataset. Apart from core/maps/points.py so that listing signals does not import the embedding and projection
stack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def newest_map_runs(con: Any, dataset_ids: Sequence[int]) -> tuple[int, int, int | None] | None:
    """(embedding, projection, cluster run) of the newest map holding these datasets, or None."""
    names = [r[0] for r in con.execute("SELECT name FROM datasets WHERE list_contains(?::INTEGER[], dataset_id)",
                                       [list(dataset_ids)]).fetchall()]
    row = con.execute("SELECT m.embedding_run_id, m.projection_run_id, m.cluster_run_id FROM maps m "
                      "JOIN runs r ON r.run_id = m.projection_run_id AND r.status = 'finished' "
                      "WHERE list_contains(?::INTEGER[], m.dataset_id) OR len(list_intersect(m.datasets, ?)) > 0 "
                      "ORDER BY m.map_id DESC LIMIT 1", [list(dataset_ids), names]).fetchall()
    return tuple(row[0]) if row else None  # type: ignore[return-value]


def _map_signal(name: str, kind: str, description: str, read: str) -> Any:
    from core.signals.registry import Bound, Signal

    def build(con: Any, dataset_ids: Sequence[int], run: int | None) -> Bound:
        runs = newest_map_runs(con, dataset_ids) if run is None else None
        if name == "map.cluster":
            run_id = run if run is not None else (runs[2] if runs and runs[2] is not None else -1)
            return Bound("SELECT c.sample_id, CAST(c.cluster AS VARCHAR) || coalesce(': ' || l.label, '') AS value "
                         "FROM clusters c LEFT JOIN cluster_labels l ON l.run_id = c.run_id AND l.cluster = c.cluster "
                         "WHERE c.run_id = ?", [run_id], (run_id,) if run_id >= 0 else ())
        run_id = run if run is not None else (runs[1] if runs else -1)
        return Bound(f"SELECT sample_id, {name[-1]} AS value FROM projections WHERE run_id = ?", [run_id],
                     (run_id,) if run_id >= 0 else ())

    return Signal(name, kind, description, read, build, family="maps")


def signals(con: Any, dataset_ids: Sequence[int] | None) -> list[Any]:
    """Signal provider: map.cluster, map.x, map.y from the newest map holding the dataset."""
    if not con.execute("SELECT 1 FROM maps LIMIT 1").fetchall():
        return []
    where = "the newest map holding the dataset (core/maps/points.py, assay map)"
    return [
        _map_signal("map.cluster", "category", f"cluster (HDBSCAN or k-means) with its keyword label, {where}",
                    "-1 = noise (no cluster)"),
        _map_signal("map.x", "number", f"x on the 2-D projection (UMAP or PCA), {where}", "position only"),
        _map_signal("map.y", "number", f"y on the 2-D projection (UMAP or PCA), {where}", "position only"),
    ]
