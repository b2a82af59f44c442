"""The Duplicates and Contamination pages in a real headless Chromium against a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import core.contamination.check as contamination
import core.dedup.groups as dedup
from core.ingest.importer import ingest_records
from core.store.database import Store
from tests.browser_support import ARTIFACTS, FLAGGED_HEADING


@pytest.mark.browser
def test_duplicates_and_contamination_pages(tmp_path: Path, shared: Path, workbench, browser_page) -> None:
    wait = workbench.launch(tmp_path / "browser.duckdb")  # the server starts while the store is built
    with (shared / "gsm8k" / "train.jsonl").open() as fh:
        train = [json.loads(line) for _, line in zip(range(80), fh, strict=False)]
    with (shared / "gsm8k" / "test.jsonl").open() as fh:
        test = [json.loads(line) for _, line in zip(range(40), fh, strict=False)]
    records = [{"question": r["question"], "answer": r["answer"]} for r in train]
    edited = records[3]["question"].replace("She", "Then she", 1) + " <b>bold?</b>"
    records.append({"question": edited, "answer": records[3]["answer"]})
    records.append({"question": "Please solve: " + test[5]["question"], "answer": test[5]["answer"]})
    store = Store(tmp_path / "browser.duckdb", busy_timeout=5)
    ingest_records(store, records, name="gsm8k-train-slice", shape="qa", license="MIT")
    ingest_records(store, [{"question": r["question"], "answer": r["answer"]} for r in test], name="gsm8k-test",
                   shape="qa", is_eval=True, license="MIT")
    dedup.find_duplicates(store, None, method="near", threshold=0.6)
    contamination.check_contamination(store, "gsm8k-train-slice", methods=["ngram13", "ngram8"])

    url = wait()
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 2400})  # Streamlit scrolls inside the page: show it all
    page.goto(url + "/Duplicates")
    page.get_by_text("Compare the representative with").first.wait_for()
    page.locator("del, ins").first.wait_for()
    page.locator("del, ins").first.scroll_into_view_if_needed()
    assert page.locator("b", has_text="bold?").count() == 0  # the dataset's markup is shown as text
    page.screenshot(path=str(ARTIFACTS / "dedup.png"), full_page=True)

    page.goto(url + "/Contamination")
    page.get_by_text(FLAGGED_HEADING).first.wait_for(timeout=90_000)  # charts first: slow on a loaded 2-core box
    page.locator("mark").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_timeout(1500)  # let plotly finish drawing before the screenshot
    assert "Please solve" not in page.locator("mark").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "contamination.png"), full_page=True)
    assert page.dialogs == []
