"""Map page: embed, project and cluster a dataset; look at the map; select on it and act on the selection."""

from __future__ import annotations

import zlib
from typing import Any

import pandas as pd
import streamlit as st

import ui_jobs
from core.browse.samples import sample_text
from core.errors import UserError
from core.maps.atlas import AtlasTable, atlas_table, selected_ids
from core.maps.cluster import cluster_table
from core.maps.embed import (
    BACKENDS,
    DEFAULT_MODEL,
    TEXT_FIELDS,
    agreement_text,
    backend_help,
    run_vectors_note,
)
from core.maps.estimates import embedding_plan
from core.maps.figures import map_figure
from core.maps.neighbours import neighbours, search
from core.maps.points import (
    POINT_BUDGET,
    act_on_selection,
    clicked_point,
    colour_columns,
    get_map,
    ids_in_selection,
    list_maps,
    load_atlas_points,
    load_points,
    make_map,
    selected_rows,
)
from core.store.database import Store, StoreError
from core.store.jobs import Job
from ui import error, md_text, open_store, run_page
from ui_atlas import atlas_ready, draw_atlas


@st.cache_data(ttl=600, show_spinner=False, max_entries=8)
def _points(db: str, map_id: int, columns: tuple[str, ...]) -> pd.DataFrame:
    return load_points(Store(db), map_id, columns)


@st.cache_data(ttl=600, show_spinner=False, max_entries=8)
def _labels(db: str, cluster_run_id: int | None) -> pd.DataFrame | None:
    return None if cluster_run_id is None else cluster_table(Store(db), cluster_run_id)


def compute_panel(store: Store, datasets: list[str]) -> None:
    with st.expander("Compute a new map", expanded=list_maps(store, datasets[0]).empty):
        c1, c2, c3, c4, c5 = st.columns(5)
        text = c1.selectbox("Embed which text", TEXT_FIELDS, key="text_field")
        backend = c2.selectbox("Backend", BACKENDS, key="backend", help=md_text(backend_help()))
        method = c3.selectbox("Projection", ["pca", "umap"], key="method",
                              help="UMAP is compiled once per install (make install does it); where it was not, the first "
                                   "UMAP compiles for about a minute and later runs read the compiled code")
        clusters = c4.selectbox("Clusters", ["kmeans", "hdbscan", "none"], key="clusters")
        k = c5.number_input("k (k-means)", 2, 500, 12, key="k")
        st.caption(embedding_plan(store, datasets, text=text, backend=backend).describe(DEFAULT_MODEL)
                   + (" UMAP adds about a minute of compilation once per install, unless make install did it."
                      if method == "umap" else ""))
        if backend == "onnx-int8":
            st.caption(md_text(f"onnx-int8 vectors are {agreement_text(DEFAULT_MODEL, backend)}."))
        if st.button("Embed, project and cluster", key="compute", type="primary", disabled=ui_jobs.running("map_job")):
            def work(job: Job) -> object:
                return make_map(store, datasets, text=text, backend=backend, method=method,
                                clusters=None if clusters == "none" else clusters, k=int(k), progress=job.report)

            ui_jobs.start("map_job", "map", f"Map of {', '.join(datasets)}", work, str(store.path))
        ui_jobs.follow("map_job", on_done=_map_done)
    ui_jobs.show_announcement("map_job")


def _map_done(job: Job) -> None:
    # The map picker is drawn after this, on the rerun the job's end triggers: its state shows the new map.
    st.session_state["map_pick"] = job.result.map_id
    ui_jobs.announce("map_job", f"Made {job.result.name}")


def pick_map(maps: pd.DataFrame, key: str, default: int = 0) -> int | None:
    if maps.empty:
        return None
    labels = {int(r.map_id): f"{r['name']} · {r.projection} · {r.clustering or 'no clusters'} · {r.model_key} · "
              f"{r.text_field} · {r.n_samples} pts" for _, r in maps.iterrows()}
    options = list(labels)
    if st.session_state.get(key) not in options:  # first visit, or a map of datasets no longer chosen
        st.session_state[key] = options[min(default, len(options) - 1)]
    return st.selectbox("Map", options, format_func=labels.get, key=key)


