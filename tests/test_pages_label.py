"""The Label page through AppTest: name, focus labelling with the shortcut buttons, skip, undo, bulk, two tabs."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core.labels.labelling as L
from core.ingest.importer import ingest
from core.store.database import Store

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "4_Label.py")
SCHEMA = {"name": "task", "guidelines": "Pick the **main** task.",
          "fields": [{"name": "category", "vocabulary": "magpie_task_category"}]}


@pytest.fixture
def labelled_store(store: Store, shared: Path, monkeypatch) -> Store:
    ingest(store, shared / "mt-bench" / "mt_bench_question.jsonl", name="mt-bench", license="Apache-2.0")
    L.save_schema(store, L.parse_schema(SCHEMA))
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    return store


def _session(name: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    at.text_input(key="annotator_input").input(name)
    at.button[0].click().run()  # the form's "Start labelling"
    assert not at.exception, at.exception
    return at


def _progress(at: AppTest) -> str:
    return next(p.value for p in at.get("progress")) if at.get("progress") else ""


def _shown_id(at: AppTest) -> int:
    caption = next(c.value for c in at.caption if c.value.startswith("sample "))
    return int(caption.split()[1])


def test_focus_labelling_skip_undo(labelled_store: Store) -> None:
    store = labelled_store
    at = _session("ann")
    first = _shown_id(at)
    assert any("1 · Information seeking" == b.label for b in at.button)
    at.button(key="btn_category_5").click().run()   # what key "6" does: Math
    at.button(key="submit").click().run()            # what Enter does
    assert not at.exception, at.exception
    assert L.my_current(store, "task", first, "ann") == {"category": "Math"}
    second = _shown_id(at)
    assert second != first
    at.button(key="skip").click().run()             # S
    third = _shown_id(at)
    assert third not in (first, second)
    at.button(key="undo").click().run()             # U: takes back the skip
    assert _shown_id(at) == second
    at.button(key="btn_category_1").click().run()
    at.button(key="submit").click().run()
    log = L.events(store, "task")
    assert list(log["kind"]) == ["label", "skip", "undo", "label"]
    assert set(log["origin"]) == {"focus"}
    # The queue leaves out what ann did; progress counts it.
    at.button(key="refresh_queue").click().run()
    assert _shown_id(at) == third


def test_bulk_labelling_of_checked_samples(labelled_store: Store) -> None:
    store = labelled_store
    at = _session("bob")
    at.sidebar.radio(key="view").set_value("Bulk").run()
    assert not at.exception, at.exception
    at.radio(key="bulk_value").set_value("Coding & Debugging").run()
    # Nothing is checked until the annotator says so: one click must not label a page nobody read.
    assert at.toggle(key="bulk_all").value is False
    assert at.button(key="bulk_apply").label == "Apply to 0 checked" and at.button(key="bulk_apply").disabled
    at.toggle(key="bulk_all").set_value(True).run()
    assert at.button(key="bulk_apply").label == "Apply to 25 checked"
    at.button(key="bulk_apply").click().run()
    assert not at.exception, at.exception
    log = L.events(store, "task")
    assert len(log) == 25 and set(log["origin"]) == {"bulk"} and set(log["annotator"]) == {"bob"}
    current = L.current_labels(store, "task")
    assert len(current) == 25 and set(current["category"]) == {"Coding & Debugging"}


def test_two_tabs_label_the_same_sample(labelled_store: Store) -> None:
    store = labelled_store
    tab1, tab2 = _session("ann"), _session("ann")
    sid = _shown_id(tab1)
    assert _shown_id(tab2) == sid
    for tab, key in ((tab1, "btn_category_0"), (tab2, "btn_category_2")):
        tab.button(key=key).click().run()
        tab.button(key="submit").click().run()
        assert not tab.exception, tab.exception
    log = L.events(store, "task")
    assert len(log) == 2 and set(log["sample_id"]) == {sid} and log["session"].nunique() == 2
    assert L.my_current(store, "task", sid, "ann") == {"category": "Planning"}  # the later one is current


def test_agreement_view_and_adjudication(labelled_store: Store) -> None:
    store = labelled_store
    schema = L.get_schema(store, "task")
    for annotator, value in (("ann", "Math"), ("bob", "Reasoning")):
        L.record_label(store, schema, 1, {"category": value}, annotator=annotator)
    at = _session("lead")
    at.sidebar.radio(key="view").set_value("Agreement").run()
    assert not at.exception, at.exception
    assert any(c.value == "1 disagreement" for c in at.caption)
    at.selectbox(key="adj_val_category").set_value("Reasoning").run()
    at.button(key="adj_go_category").click().run()
    assert L.current_labels(store, "task").loc[1, "category__status"] == "adjudicated"


def test_schema_editor(labelled_store: Store) -> None:
    store = labelled_store
    at = _session("ann")
    at.sidebar.radio(key="view").set_value("Schemas").run()
    at.radio(key="schema_how").set_value("YAML").run()
    at.text_area(key="schema_yaml").input("name: keep\ntype: keep_drop\nguidelines: Keep what teaches.").run()
    at.button(key="schema_save").click().run()
    assert not at.exception, at.exception
    assert L.get_schema(store, "keep").fields[0].type == "keep_drop"
    # Without a reload: the selector lists the new schema and has it selected, ready to label with.
    assert at.sidebar.radio(key="view").value == "Focus"
    pick = at.sidebar.selectbox(key="schema_pick")
    assert "keep" in pick.options and pick.value == "keep"
    assert any("Saved schema keep" in s.value for s in at.success)
    assert any(b.label.endswith("keep") for b in at.button)  # the focus view offers its choices


def test_start_labelling_without_a_name_says_so(labelled_store: Store) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.button[0].click().run()  # "Start labelling" with the name left empty
    assert not at.exception, at.exception
    assert any("Type your name first" in e.value for e in at.error)
    assert at.text_input(key="annotator_input") is not None  # still asking


def test_agreement_with_one_annotator_shows_their_labels(labelled_store: Store) -> None:
    store = labelled_store
    schema = L.get_schema(store, "task")
    for sid, value in ((1, "Math"), (2, "Math"), (3, "Reasoning")):
        L.record_label(store, schema, sid, {"category": value}, annotator="ann")
    at = _session("ann")
    at.sidebar.radio(key="view").set_value("Agreement").run()
    assert not at.exception, at.exception
    assert any("at least two annotators labelling the same samples" in i.value for i in at.info)
    dist = at.dataframe[-1].value
    assert dist.to_dict("records") == [{"annotator": "ann", "value": "Math", "n": 2},
                                       {"annotator": "ann", "value": "Reasoning", "n": 1}]
    assert not any(m.label == "Krippendorff's alpha" for m in at.metric)  # no empty agreement tables
