"""Maps: an embedding run + a projection run (+ a cluster run), and what a page needs to draw one.

    from core.maps.points import make_map, load_points, list_maps
    m = make_map(store, "gsm8k-train", method="pca", clusters="kmeans", k=12)
    points = load_points(store, m.map_id, columns=["n_tokens"])   # id, x, y, cluster, title, dataset, ...

At a million points the browser gets a sample: `downsample` keeps at most a point budget, drawn per
grid cell in proportion to the cell's count (so density is preserved) and keeping at least one point in
every occupied cell (so outliers stay visible); a selection made on the sampled map is resolved against
every point (`ids_in_selection` tests box and lasso geometry on the full projection).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import core.maps.colours as map_colours
from core.maps.cluster import cluster as run_cluster
from core.maps.embed import embed
from core.maps.project import project
from core.store.database import Store, now_utc

POINT_BUDGET = 200_000
PREVIEW_CHARS = 120
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class MapInfo:
    map_id: int
    name: str
    datasets: list[str]
    embedding_run_id: int
    projection_run_id: int
    cluster_run_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def record_map(store: Store, datasets: Sequence[str], embedding_run_id: int, projection_run_id: int,
               cluster_run_id: int | None, name: str | None = None) -> MapInfo:
    names = list(datasets)
    dataset_id = store.dataset(names[0]).dataset_id if len(names) == 1 else None
    with store.transaction() as con:
        map_id = con.execute("INSERT INTO maps VALUES (nextval('map_id_seq'), ?, ?, ?, ?, ?, ?, ?) RETURNING map_id",
                             [name or "", dataset_id, names, embedding_run_id, projection_run_id, cluster_run_id,
                              now_utc()]).fetchone()[0]
        if not name:
            name = f"map {map_id}: {', '.join(names)}"
            con.execute("UPDATE maps SET name = ? WHERE map_id = ?", [name, map_id])
    return MapInfo(map_id, name, names, embedding_run_id, projection_run_id, cluster_run_id)


def make_map(
    store: Store,
    datasets: str | Sequence[str],
    *,
    embedding_run_id: int | None = None,
    model: str | None = None,
    text: str = "instruction",
    backend: str = "auto",
    method: str = "umap",
    clusters: str | None = "hdbscan",
    k: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> MapInfo:
    """Embed (or reuse `embedding_run_id`), project, cluster and record the map: one call, three runs."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    tell = progress or (lambda fraction, what: None)
    if embedding_run_id is None:
        tell(0.0, "embedding")
        report = embed(store, names, model=model, text=text, backend=backend,
                       progress=lambda done, total: tell(0.5 * done / max(total, 1), f"embedding {done}/{total}"))
        embedding_run_id = report.run_id
    tell(0.5, f"projecting ({method})")
    projection = project(store, embedding_run_id, method=method,
                         progress=lambda f, what: tell(0.5 + 0.35 * f, what))
    cluster_run = None
    if clusters:
        tell(0.85, f"clustering ({clusters}) and labelling")
        cluster_run = run_cluster(store, projection, method=clusters, k=k)
    info = record_map(store, names, embedding_run_id, projection, cluster_run, name)
    tell(1.0, "done")
    return info


def list_maps(store: Store, dataset: str | None = None) -> pd.DataFrame:
    """Maps newest first, with their method and cluster method, optionally only those showing `dataset`."""
    df = store.query_df(
        "SELECT m.*, json_extract_string(p.params, '$.method') AS projection, "
        "json_extract_string(c.params, '$.method') AS clustering, e.model_key, e.text_field, p.n_samples "
        "FROM maps m JOIN runs p ON p.run_id = m.projection_run_id "
        "JOIN embedding_runs e ON e.run_id = m.embedding_run_id "
        "LEFT JOIN runs c ON c.run_id = m.cluster_run_id ORDER BY m.map_id DESC")
    if dataset is not None and not df.empty:
        df = df[df.datasets.map(lambda names: dataset in list(names))]
    return df.reset_index(drop=True)


def get_map(store: Store, map_id: int) -> MapInfo:
    df = store.query_df("SELECT * FROM maps WHERE map_id = ?", [map_id])
    if df.empty:
        raise KeyError(f"No map {map_id}")
    row = df.iloc[0]
    cluster_id = None if pd.isna(row.cluster_run_id) else int(row.cluster_run_id)
    return MapInfo(int(row.map_id), row["name"], list(row.datasets), int(row.embedding_run_id),
                   int(row.projection_run_id), cluster_id)


# ---- points for a page ------------------------------------------------------------------------

BASE_COLUMNS = ("dataset", "n_tokens", "n_chars", "n_turns")


