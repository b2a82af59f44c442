"""The map page through Streamlit's AppTest on a real store with real embeddings."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import core.browse.selections as selection
from core.maps.points import ids_in_selection, list_maps, load_points
from tests.jobs_support import finish_jobs
from tests.test_embed import N_ARENA, N_GSM8K, embedded_store

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "2_Map.py")


@pytest.fixture
def page_store(tmp_path_factory, shared: Path, monkeypatch):
    store, run = embedded_store(tmp_path_factory.getbasetemp(), shared)
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    return store, run


def _n_points(data: list | dict) -> int:
    """Length of a trace array in plotly's JSON: a list, or numpy bytes as {dtype, bdata}."""
    if isinstance(data, dict):
        return len(np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]))
    return len(data)


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
    finish_jobs(at)
    _no_errors(at)
    maps = list_maps(store, "gsm8k")
    assert len(maps) == 1 and any("Made" in s.value for s in at.success)
    assert any(f"showing all {N_GSM8K + N_ARENA} points" in c.value for c in at.caption)
    assert at.selectbox(key="map_pick").value == int(maps.map_id[0])
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any("exact fp32" in c for c in captions), captions  # which vectors the map shows
    # Choosing int8 says how far its vectors are from exact ones, from the benchmark's record.
    at.selectbox(key="backend").set_value("onnx-int8").run()
    assert any("mean cosine" in c.value.replace("\\", "") for c in at.caption)
    at.selectbox(key="backend").set_value("auto")
    # A second map made on the page is the one shown (the picker had map 1 in its state).
    at.selectbox(key="clusters").set_value("none")
    at.button(key="compute").click().run()
    finish_jobs(at)
    _no_errors(at)
    maps = list_maps(store, "gsm8k")
    assert len(maps) == 2 and at.selectbox(key="map_pick").value == int(maps.map_id[0])
    assert any(f"Made {maps['name'][0]}" in s.value.replace("\\", "") for s in at.success)  # shown escaped
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert figure["layout"]["dragmode"] == "pan"  # where Streamlit passes a click on a point to the page
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
    assert any("no datasets yet" in i.value for i in at.info)  # ui.EMPTY_STORE, as on the other pages


def test_page_colours_by_tags_labels_and_scores_and_filters_by_real_range(tmp_path_factory, shared: Path,
                                                                          monkeypatch) -> None:
    from tests.test_maps import coloured_map

    store, map_id, x = coloured_map(tmp_path_factory.getbasetemp(), shared)
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    at = AppTest.from_file(PAGE, default_timeout=240).run()
    at.multiselect(key="datasets").set_value(["gsm8k", "arena"]).run()
    _no_errors(at)
    offered = set(at.selectbox(key="color").options)
    n = x["noise"]
    assert {"tag:difficulty", "tag:response_quality", "label:task/category", f"noise:{n}/cleanlab score",
            f"noise:{n}/cleanlab flag", f"dup:run {x['dedup']}", f"contamination:run {x['contam']}"} <= offered
    assert "tag:language" not in offered  # only in an unfinished run
    assert {"tag:response_quality", f"noise:{n}/cleanlab score"} <= set(at.selectbox(key="filter").options)

    # Coloured by a tag: every point drawn, the tag's values and the missing ones in the legend.
    at.selectbox(key="color").set_value("tag:difficulty").run()
    _no_errors(at)
    assert any(f"showing all {N_GSM8K + N_ARENA} points" in c.value for c in at.caption)
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t.get("name") for t in figure["data"]}
    assert {"very hard", "hard", "(none)"} <= names
    assert sum(_n_points(t["customdata"]) for t in figure["data"] if t["type"] == "scattergl") == N_GSM8K + N_ARENA
    for column in ("label:task/category", f"noise:{n}/cleanlab flag", f"dup:run {x['dedup']}",
                   f"noise:{n}/cleanlab score"):
        at.selectbox(key="color").set_value(column).run()
        _no_errors(at)

    # The filter slider spans the column's real range on this map, not a fixed 0-10,000.
    points = load_points(store, map_id, ["tag:response_quality"])
    at.selectbox(key="filter").set_value("tag:response_quality").run()
    _no_errors(at)
    slider = at.slider(key="range")
    assert (slider.min, slider.max) == (points["tag:response_quality"].min(), points["tag:response_quality"].max())
    assert slider.value == (slider.min, slider.max)
    # Points without a value are kept unless asked otherwise; then only those in range remain.
    assert any(f"showing all {N_GSM8K + N_ARENA} points" in c.value for c in at.caption)
    slider.set_value((0.0, 2.0))
    at.checkbox(key="range_keep_missing").uncheck().run()
    _no_errors(at)
    inside = int(points["tag:response_quality"].between(0.0, 2.0).sum())
    assert any(f"showing all {inside} points" in c.value for c in at.caption)
    at.selectbox(key="filter").set_value("n_tokens").run()
    _no_errors(at)
    slider = at.slider(key="range")
    assert (slider.min, slider.max) == (int(points.n_tokens.min()), int(points.n_tokens.max()))