DRAG_TOOLS = {"pans (click a point to read it)": "pan", "selects a box": "select", "selects a lasso": "lasso"}
SAMPLE_COLUMNS = ("cluster", "dataset", "n_tokens", "n_chars", "n_turns")


@st.cache_data(ttl=30, show_spinner=False, max_entries=16)
def _columns(db: str, datasets: tuple[str, ...], map_id: int) -> dict[str, str]:
    # Short-lived: the tags, labels and runs it lists change while the page is open.
    return colour_columns(Store(db), list(datasets), map_id)


def _extra(view: dict[str, Any]) -> tuple[str, ...]:
    """The columns beyond the samples' own that the view needs (one cache entry per combination)."""
    return tuple(dict.fromkeys(c for c in (view["color"], view["size"], view["filter"])
                               if c and c not in SAMPLE_COLUMNS))


DRAWERS = {"auto": "Embedding Atlas past the point budget, else plotly", "atlas": "Embedding Atlas (every point)",
           "plotly": "Plotly (click a point to read it)"}


def _filtered(db: str, map_id: int, view: dict[str, Any], points: pd.DataFrame | None = None) -> pd.DataFrame:
    points = _points(db, map_id, _extra(view)) if points is None else points
    if view["filter"] and view["range"] is not None:
        lo, hi = view["range"]
        keep = points[view["filter"]].between(lo, hi)
        if view["keep_missing"]:
            keep |= points[view["filter"]].isna()
        points = points[keep]
    return points


@st.cache_resource(ttl=600, show_spinner=False, max_entries=4)
def _atlas_table(db: str, map_id: int, view_key: str, view: dict[str, Any], color: str) -> AtlasTable:
    # A resource, not data: the table of 2M points is shared as it is, never copied per rerun.
    # Loaded here, not through _points: st.cache_data would pickle a copy of 2M rows on every read.
    # Only what the atlas draws (ids, x, y, the colour and filter columns): no text for a large map.
    store = Store(db)
    info = get_map(store, map_id)
    wanted = tuple(dict.fromkeys(c for c in (color, view["filter"]) if c and c not in ("cluster", "dataset")))
    points = _filtered(db, map_id, view, load_atlas_points(store, map_id, wanted))
    return atlas_table(points, color=color, labels=_labels(db, info.cluster_run_id))


def draw(store: Store, map_id: int, view: dict[str, Any], key: str) -> tuple[pd.DataFrame, dict | None]:
    info = get_map(store, map_id)
    color = view["color"] if view["color"] != "cluster" or info.cluster_run_id is not None else "dataset"
    if view["drawer"] == "atlas":
        return draw_every_point(store, map_id, view, color, key)
    points = _filtered(str(store.path), map_id, view)
    fig, fig_info = map_figure(points, color=color, size=view["size"], labels=_labels(str(store.path), info.cluster_run_id),
                               density=view["density"], budget=view["budget"], title=info.name,
                               dragmode=view.get("dragmode", "pan"))
    st.caption(fig_info.message + ("" if fig_info.hover_text else "; hover shows ids only at this size"))
    st.caption(md_text(run_vectors_note(store, info.embedding_run_id)))
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key=key,
                            width="stretch")
    selection = event.get("selection") if isinstance(event, dict) or hasattr(event, "get") else None
    return points, (dict(selection) if selection else None)


def draw_every_point(store: Store, map_id: int, view: dict[str, Any], color: str,
                     key: str) -> tuple[pd.DataFrame, dict | None]:
    """The atlas: every point in the browser; its selection (a SQL predicate) resolved to ids in core."""
    view_key = repr(sorted((k, v) for k, v in view.items() if k in ("color", "filter", "range", "keep_missing")))
    table = _atlas_table(str(store.path), map_id, view_key + color, view, color)
    st.caption(table.message + "; size and density are plotly's (choose it above)" if view["size"] or view["density"]
               else table.message)
    # The component loads its table once per key: a new map, colour or filter is a new key.
    predicate = draw_atlas(table, key=f"{key}-atlas-{map_id}-{zlib.crc32((view_key + color).encode())}")
    if predicate is None:
        return table.frame, None
    try:
        ids = selected_ids(table, predicate)
    except UserError as exc:  # the browser sent SQL the sandbox refuses: say so, select nothing
        error(exc)
        return table.frame, None
    return table.frame, {"atlas": predicate, "ids": ids}


