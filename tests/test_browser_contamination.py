"""The Contamination drill-down in a real headless Chromium on a sample flagged by embedding similarity only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.ingest.importer import ingest_records
from core.store.database import Store
from tests.browser_support import _IDLE, ARTIFACTS, FLAGGED_HEADING
from tests.test_pages_dedup import PARAPHRASE, embedding_only_run


@pytest.mark.browser
def test_drill_down_on_embedding_only_flag(tmp_path: Path, shared: Path, workbench, browser_page) -> None:
    wait = workbench.launch(tmp_path / "browser.duckdb")  # the server starts while the store is built
    store = Store(tmp_path / "browser.duckdb", busy_timeout=5)
    with (shared / "gsm8k" / "test.jsonl").open() as fh:
        test = [json.loads(line) for _, line in zip(range(30), fh, strict=False)]
    ingest_records(store, [{"question": r["question"], "answer": r["answer"]} for r in test], name="gsm8k-test",
                   shape="qa", is_eval=True, license="MIT")
    _run_id, para, eval_text = embedding_only_run(store, shared)

    url = wait()
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 2400})  # Streamlit scrolls inside the page: show it all
    page.goto(url + "/Contamination")
    # Generous waits: on a loaded 2-core machine the page's first run takes a minute or more.
    page.get_by_text(FLAGGED_HEADING).first.wait_for(timeout=180_000)
    page.wait_for_function(_IDLE, timeout=180_000)  # input given mid-run can be lost
    drill = page.locator('[data-testid="stSelectbox"]').filter(has_text="Drill down")
    drill.wait_for(timeout=180_000)
    drill.locator("input").click(timeout=60_000)
    page.get_by_role("option", name=f"{para} vs gsm8k-test", exact=True).click(timeout=60_000)
    page.get_by_text(f"Training sample {para}").first.wait_for(timeout=180_000)
    page.get_by_text("found by embedding").first.wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "boolean value of NA" not in page.content()
    page.get_by_text(PARAPHRASE[:40]).first.wait_for()            # the training sample
    page.get_by_text(eval_text[:40]).first.wait_for()              # beside its nearest evaluation item
    page.screenshot(path=str(ARTIFACTS / "contamination_embedding_only.png"), full_page=True)
    assert page.dialogs == []