def colour_columns(store: Store, datasets: Sequence[str], map_id: int | None = None) -> dict[str, str]:
    """Columns a map can be coloured, sized or filtered by: name -> kind (numeric/category/bool).
    Meta fields come from core.browse.samples's catalog, which is also the whitelist for load_points; with
    `map_id`, also tags, hand labels, noise scores, duplicates and contamination that have values for
    that map's samples (core.maps.colours)."""
    from core.browse.samples import column_catalog

    found = {"cluster": "category", "dataset": "category", "n_tokens": "numeric", "n_chars": "numeric",
             "n_turns": "numeric"}
    for name in datasets:
        for column in column_catalog(store, name):
            if column.source == "meta" and column.kind in ("numeric", "category", "bool"):
                found.setdefault(column.name, column.kind)
    if map_id is not None:
        for name, kind in map_colours.offered(store, get_map(store, map_id).projection_run_id).items():
            found.setdefault(name, kind)
    return found


def load_points(store: Store, map_id: int, columns: Sequence[str] = ()) -> pd.DataFrame:
    """id, x, y, cluster, title, dataset, n_tokens, n_chars, n_turns, preview, plus requested columns:
    meta fields (checked against the datasets' catalogs) and core.maps.colours sources (checked against
    the store), one query each; names are never spliced into SQL, values and ids are bound. Samples
    without a value keep their row with a missing value."""
    info = get_map(store, map_id)
    wanted = list(dict.fromkeys(c for c in columns if c not in BASE_COLUMNS and c not in ("cluster", "title")))
    sourced = [map_colours.resolve(store, c) for c in wanted if map_colours.is_source_column(c)]
    meta = [c for c in wanted if not map_colours.is_source_column(c)]
    catalog = _meta_catalog(store, info.datasets) if meta else {}
    unknown = [c for c in meta if c not in catalog]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; known: {sorted(catalog)} and "
                         f"{', '.join(p + ':...' for p in map_colours.SOURCES)}")
    extra_sql, extra_params = "", []
    for i, name in enumerate(meta):
        extra_sql += f", json_extract_string(s.meta, ?) AS c{i}"
        extra_params.append(catalog[name].path)
    cluster_sql = ("c.cluster, coalesce(l.llm_label, l.label) AS title" if info.cluster_run_id is not None
                   else "NULL::INTEGER AS cluster, NULL::VARCHAR AS title")
    sql = (f"SELECT p.sample_id AS id, p.x, p.y, {cluster_sql}, d.name AS dataset, s.n_tokens, s.n_chars, "
           f"s.n_turns, left(regexp_replace(s.text, '\\s+', ' ', 'g'), {PREVIEW_CHARS}) AS preview{extra_sql} "
           "FROM projections p JOIN samples s ON s.id = p.sample_id JOIN datasets d ON d.dataset_id = s.dataset_id "
           + ("LEFT JOIN clusters c ON c.run_id = ? AND c.sample_id = p.sample_id "
              "LEFT JOIN cluster_labels l ON l.run_id = c.run_id AND l.cluster = c.cluster "
              if info.cluster_run_id is not None else "")
           + "WHERE p.run_id = ? ORDER BY p.sample_id")
    params = extra_params + ([info.cluster_run_id] if info.cluster_run_id is not None else []) + [info.projection_run_id]
    df = store.query_df(sql, params)
    df = df.rename(columns={f"c{i}": name for i, name in enumerate(meta)})
    for name in meta:
        if catalog[name].kind == "numeric":
            df[name] = pd.to_numeric(df[name], errors="coerce")
    for column in sourced:
        values = map_colours.load_values(store, column, info.projection_run_id)
        df[column.name] = map_colours.align(values, df["id"], column.kind)
    return df


ATLAS_TEXT_POINTS = 250_000  # up to this many points the atlas gets hover text; past it, none (see below)


