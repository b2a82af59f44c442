"""The Duplicates and Contamination pages through Streamlit's AppTest, on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import contamination, dedup, selection
from core.ingest import ingest_records
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def seeded(tmp_path: Path, shared: Path, monkeypatch) -> Store:
    """GSM8K train slice with planted copies, a GSM8K test slice as eval set, and one run of each kind."""
    with (shared / "gsm8k" / "train.jsonl").open() as fh:
        train = [json.loads(line) for _, line in zip(range(60), fh, strict=False)]
    with (shared / "gsm8k" / "test.jsonl").open() as fh:
        test = [json.loads(line) for _, line in zip(range(30), fh, strict=False)]
    records = [{"question": r["question"], "answer": r["answer"]} for r in train]
    records.append({"question": records[0]["question"].upper() + " <script>alert(1)</script>",
                    "answer": records[0]["answer"]})
    records.append({"question": records[0]["question"], "answer": records[0]["answer"]})
    records.append({"question": test[2]["question"], "answer": test[2]["answer"]})
    store = Store(tmp_path / "page.duckdb", busy_timeout=5)
    ingest_records(store, records, name="train", shape="qa")
    ingest_records(store, [{"question": r["question"], "answer": r["answer"]} for r in test], name="gsm8k-test",
                   shape="qa", is_eval=True)
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    return store


def _no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_duplicates_page_runs_and_excludes(seeded: Store) -> None:
    at = AppTest.from_file(str(ROOT / "pages/6_Duplicates.py"), default_timeout=120).run()
    _no_exceptions(at)
    at.radio[0].set_value("near")
    at.button[0].click().run()  # the form's submit button
    _no_exceptions(at)
    assert any("groups" in s.value for s in at.success)
    assert any(c.value.startswith("Method: MinHash + LSH") for c in at.caption)  # what made the groups
    run_id = int(dedup.dedup_runs(seeded).run_id.iloc[0])
    drop = dedup.duplicate_ids_to_drop(seeded, run_id)
    assert len(drop) >= 1
    html = "".join(h.value for h in at.html)  # st.html: interprets no markdown
    assert "&lt;script&gt;" in html and "<script>" not in html  # dataset text is escaped
    assert not any("<del" in m.value or "<ins" in m.value for m in at.markdown)  # never through markdown
    exclude = next(b for b in at.button if b.key == "exclude_dups")
    exclude.click().run()
    _no_exceptions(at)
    assert drop <= selection.excluded_ids(seeded)


def test_contamination_page_report_and_exclude(seeded: Store) -> None:
    contamination.check_contamination(seeded, "train", ["gsm8k-test"], methods=["ngram13", "ngram8"])
    at = AppTest.from_file(str(ROOT / "pages/7_Contamination.py"), default_timeout=120).run()
    _no_exceptions(at)
    assert len(at.dataframe) >= 2
    lines = [c.value for c in at.caption if c.value.startswith("Method: ")]
    assert any("Brown et al. 2020" in x for x in lines) and any("Chowdhery et al. 2022" in x for x in lines)
    assert any("<mark" in h.value for h in at.html)  # the overlapping span is highlighted, outside markdown
    exclude = next(b for b in at.button if b.key == "exclude_contaminated")
    exclude.click().run()
    _no_exceptions(at)
    assert len(selection.excluded_ids(seeded)) == 1


def test_contamination_page_runs_a_check(seeded: Store) -> None:
    at = AppTest.from_file(str(ROOT / "pages/7_Contamination.py"), default_timeout=120).run()
    _no_exceptions(at)
    at.multiselect[1].set_value(["ngram13", "ngram8"])
    at.button[0].click().run()
    _no_exceptions(at)
    assert any("Run" in s.value for s in at.success)
    assert not contamination.contamination_runs(seeded).empty


def test_pages_on_empty_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_DB", str(tmp_path / "empty.duckdb"))
    for page in ("pages/6_Duplicates.py", "pages/7_Contamination.py"):
        at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
        _no_exceptions(at)
        assert at.info