def view_controls(store: Store, datasets: list[str], map_ids: list[int]) -> dict[str, Any]:
    """Colour, size, filter: every column of the (first) map, the filter range from its values."""
    columns = _columns(str(store.path), tuple(datasets), map_ids[0])
    numeric = [c for c, kind in columns.items() if kind == "numeric"]
    c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 1, 1.4])
    color = c1.selectbox("Colour by", list(columns), key="color")
    size = c2.selectbox("Size by", ["(none)"] + numeric, key="size")
    flt = c3.selectbox("Filter by", ["(none)"] + numeric, key="filter")
    density = c4.toggle("Density", key="density")
    budget = c5.number_input("Point budget", 1_000, 1_000_000, POINT_BUDGET, step=50_000, key="budget")
    tool = st.radio("Dragging on the map", list(DRAG_TOOLS), horizontal=True, key="drag_tool",
                    help="Streamlit reads a click on a point only while panning; box and lasso select many points "
                         "(the chart's toolbar switches too)")
    if "drawer" not in st.session_state and st.query_params.get("draw") in DRAWERS:  # a link: /Map?draw=plotly
        st.session_state["drawer"] = st.query_params["draw"]
    drawer = st.radio("Draw with", list(DRAWERS), format_func=DRAWERS.get, horizontal=True, key="drawer",
                      help="Embedding Atlas draws every point in the browser (WebGL); plotly draws at most the point "
                           "budget, and reads a clicked point with its neighbours")
    view = {"color": color, "size": None if size == "(none)" else size, "filter": None if flt == "(none)" else flt,
            "range": None, "keep_missing": True, "density": density, "budget": int(budget),
            "dragmode": DRAG_TOOLS[tool], "drawer": _drawer(store, map_ids, drawer, int(budget))}
    if st.button("Reload values", key="reload_values", help="Points are cached for 10 minutes: reload after new "
                 "tags, labels or runs to see them"):
        for cached in (_columns, _points, _spread):
            cached.clear()
    if view["filter"]:
        view |= filter_range(store, map_ids, view)
    return view


def _drawer(store: Store, map_ids: list[int], choice: str, budget: int) -> str:
    """"atlas" or "plotly": auto is the atlas only past the point budget, where plotly would sample; below
    it plotly shows every point too, loads faster and reads a clicked point."""
    if choice == "plotly" or not atlas_ready():
        if choice == "atlas":
            st.caption("Embedding Atlas is not installed (pip install --no-deps embedding-atlas==0.26.0): plotly draws")
        return "plotly"
    if choice == "atlas":
        return "atlas"
    sizes = list_maps(store).set_index("map_id").n_samples
    return "atlas" if any(int(sizes.get(m, 0)) > budget for m in map_ids) else "plotly"


@st.cache_data(ttl=600, show_spinner=False, max_entries=16)
def _spread(db: str, map_id: int, columns: tuple[str, ...], name: str) -> tuple[float, float, int, bool] | None:
    """min, max, how many points lack a value, whether all values are whole; None without values.
    Cached apart from the points so a rerun does not copy the whole frame again for four numbers."""
    values = _points(db, map_id, columns)[name]
    present = pd.to_numeric(values, errors="coerce").dropna()
    if present.empty:
        return None
    return float(present.min()), float(present.max()), int(values.isna().sum()), bool((present == present.round()).all())


def filter_range(store: Store, map_ids: list[int], view: dict[str, Any]) -> dict[str, Any]:
    """A slider over the filter column's actual range on the shown maps (not a fixed one)."""
    name = view["filter"]
    spreads = [s for s in (_spread(str(store.path), m, _extra(view), name) for m in map_ids) if s]
    if not spreads:
        st.caption(md_text(f"{name}: no values on this map"))
        return {}
    lo, hi = min(s[0] for s in spreads), max(s[1] for s in spreads)
    n_missing, whole = sum(s[2] for s in spreads), all(s[3] for s in spreads)
    if lo == hi:
        st.caption(md_text(f"{name}: every point with a value has {lo:g}"))
        return {}
    lo, hi = (int(lo), int(hi)) if whole else (lo, hi)
    out: dict[str, Any] = {"range": st.slider(md_text(f"{name} range"), min_value=lo, max_value=hi, value=(lo, hi), key="range")}
    if n_missing:
        out["keep_missing"] = st.checkbox(f"Keep the {n_missing:,} points without a {name} value", value=True,
                                          key="range_keep_missing")
    return out


