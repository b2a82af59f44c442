"""The home page and the dataset page through streamlit.testing.v1.AppTest, on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.browse.samples import Filter, query_samples
from core.ingest.importer import ingest, ingest_records
from core.store.database import Store

XSS = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
TIMEOUT = 60
ROOT = Path(__file__).resolve().parent.parent
HOME = str(ROOT / "app.py")
DATASETS = str(ROOT / "pages" / "1_Datasets.py")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Store:
    store = Store(tmp_path_factory.mktemp("pages") / "pages.duckdb", busy_timeout=5)
    ingest(store, shared / "gsm8k" / "train.jsonl", name="gsm8k-train", license="MIT")
    ingest(store, shared / "hate-offensive-crowd" / "labeled_data.csv", name="hate-offensive-crowd", license="MIT",
           shape="mapped", mapping={"text": "tweet"})
    ingest_records(store, [{"instruction": f"Please say {XSS} now", "output": f"{IMG} and **bold** <b>tag</b>"}],
                   name="xss", shape="alpaca", license="MIT")
    return store


def _texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def _page(monkeypatch: pytest.MonkeyPatch, store: Store, dataset: str | None = None) -> AppTest:
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    at = AppTest.from_file(DATASETS, default_timeout=TIMEOUT)
    if dataset:
        at.query_params["dataset"] = dataset
    at.run()
    assert not at.exception, at.exception
    return at


def _rows_line(at: AppTest) -> str:
    return next(t for t in _texts(at) if t.startswith("rows "))


def test_home_empty_store_explains_how_to_load(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Assay"
    assert "empty" in at.info[0].value
    help_text = "\n".join(_texts(at))
    assert "make run" in help_text and "assay --db" in help_text and "ingest PATH --name NAME" in help_text
    assert str(store.path) in help_text and "schema version" in help_text
    assert any(b.label == "Load" for b in at.button)  # the upload form's submit button
    assert [r.label for r in at.radio] == ["On bad records"]


def test_home_lists_datasets_and_runs(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    monkeypatch.setenv("ASSAY_DB", str(loaded.path))
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT).run()
    assert not at.exception
    datasets = at.dataframe[0].value
    assert set(datasets["dataset"]) == {"gsm8k-train", "hate-offensive-crowd", "xss"}
    row = datasets.set_index("dataset").loc["gsm8k-train"]
    assert row["samples"] == 7473 and row["licence"] == "MIT" and row["shape"] == "qa"
    assert {"synthetic", "eval set", "loaded", "computed"} <= set(datasets.columns)
    runs = at.dataframe[1].value
    assert set(runs["kind"]) == {"ingest"} and (runs["status"] == "finished").all()
    assert any(e.label == "Load another dataset" for e in at.expander)


def test_dataset_page_search_filter_sort_and_paging(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    at = _page(monkeypatch, loaded, "hate-offensive-crowd")
    assert at.selectbox(key="dataset").value == "hate-offensive-crowd"
    assert at.metric[0].value == "24,783" and at.metric[3].value == "MIT"
    assert _rows_line(at).startswith("rows 1–50 of 24,783")

    at.text_input(key="search").input("bird").run()
    expected = query_samples(loaded, "hate-offensive-crowd", search="bird").total
    assert _rows_line(at).startswith(f"rows 1–50 of {expected:,} matching")

    at.selectbox(key="new_filter_column").set_value("class").run()
    next(b for b in at.button if b.label == "Add filter").click().run()
    low = next(n for n in at.number_input if n.label == "class from")
    high = next(n for n in at.number_input if n.label == "class to")
    low.set_value(2)
    high.set_value(2).run()
    assert not at.exception
    filtered = query_samples(loaded, "hate-offensive-crowd", search="bird", filters=[Filter("class", "between", (2, 2))])
    assert 0 < filtered.total < expected
    assert f"of {filtered.total:,} matching" in _rows_line(at)

    at.selectbox(key="sort").set_value("n_chars").run()
    at.toggle(key="descending").set_value(True).run()
    table = at.dataframe[0].value
    assert table["n_chars"].tolist() == sorted(table["n_chars"], reverse=True)
    assert table["id"].tolist() == filtered_ids(loaded, "bird", descending=True)[:50]
    assert set(table["class"].astype(int)) == {2}


def filtered_ids(store: Store, search: str, descending: bool) -> list[int]:
    return query_samples(store, "hate-offensive-crowd", search=search, filters=[Filter("class", "between", (2, 2))],
                         sort="n_chars", descending=descending, limit=200).ids


def test_dataset_page_next_page_and_open_sample(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    gsm8k = pd.read_json(Path(loaded.dataset("gsm8k-train").source), lines=True)
    at = _page(monkeypatch, loaded, "gsm8k-train")
    next(b for b in at.button if b.label.startswith("Next")).click().run()
    assert _rows_line(at).startswith("rows 51–100 of 7,473")
    assert at.number_input(key="page_no").value == 2
    table = at.dataframe[0]
    assert table.value["source_id"].tolist()[0] == "50"

    at.session_state[table.key] = {"selection": {"rows": [3], "columns": [], "cells": []}}  # click row 4
    at.run()
    assert not at.exception
    texts = _texts(at)
    assert f"Sample {table.value['id'][3]}" in [h.value for h in at.subheader]
    assert texts[texts.index("USER") + 1] == gsm8k.question[53]
    assert texts[texts.index("ASSISTANT") + 1] == gsm8k.answer[53]
    assert at.json[-1].value  # the raw record, as JSON


def _open_by_id(at: AppTest, sample_id: int) -> AppTest:
    at.number_input(key="sample_id_input").set_value(sample_id).run()
    assert not at.exception
    return at


def test_script_tags_render_as_literal_text(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    sample_id = query_samples(loaded, "xss").ids[0]
    at = _open_by_id(_page(monkeypatch, loaded, "xss"), sample_id)
    texts = _texts(at)
    assert f"Please say {XSS} now" in texts
    assert f"{IMG} and **bold** <b>tag</b>" in texts
    rendered_as_markdown = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not any("<script" in m or "<img" in m or "**bold**" in m for m in rendered_as_markdown)
    assert XSS in at.dataframe[0].value["preview"][0]  # the table is a data grid: cells are text


def test_dataset_page_with_empty_store_points_home(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    at = _page(monkeypatch, store)
    assert "no datasets" in at.info[0].value


def test_unknown_dataset_in_link_falls_back(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    at = _page(monkeypatch, loaded, "'; DROP TABLE samples; --")
    assert at.selectbox(key="dataset").value == "gsm8k-train"
    assert loaded.query_df("SELECT count(*) AS n FROM samples").n[0] == 7473 + 24783 + 1


def test_save_results_as_selection(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    selection = pytest.importorskip("core.browse.selections")
    at = _page(monkeypatch, loaded, "gsm8k-train")
    at.text_input(key="search").input("apples").run()
    at.text_input(key="selection_name").input("apple problems").run()
    next(b for b in at.button if b.label == "Save selection").click().run()
    assert not at.exception
    expected = query_samples(loaded, "gsm8k-train", search="apples", limit=10_000).ids
    assert sorted(selection.selection_ids(loaded, "apple problems")) == sorted(expected)
    assert any("Saved" in s.value for s in at.success)


def test_home_row_opens_the_dataset_in_this_tab(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    monkeypatch.setenv("ASSAY_DB", str(loaded.path))
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT).run()
    table = at.dataframe[0]
    assert "open" not in table.value.columns  # no link column: a link opens a new tab each time
    row = table.value["dataset"].tolist().index("hate-offensive-crowd")
    at.session_state[table.key] = {"selection": {"rows": [row], "columns": [], "cells": []}}  # click the row
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="dataset").value == "hate-offensive-crowd"  # the Datasets page, in the app


def test_home_computed_column_lists_embeddings_and_maps(monkeypatch: pytest.MonkeyPatch, store: Store,
                                                         shared: Path) -> None:
    from core.maps.embed import embed
    from core.maps.points import record_map
    from core.maps.project import project

    questions = pd.read_json(shared / "gsm8k" / "test.jsonl", lines=True).question.tolist()[:24]
    for name, part in (("first", questions[:12]), ("second", questions[12:])):
        ingest_records(store, [{"instruction": q, "output": "ok"} for q in part], name=name, shape="alpaca")
    run = embed(store, ["first", "second"]).run_id  # one run over both datasets
    record_map(store, ["first", "second"], run, project(store, run, method="pca"), None)
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    computed = at.dataframe[0].value.set_index("dataset")["computed"]
    for name in ("first", "second"):
        assert "embeddings" in computed[name] and "maps" in computed[name], computed[name]


def test_headers_missing_values_and_integer_filters(monkeypatch: pytest.MonkeyPatch, loaded: Store) -> None:
    at = _page(monkeypatch, loaded, "hate-offensive-crowd")
    headers = {str(v.get("label")) for v in json.loads(at.dataframe[0].proto.columns).values()}
    assert {"tokens", "characters", "sample id"} <= headers, headers
    at.selectbox(key="new_filter_column").set_value("n_tokens").run()
    next(b for b in at.button if b.label == "Add filter").click().run()
    low = next(n for n in at.number_input if n.label == "tokens from")
    lo = int(query_samples(loaded, "hate-offensive-crowd", sort="n_tokens", limit=1).rows["n_tokens"].iloc[0])
    assert low.proto.placeholder == f"min {lo:,}"  # "min 44", never "min 44.0"
    low.set_value(lo + 1).run()
    assert not at.exception, at.exception
    assert isinstance(low.value, int)
    assert (at.dataframe[0].value["n_tokens"] >= lo + 1).all()
