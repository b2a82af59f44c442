"""Embedding Atlas on the map: the table it is sent, its SQL selection resolved to sample ids in a sandbox
(never against the store), the saved selection, and the offline component copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import core.browse.selections as selection
import core.maps.atlas as atlas
from core.errors import InputError
from core.maps.atlas import atlas_table, selected_ids
from core.maps.points import act_on_selection, list_maps, load_points, make_map
from tests.test_embed import embedded_store

pytestmark = pytest.mark.skipif(not atlas.available(), reason="embedding-atlas 0.26.0 is not installed")


@pytest.fixture
def mapped(tmp_path_factory, shared: Path):
    store, run = embedded_store(tmp_path_factory.getbasetemp(), shared)
    info = make_map(store, ["gsm8k", "arena"], embedding_run_id=run, method="pca", clusters="kmeans", k=5)
    return store, info


def test_predicate_becomes_the_saved_selection_of_its_samples(mapped) -> None:
    store, info = mapped
    points = load_points(store, info.map_id)
    table = atlas_table(points, color="cluster")
    assert len(table.frame) == len(points) and table.text_chars > 0  # every point, with its text
    # What the atlas sends for a rectangle plus a legend click (its own SQL): resolved on the server.
    lo, hi = points.x.quantile([0.2, 0.7])
    chosen = table.frame[table.color].cat.categories[0]
    predicate = f'("x" BETWEEN {lo} AND {hi}) AND ("cluster" IN (\'{chosen}\'))'
    ids = selected_ids(table, predicate)
    cluster = table.frame[table.color].astype(str).to_numpy()
    want = points.id[(points.x.between(lo, hi)) & (cluster == chosen)].tolist()
    assert ids == sorted(want) and 0 < len(ids) < len(points)
    # Row numbers (the component's own __row_index__) map back to sample ids, not to positions.
    assert selected_ids(table, "__row_index__ = 0") == [int(points.id.iloc[0])]
    result = act_on_selection(store, ids, "save", name="atlas pick", map_id=info.map_id, selection={"atlas": predicate})
    assert selection.selection_ids(store, result["selection_id"]) == ids
    stored = store.query_df("SELECT predicate FROM selections WHERE selection_id = ?", [result["selection_id"]])
    assert json.loads(stored.predicate[0])["atlas"] == predicate
    assert selected_ids(table, None) == [] and selected_ids(table, "  ") == []


HOSTILE = [
    "1=1); DROP TABLE dataframe; --",  # a second statement
    "1=1) UNION ALL SELECT 123456789 --",  # more rows than the map's
    "id IN (SELECT id FROM samples)",  # the store is not there to read
    "x IN (SELECT * FROM read_csv('/etc/passwd'))",  # no file access
    "1=1); ATTACH '/tmp/assay-atlas-evil.duckdb' AS e; SELECT 1 WHERE (1=1",
    "1=1); SET enable_external_access = true; SELECT 1 WHERE (1=1",
    "x >",  # not SQL
]


def test_hostile_predicates_never_reach_the_store(mapped, monkeypatch) -> None:
    store, info = mapped
    points = load_points(store, info.map_id)
    table = atlas_table(points, color="cluster")
    before = store.query_df("SELECT count(*) AS n FROM samples").n[0]
    for predicate in HOSTILE:
        with pytest.raises(InputError):
            selected_ids(table, predicate)
    assert not Path("/tmp/assay-atlas-evil.duckdb").exists()
    # Valid SQL that widens the selection selects at most the map's own samples.
    assert selected_ids(table, '"x" > 1e30) OR (1=1') == sorted(points.id.tolist())
    # A query that would run for ever is stopped.
    monkeypatch.setattr(atlas, "PREDICATE_SECONDS", 0.5)
    with pytest.raises(InputError, match="took over"):
        selected_ids(table, "(SELECT count(*) FROM range(100000000000) a) > 0")
    with pytest.raises(InputError):
        selected_ids(table, "x > 0 OR " * 20_000 + "true")  # over PREDICATE_CHARS
    assert store.query_df("SELECT count(*) AS n FROM samples").n[0] == before
    assert "dataframe" not in store.query_df("SHOW TABLES").to_string()


def test_every_colour_source_of_the_map_passes_to_the_atlas(tmp_path_factory, shared: Path) -> None:
    from core.maps.points import colour_columns
    from tests.test_maps import coloured_map

    store, map_id, _ = coloured_map(tmp_path_factory.getbasetemp(), shared)
    datasets = list(list_maps(store).set_index("map_id").datasets[map_id])
    columns = colour_columns(store, datasets, map_id)
    sourced = [c for c in columns if ":" in c]
    assert len(sourced) >= 4
    points = load_points(store, map_id, list(columns))  # meta fields and every source
    for column, kind in columns.items():
        table = atlas_table(points, color=column)
        values = table.frame[table.color]
        assert isinstance(values.dtype, pd.CategoricalDtype) and not values.isna().any(), column
        if kind == "numeric" and column != "cluster":
            assert all(c == "(none)" or " – " in c or c.replace(".", "").isdigit() for c in values.cat.categories)
        present = points[column].notna() if column != "cluster" else pd.Series(True, index=points.index)
        assert (values[~present.to_numpy()] == "(none)").all(), column


def test_lean_atlas_points_draw_as_the_full_points_and_past_the_bound_send_no_text(tmp_path_factory,
                                                                                  shared: Path) -> None:
    """load_atlas_points reads ids, x, y and the asked columns only: the atlas table it makes (points,
    colours) is the one load_points makes, for every colour column; past text_points it sends no text."""
    from core.maps.points import colour_columns, load_atlas_points
    from tests.test_maps import coloured_map

    store, map_id, _ = coloured_map(tmp_path_factory.getbasetemp(), shared)
    datasets = list(list_maps(store).set_index("map_id").datasets[map_id])
    columns = colour_columns(store, datasets, map_id)
    full = load_points(store, map_id, list(columns))
    for column in columns:
        lean = load_atlas_points(store, map_id, [column] if column not in ("cluster", "dataset") else [])
        assert lean["id"].tolist() == full["id"].tolist(), column
        want, got = atlas_table(full, color=column), atlas_table(lean, color=column)
        pd.testing.assert_frame_equal(got.frame, want.frame, check_categorical=True, obj=column)
        assert (got.ids == want.ids).all()
    bare = load_atlas_points(store, map_id, ["n_tokens"], text_points=len(full) - 1)
    assert "preview" not in bare and "text" not in atlas_table(bare, color="n_tokens").frame
    assert "select points to read their texts" in atlas_table(bare, color="n_tokens").message


def test_numbers_bin_categories_fold_and_text_stays_text() -> None:
    n = 5000
    rng = np.random.default_rng(0)
    hostile = "<img src=x onerror=alert(1)> **bold** [a](http://x.y)"
    points = pd.DataFrame({"id": np.arange(n) + 7, "x": rng.normal(size=n), "y": rng.normal(size=n),
                           "cluster": pd.array(rng.integers(-1, 3, n), dtype="Int64"), "title": "t",
                           "preview": hostile, "score": rng.random(n), "many": [f"v{i % 300}" for i in range(n)]})
    points.loc[0, "score"] = np.nan
    scored = atlas_table(points, color="score")
    assert len(scored.frame["score"].cat.categories) == atlas.NUMERIC_BINS + 1 and scored.frame["score"][0] == "(none)"
    many = atlas_table(points, color="many").frame["many"]
    assert len(many.cat.categories) == 60 and "other" in many.cat.categories
    clusters = atlas_table(points, color="cluster").frame["cluster"]
    assert set(clusters.cat.categories) == {"0: t", "1: t", "2: t", "unclustered"}
    # Text is passed as the characters it is (the component shows it as text), cut to the text budget.
    small = atlas_table(points, color=None, text_bytes=20 * n)
    assert small.text_chars == 20 and small.frame["text"][0] == hostile[:20]
    assert "text" not in atlas_table(points, color=None, text_bytes=n).frame  # too little room: no text at all


def test_component_copy_loads_nothing_from_a_cdn(tmp_path: Path) -> None:
    folder = atlas.component_dir(tmp_path)
    script = next((folder / "assets").glob("index-*.js")).read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in script and "enable f16" not in script and "`shader-f16`" not in script
    for name in ("duckdb-eh.wasm", "duckdb-mvp.wasm", "duckdb-browser-eh.worker.js", "duckdb-browser-mvp.worker.js"):
        assert (folder / "assets" / "duckdb" / name).stat().st_size > 100_000
    assert atlas.component_dir(tmp_path) == folder  # built once
