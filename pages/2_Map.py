"""Map page: embed, project and cluster a dataset; look at the map; select on it and act on the selection."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.cluster import cluster_table
from core.embed import BACKENDS, TEXT_FIELDS
from core.maps import (
    POINT_BUDGET,
    act_on_selection,
    clicked_ids,
    colour_columns,
    get_map,
    ids_in_selection,
    list_maps,
    load_points,
    make_map,
    selected_rows,
)
from core.neighbours import neighbours, search
from core.store import Store, StoreError, default_db_path
from core.viz_map import map_figure


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
        backend = c2.selectbox("Backend", BACKENDS, key="backend",
                               help="onnx-int8: about 2x faster on CPU, cosine ~0.99 to the torch vectors")
        method = c3.selectbox("Projection", ["pca", "umap"], key="method",
                              help="UMAP's first run in a process compiles for ~30 s")
        clusters = c4.selectbox("Clusters", ["kmeans", "hdbscan", "none"], key="clusters")
        k = c5.number_input("k (k-means)", 2, 500, 12, key="k")
        if st.button("Embed, project and cluster", key="compute", type="primary"):
            bar = st.progress(0.0, text="starting")
            info = make_map(store, datasets, text=text, backend=backend, method=method,
                            clusters=None if clusters == "none" else clusters, k=int(k),
                            progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=what))
            st.session_state["map_id"] = info.map_id
            st.success(f"Made {info.name}")


def pick_map(maps: pd.DataFrame, key: str, default: int = 0) -> int | None:
    if maps.empty:
        return None
    labels = {int(r.map_id): f"{r['name']} · {r.projection} · {r.clustering or 'no clusters'} · {r.model_key} · "
              f"{r.text_field} · {r.n_samples} pts" for _, r in maps.iterrows()}
    options = list(labels)
    wanted = st.session_state.get("map_id")
    index = options.index(wanted) if key == "map_pick" and wanted in options else min(default, len(options) - 1)
    return st.selectbox("Map", options, index=index, format_func=labels.get, key=key)


def draw(store: Store, map_id: int, view: dict[str, Any], key: str) -> tuple[pd.DataFrame, dict | None]:
    info = get_map(store, map_id)
    meta_cols = tuple(c for c in (view["color"], view["size"], view["filter"]) if c and c in view["meta"])
    points = _points(str(store.path), map_id, meta_cols)
    if view["filter"] and view["range"] is not None:
        lo, hi = view["range"]
        points = points[points[view["filter"]].between(lo, hi)]
    color = view["color"] if view["color"] != "cluster" or info.cluster_run_id is not None else "dataset"
    fig, fig_info = map_figure(points, color=color, size=view["size"], labels=_labels(str(store.path), info.cluster_run_id),
                               density=view["density"], budget=view["budget"], title=info.name)
    st.caption(fig_info.message + ("" if fig_info.hover_text else "; hover shows ids only at this size"))
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key=key,
                            width="stretch")
    selection = event.get("selection") if isinstance(event, dict) or hasattr(event, "get") else None
    return points, (dict(selection) if selection else None)


def view_controls(store: Store, datasets: list[str]) -> dict[str, Any]:
    columns = colour_columns(store, datasets)
    numeric = [c for c, kind in columns.items() if kind == "numeric"]
    c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 1, 1.4])
    color = c1.selectbox("Colour by", list(columns), key="color")
    size = c2.selectbox("Size by", ["(none)"] + numeric, key="size")
    flt = c3.selectbox("Filter by", ["(none)"] + numeric, key="filter")
    density = c4.toggle("Density", key="density")
    budget = c5.number_input("Point budget", 1_000, 1_000_000, POINT_BUDGET, step=50_000, key="budget")
    rng = None
    if flt != "(none)":
        rng = st.slider(f"{flt} range", value=(0.0, 10_000.0), key="range")
    meta = {c for c in columns if c not in ("cluster", "dataset", "n_tokens", "n_chars", "n_turns")}
    return {"color": color, "size": None if size == "(none)" else size, "filter": None if flt == "(none)" else flt,
            "range": rng, "density": density, "budget": int(budget), "meta": meta}


def selection_panel(store: Store, map_id: int, points: pd.DataFrame, selection: dict | None) -> None:
    ids = ids_in_selection(points, selection)
    if not ids:
        st.info("Drag a box or lasso on the map to select samples; click a point to read it.")
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
    clicked = clicked_ids(selection)
    if len(clicked) == 1:
        point_panel(store, map_id, clicked[0])


def point_panel(store: Store, map_id: int, sample_id: int) -> None:
    info = get_map(store, map_id)
    text = store.query_df("SELECT text FROM samples WHERE id = ?", [sample_id])
    st.subheader(f"Sample {sample_id}")
    st.text(text.text[0] if len(text) else "(gone)")
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
    store = Store(default_db_path())
    try:
        names = store.dataset_names()
        if not names:
            st.info("No datasets yet: load one on the home page first.")
            return
        datasets = st.multiselect("Datasets", names, default=names[:1], key="datasets")
        if not datasets:
            return
        compute_panel(store, datasets)
        maps = list_maps(store, datasets[0])
        if maps.empty:
            st.info("No map of this dataset yet: compute one above.")
            return
        compare = st.toggle("Compare two maps side by side", key="compare")
        view = view_controls(store, datasets)
        if compare:
            left, right = st.columns(2)
            with left:
                map_id = pick_map(maps, "map_pick")
                points, selection = draw(store, map_id, view, "map_chart")
            with right:
                other = pick_map(maps, "map_pick_2", default=1)
                draw(store, other, view, "map_chart_2")
        else:
            map_id = pick_map(maps, "map_pick")
            points, selection = draw(store, map_id, view, "map_chart")
        selection_panel(store, map_id, points, selection)
        search_panel(store, map_id)
    except StoreError as exc:
        st.error(str(exc))
    except (ValueError, KeyError) as exc:
        st.error(f"Could not draw that map: {exc}")


main()
