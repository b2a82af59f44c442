"""The noise page through Streamlit's AppTest: a stored run is shown, actions write through core."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.labels import events
from core.noise.features import relabel_schema_name
from core.selection import excluded_ids, list_selections
from core.store import Store
from tests.jobs_support import finish_jobs
from tests.test_noise import DATASET, build_noisy_store, copy_store

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "5_Noise.py")


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, shared: Path):
    return build_noisy_store(tmp_path_factory.getbasetemp(), shared)


def _page(db: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("ASSAY_DB", str(db))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_empty_store_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    Store(tmp_path / "empty.duckdb").datasets()
    at = _page(tmp_path / "empty.duckdb", monkeypatch)
    assert any("no datasets" in i.value for i in at.info)


def test_page_shows_the_run_and_acts(noisy, monkeypatch) -> None:
    store, scores = noisy
    at = _page(store.path, monkeypatch)
    assert at.title[0].value == "Noisy labels"
    assert at.selectbox(key="noise_dataset").value == DATASET
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["samples"] == f"{len(scores):,}" and "rescaler flags" in metrics
    assert len(at.get("plotly_chart")) >= 1 and len(at.dataframe) >= 2  # suspicious list + neighbours
    sample_id = at.selectbox(key="noise_sample").value
    texts = [t.value for t in at.text]
    tweet = store.query_df("SELECT text FROM samples WHERE id = ?", [sample_id]).text[0]
    assert tweet in texts  # the sample's text is shown as plain text ...
    assert not any(tweet[:40] in m.value for m in at.markdown)  # ... and never as markdown

    # Relabel: a hand-label event with origin 'noise' in the relabel schema.
    at.text_input(key="noise_annotator").input("page-tester").run()
    classes = ["0", "1", "2"]
    given = scores.loc[sample_id, "given_label"]
    new = next(c for c in classes if c != given)
    at.selectbox(key=f"noise_new_label_{sample_id}").select(new)
    at.button(key="noise_relabel").click().run()
    assert not at.exception, at.exception
    log = events(store, relabel_schema_name(DATASET, "class"))
    assert (log.sample_id == sample_id).any() and (log.origin == "noise").all()

    at.button(key="noise_exclude").click().run()
    assert sample_id in excluded_ids(store)
    at.button(key="noise_queue").click().run()
    assert (list_selections(store).origin == "noise").any()


def test_page_runs_a_method_with_progress(noisy, monkeypatch, tmp_path: Path) -> None:
    store = copy_store(noisy[0], tmp_path)
    at = _page(store.path, monkeypatch)
    at.multiselect(key="noise_methods_False").set_value(["cleanlab"])
    at.button(key="noise_run_button").click().run()
    finish_jobs(at)
    assert not at.exception, at.exception
    assert any("Run " in s.value for s in at.success)
    assert "cleanlab flags" in {m.label for m in at.metric}
