"""Projection, clusters and labels, search, the map's points and figure, selections, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import core.browse.selections as selection
import core.maps.project as project_module
from core.cli.main import main as cli_main
from core.maps.cluster import cluster_table, ctfidf_keywords, distinct_labels, phrases, stop_words
from core.maps.figures import escape_hover, map_figure
from core.maps.neighbours import get_index, knn_graph, neighbours, search
from core.maps.points import (
    act_on_selection,
    clicked_point,
    downsample,
    ids_in_selection,
    list_maps,
    load_points,
    make_map,
)
from core.maps.project import cache_umap_compilation, warm_umap_compilation
from core.store.database import Store
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
    # umap-learn's compiled functions were written to numba's disk cache: the next process reads them
    # (bench/umap_compile.py: identical projections, 9.5 s -> 1.7 s for 80 points).
    # (Functions given their signatures are compiled as umap is imported, before this; they compile fast.)
    _assert_umap_compiled_on_disk()


def _assert_umap_compiled_on_disk() -> None:
    compiled = [fn for fn in cache_umap_compilation() if fn.signatures and fn._can_compile]
    assert len(compiled) >= 3
    assert all(Path(fn._cache._cache_file._index_path).is_file() for fn in compiled)


def test_install_warm_up_compiles_what_the_map_page_runs(emb, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make install` runs the warm-up so that a user's first UMAP map reads compiled code. numba compiles
    # one version per argument type and memory layout, so the warm-up must hand UMAP the vectors and k-NN
    # graph laid out as the Map page's projection does (a 16-neighbour graph sliced to 15 was not).
    calls: list[tuple] = []
    real = project_module.umap_2d
    monkeypatch.setattr(project_module, "umap_2d", lambda x, knn, **kw: calls.append((x, knn, kw)) or real(x, knn, **kw))
    assert warm_umap_compilation(n=24) > 0
    (vectors, graph, kwargs), = calls
    store, run = emb
    _, _, positions, distances = knn_graph(store, run, 15)
    for warm, page in zip((vectors, *graph), (get_index(store, run).vectors, positions, distances), strict=True):
        assert (warm.dtype, warm.ndim, warm.flags.c_contiguous) == (page.dtype, page.ndim, page.flags.c_contiguous)
    assert graph[0].shape[1] == positions.shape[1] and kwargs == {}
    _assert_umap_compiled_on_disk()


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
    # Plotly decodes only &amp; &lt; &gt; (and numeric entities): a quote stays a quote, never &quot;.
    assert escape_hover('say "hi" it\'s') == 'say "hi" it\'s'
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


# ---- colouring by tags, hand labels, noise scores, duplicates, contamination -----------------------

CODE_WORDS = ("code", "python", "function", "script", "program", "sql", "javascript", "implement", "api")


def _tag_run(store: Store, rows: list[dict], *, finished: bool = True) -> int:
    """A tagging run recorded as core.tags.taggers.job records one: runs + tag_runs rows, then write_tags."""
    import core.tags.results as T

    with store.transaction() as con:
        run = store.start_run("tag", params={"backend": "test", "n": len(rows)}, sample_filter="test", con=con)
        con.execute("INSERT INTO tag_runs VALUES (?, 'offline', ?, 'test', ?, '{}', '{}')",
                    [run, sorted({r["tag"] for r in rows}), len({r["sample_id"] for r in rows})])
    T.write_tags(store, run, T.rows_frame(rows))
    if finished:
        store.finish_run(run)
    return run


def coloured_map(tmp_root: Path, shared: Path) -> tuple[Store, int, dict]:
    """A PCA map of real GSM8K and Arena-Hard samples, with real tags, hand labels, a real cleanlab
    noise run on those labels, a duplicate run and a real 13-gram contamination run on part of it.
    Returns the store, the map id and what each source should show for some sample ids."""
    import core.labels.labelling as L
    from core.contamination.check import check_contamination
    from core.dedup.groups import write_groups
    from core.ingest.importer import ingest_records
    from core.noise import NoiseConfig, run_noise
    from core.tags.taggers.base import row
    from core.tags.taggers.job import run_tagging

    store, run = embedded_store(tmp_root, shared)
    info = make_map(store, ["gsm8k", "arena"], embedding_run_id=run, method="pca", clusters="kmeans", k=4)
    samples = store.query_df("SELECT s.id, d.name AS dataset, s.text FROM samples s JOIN datasets d USING (dataset_id) "
                             "ORDER BY s.id")
    gsm = samples[samples.dataset == "gsm8k"].id.tolist()
    arena = samples[samples.dataset == "arena"]
    # Tags: an older and a newer finished run, and a newer run still running (ignored until it finishes).
    levels = ["very easy", "easy", "medium", "hard", "very hard"]
    older = _tag_run(store, [row(s, "difficulty", value=levels[i % 5]) for i, s in enumerate(gsm[:10])]
                     + [row(s, "response_quality", score=0.5 * i - 1) for i, s in enumerate(gsm[:10])])
    newer = _tag_run(store, [row(s, "difficulty", value="very hard") for s in gsm[:3]]
                     + [row(s, "difficulty", status="not_computed", detail="no model") for s in gsm[3:6]]
                     + [row(s, "response_quality", status="request_error", detail="timeout") for s in gsm[:10]])
    _tag_run(store, [row(s, "difficulty", value="easy") for s in gsm[:10]]
             + [row(s, "language", value="de") for s in gsm[:10]], finished=False)
    turns = run_tagging(store, dataset="arena", tags="turns")  # a real offline run: single/multi per sample
    # Hand labels: coding or other for every Arena-Hard prompt, a tie on one and an adjudication on another.
    schema = L.save_schema(store, L.parse_schema({"name": "task", "fields": [
        {"name": "category", "type": "single_choice", "options": ["coding", "other"]},
        {"name": "rating", "type": "rating"}]}))
    coding = arena.text.str.lower().str.contains("|".join(CODE_WORDS))
    for value, ids in (("coding", arena.id[coding]), ("other", arena.id[~coding])):
        L.record_bulk(store, schema, [int(i) for i in ids], {"category": value}, annotator="ann1")
    tie, adjudicated = int(arena.id.iloc[0]), int(arena.id.iloc[1])
    L.record_label(store, schema, tie, {"category": "coding" if not coding.iloc[0] else "other"}, annotator="ann2")
    L.record_label(store, schema, adjudicated, {"category": "other", "rating": 4}, annotator="ann2")
    L.adjudicate(store, schema, adjudicated, "category", "coding", annotator="lead")
    # A real noise run (cleanlab only: seconds) on those hand labels, over the map's own embeddings.
    noise = run_noise(store, "arena", "labels:task/category", ["cleanlab"], embedding_run_id=run,
                      config=NoiseConfig(folds=3))
    # A duplicate run over GSM8K, written by the dedup module's writer.
    gsm_id = store.dataset("gsm8k").dataset_id
    dedup = store.start_run("dedup", dataset_id=gsm_id, params={"method": "exact", "dataset_ids": [gsm_id]})
    write_groups(store, dedup, pd.DataFrame({"group_id": [0, 0, 1, 1, 1], "sample_id": gsm[:5],
                                             "is_representative": [True, False, True, False, False],
                                             "similarity": [1.0] * 5}))
    store.finish_run(dedup)
    # Contamination: three GSM8K test questions loaded as an evaluation set; 13-gram overlap finds them.
    ingest_records(store, read_jsonl(shared / "gsm8k" / "test.jsonl", 3), name="gsm-eval", shape="qa", is_eval=True)
    contam = check_contamination(store, "gsm8k", against=["gsm-eval"], methods=["ngram13"])
    expect = {"gsm": gsm, "arena": arena.id.tolist(), "coding": dict(zip(arena.id, coding, strict=True)),
              "tie": tie, "adjudicated": adjudicated, "older": older, "newer": newer, "turns_run": turns.run_id,
              "noise": int(noise.attrs["run_id"]), "noise_table": noise, "dedup": dedup, "contam": contam.run_id}
    return store, info.map_id, expect


@pytest.fixture(scope="module")
def coloured(tmp_path_factory, shared: Path) -> tuple[Store, int, dict]:
    """Built once for this module: the tests using it only read it."""
    return coloured_map(tmp_path_factory.getbasetemp(), shared)


def test_colour_columns_offer_tags_labels_noise_duplicates_contamination(coloured) -> None:
    from core.maps.points import colour_columns

    store, map_id, x = coloured
    offered = colour_columns(store, ["gsm8k", "arena"], map_id)
    n = x["noise"]
    assert {name: offered.get(name) for name in (
        "tag:difficulty", "tag:response_quality", "tag:turns", "label:task/category", "label:task/rating",
        f"noise:{n}/cleanlab score", f"noise:{n}/cleanlab flag", f"noise:{n}/combined score",
        f"noise:{n}/given label", f"dup:run {x['dedup']}", f"contamination:run {x['contam']}")} == {
        "tag:difficulty": "category", "tag:response_quality": "numeric", "tag:turns": "category",
        "label:task/category": "category", "label:task/rating": "category",
        f"noise:{n}/cleanlab score": "numeric", f"noise:{n}/cleanlab flag": "bool",
        f"noise:{n}/combined score": "numeric", f"noise:{n}/given label": "category",
        f"dup:run {x['dedup']}": "category", f"contamination:run {x['contam']}": "category"}
    # Nothing empty is offered: the running run's tag, methods that did not run.
    assert "tag:language" not in offered and f"noise:{n}/aum score" not in offered
    assert not any(name.startswith("noise:") and name.endswith("cartography flag") for name in offered)
    # The base and meta columns are still there, and without a map none of the sourced ones.
    assert offered["n_tokens"] == "numeric" and offered["cluster"] == "category"
    assert not any(":" in name for name in colour_columns(store, ["gsm8k", "arena"]))


def test_load_points_with_sourced_columns_keeps_every_point(coloured) -> None:
    store, map_id, x = coloured
    n, gsm, arena = x["noise"], x["gsm"], x["arena"]
    names = ["tag:difficulty", "tag:response_quality", "tag:turns", "label:task/category", "label:task/rating",
             f"noise:{n}/cleanlab score", f"noise:{n}/cleanlab flag", f"noise:{n}/given label",
             f"dup:run {x['dedup']}", f"contamination:run {x['contam']}", "n_tokens"]
    points = load_points(store, map_id, names)
    assert len(points) == N_GSM8K + N_ARENA and points.id.is_unique
    p = points.set_index("id")
    # Tags: the newest finished run's ok value; not_computed / request_error rows and running runs hide nothing.
    levels = ["very easy", "easy", "medium", "hard", "very hard"]
    assert [p.at[s, "tag:difficulty"] for s in gsm[:6]] == ["very hard"] * 3 + levels[3:5] + [levels[0]]
    assert p.at[gsm[9], "tag:difficulty"] == levels[4] and pd.isna(p.at[gsm[10], "tag:difficulty"])
    assert p["tag:response_quality"].dtype == "float64"
    assert [p.at[s, "tag:response_quality"] for s in gsm[:10]] == [0.5 * i - 1 for i in range(10)]
    assert p.loc[gsm[10:], "tag:response_quality"].isna().all() and p.loc[arena, "tag:response_quality"].isna().all()
    assert (p.loc[arena, "tag:turns"] == "single").all() and p.loc[gsm, "tag:turns"].isna().all()
    # Hand labels: consensus per sample, ties visible as such, adjudication wins; GSM8K unlabelled.
    for s in arena[2:12]:
        assert p.at[s, "label:task/category"] == ("coding" if x["coding"][s] else "other")
    assert p.at[x["tie"], "label:task/category"] == "(tie)"
    assert p.at[x["adjudicated"], "label:task/category"] == "coding"
    assert p.at[x["adjudicated"], "label:task/rating"] == "4"
    assert p.loc[gsm, "label:task/category"].isna().all()
    assert p["label:task/rating"].notna().sum() == 1
    # Noise: the stored run's score and flag per sample; the tie (no label) and GSM8K have none.
    table = x["noise_table"]
    for s in table.index[:10]:
        assert p.at[s, f"noise:{n}/cleanlab score"] == pytest.approx(table.at[s, "cleanlab_score"])
        assert bool(p.at[s, f"noise:{n}/cleanlab flag"]) == bool(table.at[s, "cleanlab_flag"])
        assert p.at[s, f"noise:{n}/given label"] == table.at[s, "given_label"]
    assert p[f"noise:{n}/cleanlab score"].notna().sum() == len(table)
    assert pd.isna(p.at[x["tie"], f"noise:{n}/cleanlab score"]) and p.loc[gsm, f"noise:{n}/cleanlab flag"].isna().all()
    # Duplicates: kept / to drop / checked but unique; Arena-Hard was not checked.
    dup = p[f"dup:run {x['dedup']}"]
    assert [dup[s] for s in gsm[:6]] == ["representative (kept)", "duplicate (to drop)", "representative (kept)",
                                         "duplicate (to drop)", "duplicate (to drop)", "not duplicated"]
    assert dup[arena].isna().all()
    # Contamination: the three GSM8K test questions loaded as an eval set; the rest of GSM8K is clean.
    contam = p[f"contamination:run {x['contam']}"]
    assert (contam[gsm[:3]] == "contaminated").all() and (contam[gsm[3:]] == "clean").all()
    assert contam[arena].isna().all()


def test_map_options_are_exactly_the_registry_signals_with_values(coloured) -> None:
    """Every sourced option of the Map opens a registry signal (the older names too) and shows the registry's
    own values on the map's samples; every registry signal with a value there is offered."""
    from core import signals
    from core.maps import colours
    from core.maps.points import colour_columns, get_map
    from core.signals.registry import list_on

    store, map_id, x = coloured
    proj = get_map(store, map_id).projection_run_id
    on_map = store.query_df("SELECT sample_id FROM projections WHERE run_id = ?", [proj])["sample_id"].tolist()
    offered = {name: kind for name, kind in colour_columns(store, ["gsm8k", "arena"], map_id).items() if ":" in name}
    with store.connect() as con:
        known = {s.name: s for s in list_on(con)}
        opened = {name: colours.registry_name(con, name, known) for name in offered}
    kinds = {"number": "numeric", "category": "category", "bool": "bool", "text": "category"}
    for name, (signal, run) in opened.items():
        expected = signals.values(store, signal, run=run, sample_ids=on_map)
        got = colours.load_values(store, colours.resolve(store, name), proj)
        assert not got.empty and got.sort_index().to_dict() == dict(
            zip(expected["sample_id"], expected["value"], strict=True)), name
        assert offered[name] == kinds[known[signal].kind], name
    with_values = {name for name in known if not signals.values(store, name, sample_ids=on_map).empty}
    assert {signal for signal, _ in opened.values()} == with_values
    # The Map's older names open their registry signal and the run they name.
    n = x["noise"]
    assert {name: opened[name] for name in ("tag:difficulty", "label:task/category", f"noise:{n}/label issue",
                                            f"noise:{n}/given label", f"dup:run {x['dedup']}",
                                            f"contamination:run {x['contam']}")} == {
        "tag:difficulty": ("tag.difficulty", None), "label:task/category": ("label.task.category", None),
        f"noise:{n}/label issue": ("noise.combined.flag", n), f"noise:{n}/given label": ("noise.given_label", n),
        f"dup:run {x['dedup']}": ("dup.status", x["dedup"]),
        f"contamination:run {x['contam']}": ("contamination", x["contam"])}
    # Signals the Map never offered before are there now, under their registry names.
    assert {"signal:label.disagreement", "signal:dup.group", "signal:contamination.item"} <= set(offered)