def load_atlas_points(store: Store, map_id: int, columns: Sequence[str] = (), *,
                      text_points: int = ATLAS_TEXT_POINTS) -> pd.DataFrame:
    """What the Embedding Atlas drawer needs and no more: id, x, y, cluster and title (when the map has
    clusters), dataset, and the requested `columns` (colour, filter: as load_points resolves them). Hover
    text (`preview`, cut from the start of each text, never the whole text run through a regex) only for
    maps of at most `text_points` points: reading millions of texts dominated the server's time (236 s of
    581 at 2M points), so past that the browser gets coordinates and colours, and the text of what is
    selected comes from the store (core.maps.points.selected_rows)."""
    info = get_map(store, map_id)
    n = int(store.query_df("SELECT count(*) AS n FROM projections WHERE run_id = ?", [info.projection_run_id]).n[0])
    base = [c for c in BASE_COLUMNS if c in columns and c != "dataset"]
    wanted = [c for c in columns if c not in BASE_COLUMNS and c not in ("cluster", "title")]
    sql = ("SELECT p.sample_id AS id, p.x, p.y, "
           + ("c.cluster, " if info.cluster_run_id is not None else "NULL::INTEGER AS cluster, ")
           + "s.dataset_id" + "".join(f", s.{c}" for c in base)
           + (f", left(regexp_replace(left(s.text, {4 * PREVIEW_CHARS}), '\\s+', ' ', 'g'), {PREVIEW_CHARS}) AS preview"
              if n <= text_points else "")
           + " FROM projections p JOIN samples s ON s.id = p.sample_id "
           + ("LEFT JOIN clusters c ON c.run_id = ? AND c.sample_id = p.sample_id "
              if info.cluster_run_id is not None else "")
           + "WHERE p.run_id = ? ORDER BY p.sample_id")
    params = ([info.cluster_run_id] if info.cluster_run_id is not None else []) + [info.projection_run_id]
    df = store.query_df(sql, params)
    # Per-distinct-value lookups (a handful of datasets and clusters), not a per-row string join in SQL.
    names = store.query_df("SELECT dataset_id, name FROM datasets")
    df["dataset"] = pd.Categorical(df.pop("dataset_id").map(dict(zip(names.dataset_id, names.name, strict=True))))
    titles = (store.query_df("SELECT cluster, coalesce(llm_label, label) AS title FROM cluster_labels "
                             "WHERE run_id = ?", [info.cluster_run_id]) if info.cluster_run_id is not None else None)
    df["title"] = (df["cluster"].map(dict(zip(titles.cluster, titles.title, strict=True)))
                   if titles is not None else pd.Series(None, index=df.index, dtype=object))
    if wanted:
        extra = load_points_columns(store, map_id, wanted, df["id"])
        for name in wanted:
            df[name] = extra[name]
    return df


def load_points_columns(store: Store, map_id: int, columns: Sequence[str], ids: pd.Series) -> pd.DataFrame:
    """The requested meta fields and core.maps.colours sources of a map's points, aligned to `ids`
    (checked and bound as in load_points; no text read)."""
    info = get_map(store, map_id)
    sourced = [map_colours.resolve(store, c) for c in columns if map_colours.is_source_column(c)]
    meta = [c for c in columns if not map_colours.is_source_column(c)]
    out = pd.DataFrame(index=ids.index)
    if meta:
        catalog = _meta_catalog(store, info.datasets)
        unknown = [c for c in meta if c not in catalog]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; known: {sorted(catalog)} and "
                             f"{', '.join(p + ':...' for p in map_colours.SOURCES)}")
        select = "".join(f", json_extract_string(s.meta, ?) AS c{i}" for i in range(len(meta)))
        df = store.query_df(f"SELECT p.sample_id AS id{select} FROM projections p JOIN samples s ON s.id = p.sample_id "
                            "WHERE p.run_id = ? ORDER BY p.sample_id",
                            [catalog[c].path for c in meta] + [info.projection_run_id])
        df = df.set_index("id").reindex(ids.to_numpy()).set_axis(ids.index)
        for i, name in enumerate(meta):
            values = df[f"c{i}"]
            out[name] = pd.to_numeric(values, errors="coerce") if catalog[name].kind == "numeric" else values
    for column in sourced:
        values = map_colours.load_values(store, column, info.projection_run_id)
        out[column.name] = map_colours.align(values, ids, column.kind)
    return out


def _meta_catalog(store: Store, datasets: Sequence[str]) -> dict[str, Any]:
    from core.browse.samples import column_catalog

    found: dict[str, Any] = {}
    for name in datasets:
        for column in column_catalog(store, name):
            if column.source == "meta":
                found.setdefault(column.name, column)
    return found


def downsample(points: pd.DataFrame, budget: int = POINT_BUDGET, *, grid: int = 256, seed: int = 0) -> pd.DataFrame:
    """At most `budget` rows: per grid cell a share proportional to its count, at least one per cell."""
    n = len(points)
    if n <= budget:
        return points
    x, y = points.x.to_numpy(), points.y.to_numpy()
    cx = _bin(x, grid)
    cy = _bin(y, grid)
    cell = cx * grid + cy
    rng = np.random.default_rng(seed)
    key = rng.random(n)  # random rank within each cell
    order = np.lexsort((key, cell))
    sorted_cells = cell[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_cells)) + 1]
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    quota = np.maximum(1, np.floor(counts * budget / n)).astype(np.int64)
    keep = order[rank < np.repeat(quota, counts)]
    if len(keep) > budget:  # the at-least-one rule can overshoot slightly: trim at random
        keep = rng.choice(keep, size=budget, replace=False)
    return points.iloc[np.sort(keep)]


def _bin(values: np.ndarray, grid: int) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scaled = (values - lo) / (hi - lo or 1.0)
    return np.clip((scaled * grid).astype(np.int64), 0, grid - 1)


# ---- selections from the chart ----------------------------------------------------------------


