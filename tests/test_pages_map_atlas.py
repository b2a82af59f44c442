"""The map page's Embedding Atlas path through Streamlit's AppTest: which drawer draws, what the component
is given, and its selection (a SQL predicate) saved as a selection of sample ids."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

import core.browse.selections as selection
import core.maps.atlas as atlas
from core.maps.points import load_points

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "2_Map.py")

pytestmark = pytest.mark.skipif(not atlas.available(), reason="embedding-atlas 0.26.0 is not installed")


@pytest.fixture(scope="module")
def big_map(tmp_path_factory):
    from bench.map_draw import build_store

    return build_store(tmp_path_factory.mktemp("atlas") / "store.duckdb", 0)  # the 7,473 GSM8K train questions


def _atlas(at: AppTest):
    found = [e for e in at.get("component_instance") if e.proto.component_name.endswith("embedding_atlas")]
    return found[0] if found else None


def test_atlas_draws_every_point_and_saves_its_selection(big_map, monkeypatch) -> None:
    store, map_id = big_map
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    n = len(load_points(store, map_id))
    at = AppTest.from_file(PAGE, default_timeout=240).run()
    assert not at.exception and not at.error
    # Below the point budget, auto draws with plotly (every point, a click reads a point).
    assert at.radio(key="drawer").value == "auto" and at.get("plotly_chart") and _atlas(at) is None
    # Past it, auto draws with the atlas: every point goes to the browser, none sampled.
    at.number_input(key="budget").set_value(1_000).run()
    assert not at.exception and not at.error
    element = _atlas(at)
    assert element is not None and not at.get("plotly_chart")
    assert any(f"showing all {n:,} points (Embedding Atlas)" in c.value for c in at.caption)
    table = pa.ipc.open_stream(element.proto.special_args[0].arrow_dataframe.data.data).read_all()
    assert table.num_rows == n and {"x", "y", "text", "cluster"} <= set(table.column_names)
    # Hostile dataset text goes as the characters it is: the component shows it as text (browser test).
    assert any(t.startswith("<img src=x onerror=alert(1)>") for t in table.column("text").to_pylist()[:5])
    props = json.loads(element.proto.json_args)["props"]
    assert props["initialState"]["charts"]["1"]["data"]["category"] == "cluster"  # coloured as chosen
    assert props["embeddingViewLabels"] and props["data"]["text"] == "text"

    # The browser's selection arrives as the component's value: resolved in core, saved as sample ids.
    key = element.proto.id.split("-", 2)[-1]
    predicate = '"x" > 0 AND "y" > 0'
    at.session_state[key] = {"predicate": predicate}
    at.run()
    assert not at.exception and not at.error
    points = load_points(store, map_id)
    want = sorted(points.id[(points.x > 0) & (points.y > 0)].tolist())
    assert any(f"Selected: {len(want):,} samples" in h.value for h in at.subheader)
    at.text_input(key="sel_name").set_value("upper right")
    at.button(key="act_save").click().run()
    assert not at.exception and not at.error
    saved = selection.list_selections(store)
    sid = int(saved[saved.name == "upper right"].selection_id.iloc[0])
    assert selection.selection_ids(store, sid) == want

    # A predicate the sandbox refuses is a sentence on the page, not a traceback, and saves nothing.
    at.session_state[key] = {"predicate": "1=1); DROP TABLE samples; --"}
    at.run()
    assert not at.exception and any("not a SQL condition" in e.value for e in at.error)
    assert store.query_df("SELECT count(*) AS n FROM samples").n[0] == n

    # Colouring by another column passes that column; plotly stays one click away.
    at.session_state[key] = {}
    at.selectbox(key="color").set_value("n_tokens").run()
    assert json.loads(_atlas(at).proto.json_args)["props"]["initialState"]["charts"]["1"]["data"]["category"] == "n_tokens"
    at.radio(key="drawer").set_value("plotly").run()
    assert at.get("plotly_chart") and _atlas(at) is None and not at.exception