def test_unknown_colour_columns_are_refused(coloured) -> None:
    store, map_id, x = coloured
    for name in ("tag:vibes", "tag:language'; DROP TABLE tags; --", "label:task/mood", "label:nope/category",
                 f"noise:{x['noise']}/bogus score", "noise:99999/aum score", "noise:aum score", "dup:run 99999",
                 f"dup:run {x['contam']}", f"contamination:run {x['dedup']}", "contamination:latest", "colour:x",
                 "no_such_meta_field"):
        with pytest.raises(ValueError):
            load_points(store, map_id, [name])
    assert store.query_df("SELECT count(*) AS n FROM tags").n[0] > 0


def test_figure_shows_missing_values_in_grey_never_drops_them(coloured) -> None:
    from core.maps.figures import MISSING, MISSING_COLOUR

    store, map_id, x = coloured
    points = load_points(store, map_id, ["tag:difficulty", "tag:response_quality", f"noise:{x['noise']}/cleanlab flag"])
    for column in points.columns[-3:]:
        fig, info = map_figure(points, color=column)
        traces = [t for t in fig.data if t.type == "scattergl"]
        assert sum(len(t.x) for t in traces) == len(points) == info.shown
        none = [t for t in traces if t.name == MISSING]
        assert len(none) == 1 and none[0].marker.color == MISSING_COLOUR
        assert len(none[0].x) == int(points[column].isna().sum())


