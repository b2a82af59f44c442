"""The Embedding Atlas component for the map page (UI only: the table and the selection are core.maps.atlas).

The component is the package's own (embedding_atlas.streamlit), declared from core.maps.atlas.component_dir,
the copy that loads DuckDB-WASM from the package's files rather than from a CDN.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from core.maps.atlas import AtlasTable, available, component_dir


@lru_cache(maxsize=1)
def _component() -> Any:
    import streamlit.components.v1 as components

    return components.declare_component("embedding_atlas", path=str(component_dir()))


def atlas_ready() -> bool:
    """Whether the atlas can be drawn here (package installed at the pinned version, component built)."""
    if not available():
        return False
    try:
        _component()
    except (OSError, RuntimeError):
        return False
    return True


def draw_atlas(table: AtlasTable, key: str) -> str | None:
    """Draw every point of `table`; return the selection's SQL predicate (None when nothing is selected).
    The component loads its table once per key, so `key` must change whenever the table does."""
    from embedding_atlas.options import make_embedding_atlas_props

    text = "text" if "text" in table.frame else None
    props = make_embedding_atlas_props(x="x", y="y", text=text, labels=table.labels or None)
    if not table.labels:  # no clusters: no labels either (computing them in the browser costs seconds at 2M)
        props["embeddingViewConfig"] = {"autoLabelEnabled": False}
    if table.color is not None:
        # The default view with its points coloured by the map's colour column (the user may change it).
        chart = {"type": "embedding", "title": "Map", "data": {"x": "x", "y": "y", "text": text,
                                                               "category": table.color}}
        props["initialState"] = {"charts": {"1": chart}}
    value = _component()(data_frame=table.frame, props=props, key=key, default={})
    predicate = value.get("predicate") if isinstance(value, dict) else None
    return predicate or None
