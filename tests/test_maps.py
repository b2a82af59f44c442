"""Projection, clusters and labels, search, the map's points and figure, selections, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import selection
from core.cli import main as cli_main
from core.cluster import cluster_table, ctfidf_keywords, distinct_labels
from core.maps import (
    act_on_selection,
    downsample,
    ids_in_selection,
    list_maps,
    load_points,
    make_map,
)
from core.neighbours import knn_graph, neighbours, search
from core.store import Store
from core.viz_map import escape_hover, map_figure
from tests.test_embed import N_ARENA, N_GSM8K, embedded_store, read_jsonl


@pytest.fixture
def emb(tmp_path_factory, shared: Path) -> tuple[Store, int]:
    return embedded_store(tmp_path_factory.getbasetemp(), shared)


def test_pca_kmeans_map_with_distinct_labels(emb) -> None:
    store, run = emb
    info = make_map(store, ["gsm8k", "arena"], embedding_run_id=run, method="pca", clusters="kmeans", k=6)
    labels = cluster_table(store, info.cluster_run_id)
    assert len(labels) == 6 and labels["size"].sum() == N_GSM8K + N_ARENA
    assert all(t.strip() for t in labels.title) and labels.title.nunique() == 6
    points = load_points(store, info.map_id)
    assert len(points) == N_GSM8K + N_ARENA and set(points.dataset) == {"gsm8k", "arena"}
    assert {"id", "x", "y", "cluster", "title", "preview"} <= set(points.columns)
    runs = store.runs().set_index("run_id")
    assert runs.loc[info.projection_run_id, "kind"] == "project"
    assert json.loads(runs.loc[info.projection_run_id, "params"])["embedding_run_id"] == run
    assert runs.loc[info.cluster_run_id, "status"] == "finished"
    assert list_maps(store, "arena").map_id.tolist() == [info.map_id]
    # GSM8K word problems and Arena-Hard prompts separate: some cluster is mostly one of them.
    purity = points.groupby("cluster").dataset.agg(lambda d: d.value_counts(normalize=True).iloc[0])
    assert purity.max() > 0.9


def test_umap_hdbscan_reuses_the_knn_graph(emb) -> None:
    store, run = emb
    info = make_map(store, ["gsm8k", "arena"], embedding_run_id=run, method="umap", clusters="hdbscan")
    knn_runs = store.runs()
    assert (knn_runs.kind == "knn").sum() == 1
    again = make_map(store, ["gsm8k", "arena"], embedding_run_id=run, method="umap", clusters=None)
    assert (store.runs().kind == "knn").sum() == 1  # second projection reused the stored graph
    assert again.cluster_run_id is None
    labels = cluster_table(store, info.cluster_run_id)
    real = labels[labels.cluster != -1]
    assert len(real) >= 2 and real.title.nunique() == len(real) and all(real.title.str.len() > 0)
    points = load_points(store, info.map_id)
    assert np.isfinite(points[["x", "y"]].to_numpy()).all()


def test_knn_graph_matches_brute_force(emb) -> None:
    store, run = emb
    _, ids, positions, distances = knn_graph(store, run, 10)
    assert (positions[:, 0] == np.arange(len(ids))).all() and np.allclose(distances[:, 0], 0)
    assert (np.diff(distances, axis=1) >= -1e-6).all()


def test_search_finds_the_exact_sample_by_its_own_text(emb, shared: Path) -> None:
    store, run = emb
    question = read_jsonl(shared / "gsm8k" / "test.jsonl", 8)[7]["question"]
    sample_id = int(store.query_df(
        "SELECT id FROM samples WHERE messages[1].content = ?", [question]).id[0])
    hits = search(store, run, question, k=5)
    assert int(hits.id[0]) == sample_id and hits.score[0] > 0.999
    near = neighbours(store, run, sample_id, k=5)
    assert sample_id not in near.id.tolist() and len(near) == 5 and (near.score.diff().dropna() <= 1e-6).all()
    # Hybrid: restrict to Arena-Hard prompts first; the GSM8K question can no longer be found.
    arena_ids = store.query_df("SELECT id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = 'arena'").id
    hybrid = search(store, run, question, k=5, candidate_ids=arena_ids.tolist())
    assert set(hybrid.id) <= set(arena_ids) and len(hybrid) == 5


def test_ctfidf_labels_are_non_empty_and_distinct() -> None:
    keywords = ctfidf_keywords({0: ["apples and oranges cost money", "apples are red"],
                                1: ["python code function bug", "write a python script"],
                                2: ["the and of", "a an the"]})
    labels = distinct_labels(keywords)
    assert "apples" in labels[0] and "python" in labels[1]
    assert all(labels.values()) and len(set(labels.values())) == 3
    same = distinct_labels({0: ["a", "b", "c", "d", "e"], 1: ["a", "b", "c", "d", "f"]})
    assert same[0] != same[1]


def test_downsample_keeps_budget_density_and_outliers() -> None:
    rng = np.random.default_rng(0)
    dense = rng.normal(0, 1, size=(200_000, 2))
    outliers = np.array([[40.0, 40.0], [-40.0, 35.0]])
    xy = np.vstack([dense, outliers])
    points = pd.DataFrame({"id": np.arange(len(xy)), "x": xy[:, 0], "y": xy[:, 1]})
    shown = downsample(points, 20_000)
    assert len(shown) <= 20_000 and len(shown) > 18_000
    assert {len(xy) - 1, len(xy) - 2} <= set(shown.id)  # outliers kept
    # Density preserved: the share of points within 1 sigma is about the same.
    inner = lambda df: float(((df.x ** 2 + df.y ** 2) < 1).mean())  # noqa: E731
    assert abs(inner(shown) - inner(points)) < 0.03


def test_selection_geometry_covers_points_not_drawn() -> None:
    points = pd.DataFrame({"id": [1, 2, 3, 4], "x": [0.0, 1.0, 2.0, 5.0], "y": [0.0, 1.0, 2.0, 5.0]})
    assert ids_in_selection(points, {"box": [{"x": [-0.5, 1.5], "y": [1.5, -0.5]}]}) == [1, 2]
    lasso = {"lasso": [{"x": [1.5, 6, 6, 1.5], "y": [1.5, 1.5, 6, 6]}]}
    assert ids_in_selection(points, lasso) == [3, 4]
    assert ids_in_selection(points, {"points": [{"customdata": 2}], "box": [], "lasso": []}) == [2]
    assert ids_in_selection(points, None) == []


def test_actions_on_a_selection(emb) -> None:
    store, _ = emb
    ids = store.query_df("SELECT id FROM samples ORDER BY id LIMIT 7").id.tolist()
    saved = act_on_selection(store, ids, "save", name="odd ones", map_id=1, selection={"box": [{"x": [0, 1], "y": [0, 1]}]})
    assert selection.selection_ids(store, saved["selection_id"]) == sorted(ids)
    queued = act_on_selection(store, ids[:3], "queue", map_id=1)
    listed = selection.list_selections(store)
    assert queued["selection_id"] in listed.iloc[:, 0].tolist()
    act_on_selection(store, ids[:2], "exclude", map_id=1)
    assert set(ids[:2]) <= selection.excluded_ids(store)
    with pytest.raises(ValueError):
        act_on_selection(store, [], "save")


def test_figure_escapes_text_and_reports_sampling() -> None:
    n = 5_000
    rng = np.random.default_rng(1)
    points = pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "y": rng.normal(size=n),
                           "dataset": ["a"] * n, "cluster": rng.integers(0, 3, n), "title": "t <b>",
                           "n_tokens": rng.integers(1, 500, n),
                           "preview": ["<script>alert(1)</script> & <img src=x onerror=alert(2)>"] * n})
    labels = pd.DataFrame({"cluster": [0, 1, 2], "size": [1, 1, 1], "title": ["<i>x</i>", "y", "z"],
                           "x": [0.0, 1, 2], "y": [0.0, 1, 2]})
    fig, info = map_figure(points, color="cluster", size="n_tokens", labels=labels, density=True, budget=1_000)
    assert info.sampled and info.shown <= 1_000 and "of 5,000" in info.message
    payload = fig.to_json()
    assert "<script>" not in payload and "<img" not in payload and "<i>" not in payload
    assert escape_hover("<b>&") == "&lt;b&gt;&amp;"
    numeric, _ = map_figure(points, color="n_tokens")
    assert len(numeric.data) == 1


def test_cli_embed_map_search(tmp_path: Path, shared: Path, capsys) -> None:
    from tests.test_embed import load_real

    db = tmp_path / "cli.duckdb"
    load_real(Store(db), shared)
    assert cli_main(["--db", str(db), "--json", "embed", "--dataset", "arena"]) == 0
    embedded = json.loads(capsys.readouterr().out)
    assert embedded["n_items"] == N_ARENA
    assert cli_main(["--db", str(db), "--json", "map", "--dataset", "arena", "--method", "pca", "--clusters",
                     "kmeans", "--k", "4"]) == 0
    mapped = json.loads(capsys.readouterr().out)
    assert len(mapped["clusters"]) == 4
    prompt = read_jsonl(shared / "arena-hard" / "arena_hard_v0.1_question.jsonl", 3)[2]["turns"][0]["content"]
    assert cli_main(["--db", str(db), "--json", "search", "--dataset", "arena", prompt, "--k", "3"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["hits"][0]["score"] > 0.999
    assert cli_main(["--db", str(db), "map", "--dataset", "nope"]) == 2