# ---- colours, click, labels (issue 16) --------------------------------------------------------------


def test_palette_is_distinct_and_never_grey() -> None:
    import colorsys

    from core.maps.figures import MISSING_COLOUR, UNCLUSTERED_COLOUR, palette

    for n in (10, 40, 60, 150):
        colours = palette(n)
        assert len(colours) == n == len(set(colours))
        rgb = [tuple(int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)) for c in colours]
        assert all(colorsys.rgb_to_hls(*c)[2] >= 0.25 for c in rgb)  # saturation: no greys
    assert UNCLUSTERED_COLOUR not in palette(150) and MISSING_COLOUR not in palette(150)


def test_unclustered_is_grey_beneath_and_clusters_keep_distinct_colours() -> None:
    from core.maps.figures import MISSING, UNCLUSTERED, UNCLUSTERED_COLOUR

    n, k = 3_000, 25
    rng = np.random.default_rng(3)
    cluster = rng.integers(-1, k, n)
    points = pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "y": rng.normal(size=n), "cluster": cluster,
                           "title": [f"topic {c}" for c in cluster], "preview": 'a "quoted" <b>text</b> & more'})
    fig, _ = map_figure(points)
    traces = [t for t in fig.data if t.type == "scattergl"]
    assert traces[0].name == UNCLUSTERED and traces[0].marker.color == UNCLUSTERED_COLOUR  # drawn first: beneath
    assert len(traces[0].x) == int((cluster == -1).sum())
    colours = [t.marker.color for t in traces[1:]]
    assert len(colours) == k == len(set(colours)) and UNCLUSTERED_COLOUR not in colours
    assert traces[1].name.startswith("0: ")  # clusters in id order, so a filter does not recolour them
    assert traces[1].hovertext[0] == 'a "quoted" &lt;b&gt;text&lt;/b&gt; &amp; more'
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.yanchor == "top" and legend.y < 0  # below the chart
    assert fig.layout.height > 650 and fig.layout.dragmode == "pan"
    # Without clusters in the title column, the -1 points are still the grey "unclustered".
    fig2, _ = map_figure(points.drop(columns="title"))
    assert fig2.data[0].name == UNCLUSTERED
    # A point with no cluster at all is missing (its own grey), not noise.
    some = points.astype({"cluster": "Int64"})
    some.loc[some.index[:3], "cluster"] = pd.NA
    fig3, _ = map_figure(some)
    assert [t.name for t in fig3.data[:2]] == [MISSING, UNCLUSTERED] and len(fig3.data[0].x) == 3