def _inside_polygon(x: np.ndarray, y: np.ndarray, px: Sequence[float], py: Sequence[float]) -> np.ndarray:
    """Even-odd ray casting, vectorised over the points."""
    inside = np.zeros(len(x), dtype=bool)
    px, py = np.asarray(px, float), np.asarray(py, float)
    j = len(px) - 1
    for i in range(len(px)):
        crosses = (py[i] > y) != (py[j] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (px[j] - px[i]) * (y - py[i]) / (py[j] - py[i]) + px[i]
        inside ^= crosses & (x < at)
        j = i
    return inside


def ids_in_selection(points: pd.DataFrame, selection: dict[str, Any] | None) -> list[int]:
    """Sample ids chosen by a plotly selection (Streamlit's `event.selection`): every point of `points`
    (all of them, not only those drawn) inside its boxes or lassos, plus points picked one by one."""
    if not selection:
        return []
    x, y = points.x.to_numpy(), points.y.to_numpy()
    chosen = np.zeros(len(points), dtype=bool)
    for box in selection.get("box") or []:
        (x0, x1), (y0, y1) = sorted(box["x"][:2]), sorted(box["y"][:2])
        chosen |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    for lasso in selection.get("lasso") or []:
        chosen |= _inside_polygon(x, y, lasso["x"], lasso["y"])
    ids = set(points.id.to_numpy()[chosen].tolist())
    if not selection.get("box") and not selection.get("lasso"):
        ids |= set(clicked_ids(selection))
    return sorted(int(i) for i in ids)


def clicked_ids(selection: dict[str, Any] | None) -> list[int]:
    """Ids of the points in a selection event (each point's customdata holds its sample id)."""
    out = []
    for point in (selection or {}).get("points") or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and data:
            data = data[0]
        if data is not None:
            out.append(int(data))
    return out


def clicked_point(selection: dict[str, Any] | None) -> int | None:
    """The sample id of a single clicked point: a selection event with one point and no box or lasso
    (with clickmode "event+select" a click in the box tool selects the point under the cursor)."""
    if not selection or selection.get("box") or selection.get("lasso"):
        return None
    ids = clicked_ids(selection)
    return ids[0] if len(ids) == 1 else None


def selection_predicate(map_id: int, selection: dict[str, Any] | None) -> dict[str, Any]:
    """The selection as a description stored with a saved selection (which map, which boxes/lassos)."""
    sel = selection or {}
    out = {"map_id": map_id, "box": sel.get("box") or [], "lasso": sel.get("lasso") or []}
    if sel.get("atlas"):  # Embedding Atlas's selection: its SQL predicate over the table it was sent
        out["atlas"] = str(sel["atlas"])
    return out


def selected_rows(store: Store, ids: Sequence[int], limit: int = 1000) -> pd.DataFrame:
    """The selected samples for a table: id, dataset, n_tokens, text start (first `limit`)."""
    if not ids:
        return pd.DataFrame(columns=["id", "dataset", "n_tokens", "text"])
    return store.query_df(
        "SELECT s.id, d.name AS dataset, s.n_tokens, left(s.text, 300) AS text FROM samples s "
        "JOIN datasets d USING (dataset_id) WHERE s.id IN (SELECT unnest(?::BIGINT[])) ORDER BY s.id LIMIT ?",
        [list(map(int, ids)), limit])


def act_on_selection(store: Store, ids: Sequence[int], action: str, *, name: str = "", map_id: int | None = None,
                     selection: dict[str, Any] | None = None, who: str = "") -> dict[str, Any]:
    """What the map page's buttons do: "save" (a named selection), "queue" (a selection with origin
    'map' for the labelling page) or "exclude" (hand exclusion from mixtures)."""
    import core.browse.selections as sel

    if not ids:
        raise ValueError("nothing is selected")
    predicate = selection_predicate(map_id or 0, selection)
    if action == "exclude":
        n = sel.exclude(store, ids, reason=name or f"excluded on map {map_id}", origin="map", who=who)
        return {"action": action, "n": n}
    if action not in ("save", "queue"):
        raise ValueError(f"unknown action {action!r}")
    label = name or (f"map {map_id} selection" if action == "save" else f"labelling queue from map {map_id}")
    description = "to label" if action == "queue" else "selected on the map"
    selection_id = sel.save_selection(store, label, ids, origin="map", description=description,
                                      predicate=predicate, created_by=who)
    return {"action": action, "selection_id": selection_id, "n": len(set(ids)), "name": label}


def describe(info: MapInfo, store: Store) -> str:
    proj = json.loads(store.query_df("SELECT params FROM runs WHERE run_id = ?", [info.projection_run_id]).params[0])
    return (f"{info.name}: embedding run {info.embedding_run_id}, projection run {info.projection_run_id} "
            f"({proj.get('method')}), cluster run {info.cluster_run_id}")
