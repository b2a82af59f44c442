"""The noise page through Streamlit's AppTest: a stored run is shown, actions write through core."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.browse.selections import excluded_ids, list_selections, selection_ids
from core.labels.labelling import events
from core.noise.features import relabel_schema_name
from core.noise.label_names import label_names, set_label_names
from core.noise.run import flagged_ids
from core.store.database import Store
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

    # Four methods: "at least N methods" runs 1..4.
    slider = at.slider(key="noise_min_flags")
    assert (slider.proto.min, slider.proto.max, slider.value) == (1, 4, 1)
    # The queue gets every flagged sample, not only the listed ones.
    at.number_input(key="noise_list_limit").set_value(10).run()
    flagged = flagged_ids(store, scores.attrs["run_id"], min_flags=1)
    assert len(at.dataframe[0].value) == 10 < len(flagged)
    button = at.button(key="noise_queue")
    assert button.label == f"Send all {len(flagged):,} flagged to the labelling queue"
    button.click().run()
    newest = list_selections(store).query("origin == 'noise'").sort_values("selection_id").iloc[-1]
    assert selection_ids(store, int(newest.selection_id)) == sorted(flagged)


def test_default_label_column_is_the_class(noisy, monkeypatch) -> None:
    store, _ = noisy
    at = _page(store.path, monkeypatch)
    picker = at.selectbox(key=f"noise_source_{DATASET}")
    assert "count" in picker.options and picker.value == "class"


def _spec(at: AppTest, trace_type: str) -> dict:
    """The figure of the page's plotly chart whose first trace is of `trace_type`."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(f for f in specs if f["data"] and f["data"][0].get("type") == trace_type)


def test_class_names_on_every_view(noisy, monkeypatch, tmp_path: Path) -> None:
    store = copy_store(noisy[0], tmp_path)
    names = {"0": "hate speech", "1": "offensive language", "2": "neither"}
    set_label_names(store, DATASET, "class", names)
    at = _page(store.path, monkeypatch)
    shown = {f"{n} ({v})" for v, n in names.items()}
    table = at.dataframe[0].value
    assert set(table.given_label) <= shown and set(table.predicted_label) <= shown
    sample_id = at.selectbox(key="noise_sample").value
    detail = next(t.value for t in at.text if t.value.startswith("given: "))
    assert any(detail.startswith(f"given: {s}") for s in shown) and "predicted: " in detail
    relabel = at.selectbox(key=f"noise_new_label_{sample_id}")
    assert set(relabel.options) == shown and relabel.value in names  # the stored value stays the code
    neighbours = at.dataframe[1].value
    assert set(neighbours.given_label.dropna()) <= shown
    confusion = _spec(at, "heatmap")["layout"]
    for axis in ("xaxis", "yaxis"):
        assert confusion[axis]["type"] == "category"
        assert confusion[axis]["ticktext"] == [f"{names[v]} ({v})" for v in ("0", "1", "2")]
    weights = _spec(at, "histogram")["data"]
    assert {t["name"] for t in weights} == shown


def test_names_are_set_from_the_page(noisy, monkeypatch, tmp_path: Path) -> None:
    store = copy_store(noisy[0], tmp_path)
    at = _page(store.path, monkeypatch)
    for value, name in (("0", "hate"), ("1", "offensive"), ("2", "neither")):
        at.text_input(key=f"noise_name_{DATASET}_{value}").input(name)
    at.button(key="noise_save_names").click().run()
    assert not at.exception, at.exception
    assert label_names(store, DATASET, "class") == {"0": "hate", "1": "offensive", "2": "neither"}
    assert set(at.dataframe[0].value.given_label) <= {"hate (0)", "offensive (1)", "neither (2)"}


def test_page_runs_a_method_with_progress(noisy, monkeypatch, tmp_path: Path) -> None:
    store = copy_store(noisy[0], tmp_path)
    at = _page(store.path, monkeypatch)
    at.multiselect(key="noise_methods_False").set_value(["cleanlab"])
    at.button(key="noise_run_button").click().run()
    finish_jobs(at)
    assert not at.exception, at.exception
    assert any("Run " in s.value for s in at.success)
    assert "cleanlab flags" in {m.label for m in at.metric}
    # One method: nothing to choose "at least N methods" from, so no slider.
    assert not [s for s in at.slider if s.key == "noise_min_flags"]
    assert any("flagged by cleanlab" in c.value for c in at.caption)
