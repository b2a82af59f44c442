"""The Tags page through AppTest on a real store: empty states, a job started from the page, the
side-by-side picture, methods and measured quality, plain-text samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core.tags.results as T
from core.ingest.importer import ingest_records
from core.store.database import Store
from core.tags.taggers.base import row
from core.tags.taggers.job import run_tagging
from tests.jobs_support import finish_jobs

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Tags.py")
XSS = "<script>alert(1)</script>"


def _records(prefix: str, n: int) -> list[dict]:
    return [{"instruction": f"{prefix} question {i}: what is {i} + {i}? {XSS if i == 0 else ''}",
             "output": f"{2 * i}"} for i in range(n)]


@pytest.fixture
def tagged(store: Store) -> Store:
    ingest_records(store, _records("alpha", 6), name="alpha", shape="alpaca", license="MIT")
    ingest_records(store, _records("beta", 4), name="beta", shape="alpaca", license="MIT")
    for name in ("alpha", "beta"):
        report = run_tagging(store, dataset=name, tags="turns,lengths,difficulty")
        ids = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = ? "
                             "ORDER BY s.id", [name])["id"].tolist()
        # category and quality rows as an LLM judge would have written them, into the same real run
        cats = ["Math", "Reasoning", "Math", "Others", "Math", "Editing"]
        T.write_tags(store, report.run_id, T.rows_frame(
            [row(i, "category", value=cats[k % 6], method="judge") for k, i in enumerate(ids)]
            + [row(i, "input_quality", value="good" if k % 2 else "poor", method="judge") for k, i in enumerate(ids)]
            + [row(i, "response_quality", score=float(k), method="judge") for k, i in enumerate(ids)]), replace_failed=False)
    return store


def _run(monkeypatch: pytest.MonkeyPatch, store: Store) -> AppTest:
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def test_empty_store(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    at = _run(monkeypatch, store)
    assert at.title[0].value == "Tags"
    assert "no datasets yet" in at.info[0].value


def test_start_a_job_from_the_page(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    ingest_records(store, _records("gamma", 5), name="gamma", shape="alpaca", license="MIT")
    at = _run(monkeypatch, store)
    assert any("No dataset is tagged yet" in i.value for i in at.info)
    at.selectbox(key="job_dataset").set_value("gamma")
    # before the run: the offline backend offers only what it computes, and says how to get the rest
    assert at.multiselect(key="job_tags_offline").value == ["category", "language", "turns", "lengths"]
    said = "\n".join(t.value for t in at.text)
    assert "The offline backend computes: category, language, turns, lengths." in said
    assert "response_quality: a reward model" in said and "difficulty: an LLM judge" in said
    at.multiselect(key="job_tags_offline").set_value(["turns", "lengths", "safety"])
    at.button(key="job_start").click()
    at.run()
    finish_jobs(at)
    assert not at.exception, at.exception
    # after it: the message counts only the computed tags and says why safety is missing
    message = next(s.value for s in at.success).replace("\\", "")  # shown escaped: never markdown
    assert "computed turns, n_chars, n_tokens for 5/5 samples" in message
    assert "Not computed: safety (the offline backend has no model for this tag; to get safety: a Llama Guard" in message
    runs = T.tag_runs(store, "gamma")
    assert len(runs) == 1 and runs.loc[0, "status"] == "finished"
    cur = T.current_tags(store, "gamma")
    assert (cur["safety__status"] == "not_computed").all() and (cur["turns"] == "single").all()


def test_side_by_side_picture(monkeypatch: pytest.MonkeyPatch, tagged: Store) -> None:
    at = _run(monkeypatch, tagged)
    assert at.multiselect(key="cmp_datasets").value == ["alpha", "beta"]
    frames = [d.value for d in at.dataframe]
    table = next(f for f in frames if "measured accuracy" in f.columns)
    difficulty = table[(table["tag"] == "difficulty") & (table["dataset"] == "alpha")].iloc[0]
    assert difficulty["not computed"] == 6 and difficulty["ok"] == 0
    turns = table[(table["tag"] == "turns") & (table["dataset"] == "beta")].iloc[0]
    assert turns["measured accuracy"] == 1.0
    assert len(at.tabs) == 5
    charts = at.get("plotly_chart")
    assert len(charts) >= 4  # distributions, score by category, cross-tabs per dataset
    assert not [c for c in charts if "[not_computed]" in c.proto.spec]  # a tag with no value is never charted
    why = next(i.value for i in at.info if i.value.startswith("difficulty is not charted"))
    assert "no sample has a difficulty value (runs " in why and "10 not computed" in why  # 6 alpha + 4 beta
    assert "to get difficulty: an LLM judge" in why
    lines = "\n".join(t.value for t in at.text)
    assert "alpha · turns: run" in lines and "counted from the sample (exact)" in lines
    per_sample = next(f for f in frames if "category" in f.columns and "n_chars" in f.columns)
    assert len(per_sample) == 10
    assert set(per_sample["category"]) == {"Math", "Reasoning", "Others", "Editing"}
    assert not [m for m in at.markdown if "<script>" in m.value]  # dataset text never goes through markdown