def selection_panel(store: Store, map_id: int, points: pd.DataFrame, selection: dict | None) -> None:
    clicked = clicked_point(selection)
    if clicked is not None:  # a click (no box or lasso): read the point
        point_panel(store, map_id, clicked)
        return
    ids = selection["ids"] if selection and "atlas" in selection else ids_in_selection(points, selection)
    if not ids:
        st.info("Click a point to read it and its nearest neighbours; to select many samples, drag a box or a "
                "lasso (choose it above or in the chart's toolbar). On Embedding Atlas, drag a rectangle or lasso "
                "(its toolbar) or click a category." if not selection else "The selection holds no point.")
        return
    st.subheader(f"Selected: {len(ids):,} samples")
    st.dataframe(selected_rows(store, ids), hide_index=True, width="stretch", key="selected_table")
    name = st.text_input("Name for the selection", key="sel_name", placeholder=f"map {map_id} selection")
    b1, b2, b3 = st.columns(3)
    for column, action, label in ((b1, "save", "Save as selection"), (b2, "queue", "Send to labelling queue"),
                                  (b3, "exclude", "Exclude from mixtures")):
        if column.button(label, key=f"act_{action}"):
            result = act_on_selection(store, ids, action, name=name, map_id=map_id, selection=selection)
            st.success(f"{label}: {result['n']} samples" + (f" (selection {result['selection_id']})"
                                                               if "selection_id" in result else ""))


def point_panel(store: Store, map_id: int, sample_id: int) -> None:
    info = get_map(store, map_id)
    text = sample_text(store, sample_id)
    st.subheader(f"Sample {sample_id}")
    st.text("(gone)" if text is None else text)
    st.caption("Nearest neighbours (cosine)")
    st.dataframe(neighbours(store, info.embedding_run_id, sample_id, k=10), hide_index=True, width="stretch")


def search_panel(store: Store, map_id: int) -> None:
    query = st.text_input("Semantic search", key="semantic", placeholder="describe what you are looking for")
    if query.strip():
        info = get_map(store, map_id)
        st.dataframe(search(store, info.embedding_run_id, query, k=20), hide_index=True, width="stretch")


def main() -> None:
    st.set_page_config(page_title="Assay · Map", layout="wide")
    st.title("Embedding map")
    store, names = open_store()
    try:
        datasets = st.multiselect("Datasets", names, default=names[:1], key="datasets")
        if not datasets:
            return
        compute_panel(store, datasets)
        maps = list_maps(store, datasets[0])
        if maps.empty:
            st.info("No map of this dataset yet: compute one above.")
            return
        compare = st.toggle("Compare two maps", key="compare")
        if compare:
            left, right = st.columns(2)
            with left:
                map_id = pick_map(maps, "map_pick")
            with right:
                other = pick_map(maps, "map_pick_2", default=1)
            # Stacked by default: two maps side by side in half the width are too squeezed to read.
            beside = st.toggle("Side by side", key="side_by_side", help="For a wide screen")
            view = view_controls(store, datasets, [map_id, other])
            left, right = st.columns(2) if beside else (st.container(), st.container())
            with left:
                points, selection = draw(store, map_id, view, "map_chart")
            with right:
                draw(store, other, view, "map_chart_2")
        else:
            map_id = pick_map(maps, "map_pick")
            view = view_controls(store, datasets, [map_id])
            points, selection = draw(store, map_id, view, "map_chart")
        selection_panel(store, map_id, points, selection)
        search_panel(store, map_id)
    except StoreError as exc:
        error(exc)
    except (ValueError, KeyError) as exc:
        error(f"Could not draw that map: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}")


run_page(main)
