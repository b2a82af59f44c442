"""The Duplicates and Contamination pages through Streamlit's AppTest, on a real store."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core.browse.selections as selection
import core.contamination.check as contamination
import core.dedup.groups as dedup
from core.ingest.importer import ingest_records
from core.store.database import Store
from tests.jobs_support import finish_jobs

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
    finish_jobs(at)  # the check runs as a background job
    _no_exceptions(at)
    assert any("Run" in s.value for s in at.success)
    assert not contamination.contamination_runs(seeded).empty


def test_pages_on_empty_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_DB", str(tmp_path / "empty.duckdb"))
    for page in ("pages/6_Duplicates.py", "pages/7_Contamination.py"):
        at = AppTest.from_file(str(ROOT / page), default_timeout=60).run()
        _no_exceptions(at)
        assert at.info


# A paraphrase of GSM8K test item 0: close by embedding (cosine about 0.96), no shared 13-gram or 8-gram run.
PARAPHRASE = ("Janet has ducks laying sixteen eggs daily; she eats 3 each morning and bakes 4 into muffins for friends, "
              "selling the rest at the farmers market at two dollars apiece. How many dollars per day does she make?")


def embedding_only_run(store: Store, shared: Path) -> tuple[int, int, str]:
    """A real contamination run (13-gram, 8-gram, embedding) over a small training set holding one paraphrase
    of an eval item and one verbatim copy; returns (run id, the paraphrase's sample id, the eval item's text)."""
    with (shared / "gsm8k" / "test.jsonl").open() as fh:
        test = [json.loads(line) for _, line in zip(range(3), fh, strict=False)]
    with (shared / "gsm8k" / "train.jsonl").open() as fh:
        train = [json.loads(line) for _, line in zip(range(8), fh, strict=False)]
    records = [{"question": r["question"], "answer": r["answer"]} for r in train + [test[2]]]
    records.append({"question": PARAPHRASE, "answer": "She makes 18 dollars."})
    ingest_records(store, records, name="train-para", shape="qa")
    report = contamination.check_contamination(store, "train-para", ["gsm8k-test"],
                                               methods=["ngram13", "ngram8", "embedding"])
    res = contamination.results(store, report.run_id, flagged_only=True)
    para = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) "
                          "WHERE d.name = 'train-para' ORDER BY s.id DESC LIMIT 1")["id"].iloc[0]
    row = res[res.sample_id == para].iloc[0]
    assert row.flag_embedding and not row.flag_ngram13 and not row.flag_ngram8  # flagged by embedding only
    return report.run_id, int(para), test[0]["question"]


def test_evidence_of_an_embedding_only_flag(seeded: Store, shared: Path) -> None:
    run_id, para, eval_text = embedding_only_run(seeded, shared)
    res = contamination.results(seeded, run_id, flagged_only=True)
    found = contamination.evidence(res[res.sample_id == para].iloc[0])
    assert found.method == "embedding" and found.spans == []
    assert contamination.sample_text(seeded, found.eval_id).startswith(eval_text)
    verbatim = contamination.evidence(res[res.flag_ngram13].iloc[0])
    assert verbatim.method == "ngram13" and verbatim.spans  # the copy's overlap is still highlighted


def test_contamination_drill_down_on_embedding_only_flag(seeded: Store, shared: Path) -> None:
    run_id, para, eval_text = embedding_only_run(seeded, shared)
    flagged = contamination.results(seeded, run_id, flagged_only=True)
    at = AppTest.from_file(str(ROOT / "pages/7_Contamination.py"), default_timeout=120).run()
    _no_exceptions(at)
    drill = next(s for s in at.selectbox if s.label == "Drill down")
    drill.set_value(flagged.sample_id.tolist().index(para)).run()
    _no_exceptions(at)
    assert any(f"Training sample {para}" in c.value for c in at.caption)
    assert any("found by embedding" in c.value for c in at.caption)
    assert any(html.escape(PARAPHRASE[:40]) in h.value for h in at.html)  # the sample is shown, as text
    assert any(t.value.startswith(eval_text) for t in at.text)    # beside its nearest eval item