def test_a_click_is_one_point_without_box_or_lasso() -> None:
    click = {"points": [{"customdata": 42}], "box": [], "lasso": []}
    assert clicked_point(click) == 42
    assert clicked_point({"points": [{"customdata": [7]}], "box": [], "lasso": []}) == 7
    assert clicked_point({"points": [{"customdata": 1}], "box": [{"x": [0, 1], "y": [0, 1]}], "lasso": []}) is None
    assert clicked_point({"points": [{"customdata": 1}, {"customdata": 2}], "box": [], "lasso": []}) is None
    assert clicked_point(None) is None and clicked_point({"points": [], "box": [], "lasso": []}) is None


def test_phrases_never_cross_or_hold_stop_words() -> None:
    stop = stop_words()
    got = phrases("Please write a Python function that sorts the farmers' market list, given the following.", stop)
    assert {"python function", "farmers market", "python"} <= set(got)
    assert not any(word in stop for p in got for word in p.split())
    assert "function sorts" not in got or "function" in got  # runs of content words only


def test_labels_on_real_data_are_phrases_without_stop_words(shared: Path) -> None:
    """GSM8K, Alpaca-GPT4 and MT-Bench texts as three clusters: labels name topics, not filler words."""
    gsm = [r["question"] for r in read_jsonl(shared / "gsm8k" / "train.jsonl", 400)]
    alpaca = [r["instruction"] + " " + r["input"]
              for r in json.loads((shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").read_text())[:400]]
    mt = [r["turns"][0] for r in read_jsonl(shared / "mt-bench" / "mt_bench_question.jsonl", 80)]
    arena = [r["turns"][0]["content"] for r in read_jsonl(shared / "arena-hard" / "arena_hard_v0.1_question.jsonl", 300)]
    keywords = ctfidf_keywords({0: gsm, 1: alpaca, 2: mt, 3: arena})
    labels = distinct_labels(keywords)
    stop = stop_words()
    for label in labels.values():
        parts = label.split(" · ")
        assert len(parts) == 3, label
        assert not any(w in stop for p in parts for w in p.split()), label
        words = [w.removesuffix("s") for p in parts for w in p.split()]
        assert len(words) == len(set(words)), label  # no phrase repeats another's word (or its plural)
    assert not {"following", "create", "write", "given", "please"} & {w for p in labels.values() for w in p.split()}
    assert any(" " in p for kw in keywords.values() for p in kw[:12])  # some phrase of two or more words
    assert any(w in labels[3] for w in ("code", "python", "function", "data"))  # arena's prompts are about code


def test_map_runs_keep_their_start_params_and_measure_in_metrics(emb) -> None:
    from core.maps.cluster import cluster
    from core.maps.project import project

    store, run = emb
    seen: dict[str, dict] = {}

    def progress(_fraction: float, what: str) -> None:  # the project run's row while it is still running
        if what == "writing points":
            live = store.runs().query("kind == 'project' and status == 'running'")
            seen["project"] = json.loads(live.params.iloc[0])

    proj = project(store, run, method="umap", n_neighbors=7, seed=1, progress=progress)
    runs = store.runs().set_index("run_id")
    expected = {"embedding_run_id": run, "method": "umap", "n_neighbors": 7, "min_dist": 0.1, "seed": 1,
                "metric": "cosine"}
    assert json.loads(runs.loc[proj, "params"]) == seen["project"] == expected
    knn = int(runs[runs.kind == "knn"].index[-1])
    assert json.loads(runs.loc[proj, "metrics"])["knn_run_id"] == knn
    assert json.loads(runs.loc[knn, "params"]) == {"embedding_run_id": run, "k": 7, "method": "exact"}
    assert set(json.loads(runs.loc[knn, "metrics"])) == {"seconds"}
    clustered = cluster(store, proj, method="kmeans", k=3, use_llm=False)
    row = store.runs().set_index("run_id").loc[clustered]
    assert json.loads(row.params) == {"projection_run_id": proj, "embedding_run_id": run, "method": "kmeans", "k": 3,
                                      "min_cluster_size": None, "text": "instruction", "seed": 42}
    assert set(json.loads(row.metrics)) == {"seconds_fit", "seconds"} and row.status == "finished"
