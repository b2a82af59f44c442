"""The map page through Streamlit's AppTest on a real store with real embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import selection
from core.maps import ids_in_selection, list_maps, load_points
from tests.test_embed import N_ARENA, N_GSM8K, embedded_store

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "2_Map.py")


@pytest.fixture
def page_store(tmp_path_factory, shared: Path, monkeypatch):
    store, run = embedded_store(tmp_path_factory.getbasetemp(), shared)
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    return store, run


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_page_computes_a_map_and_acts_on_a_selection(page_store) -> None:
    store, _ = page_store
    at = AppTest.from_file(PAGE, default_timeout=240).run()
    _no_errors(at)
    assert any("No map" in i.value for i in at.info)
    at.multiselect(key="datasets").set_value(["gsm8k", "arena"]).run()
    at.selectbox(key="method").set_value("pca")
    at.selectbox(key="clusters").set_value("kmeans")
    at.button(key="compute").click().run()
    _no_errors(at)
    maps = list_maps(store, "gsm8k")
    assert len(maps) == 1 and any("Made" in s.value for s in at.success)
    assert any(f"showing all {N_GSM8K + N_ARENA} points" in c.value for c in at.caption)
    # Colour by a numeric column with the density layer on: still draws.
    at.selectbox(key="color").set_value("n_tokens")
    at.toggle(key="density").set_value(True).run()
    _no_errors(at)

    # A box selection, as Streamlit hands it to the page, resolved by the function the page calls.
    points = load_points(store, int(maps.map_id[0]))
    x0, x1 = points.x.quantile([0.0, 0.5])
    box = {"points": [], "box": [{"x": [x0, x1], "y": [points.y.min(), points.y.max()]}], "lasso": []}
    chosen = ids_in_selection(points, box)
    assert 0 < len(chosen) < len(points)
    # And through the page: AppTest cannot drag, but the chart's widget state can be set.
    try:
        at.session_state["map_chart"] = {"selection": box}
        at.run()
    except Exception as exc:  # noqa: BLE001 - depends on the Streamlit version
        pytest.skip(f"AppTest cannot set the plotly selection state here: {exc}")
    _no_errors(at)
    if not any("Selected:" in h.value for h in at.subheader):
        pytest.skip("this Streamlit ignores a plotly selection set through session state")
    assert any(f"Selected: {len(chosen):,} samples" in h.value for h in at.subheader)
    at.text_input(key="sel_name").set_value("left half")
    at.button(key="act_queue").click().run()
    _no_errors(at)
    saved = selection.list_selections(store)
    assert "left half" in saved.to_string()


def test_page_without_datasets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_DB", str(tmp_path / "empty.duckdb"))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    _no_errors(at)
    assert any("No datasets" in i.value for i in at.info)
