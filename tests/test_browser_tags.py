"""The Tags page in a real headless Chromium: the side-by-side picture renders, clicking a bar shows its
samples as plain text, no script from the data runs, and a tag with no value (difficulty, which the
offline backend cannot make) is never charted: the page says why instead."""

from __future__ import annotations

import pytest

import core.tags.results as T
from core.ingest.importer import ingest_records
from core.store.database import Store
from core.tags.taggers.base import row
from core.tags.taggers.job import run_tagging
from tests.browser_support import ARTIFACTS

pytestmark = pytest.mark.browser
XSS = "<img src=x onerror=alert(1)>"
CATS = ["Math", "Math", "Reasoning", "Creative writing", "Math", "Coding & Debugging", "Others", "Math"]


@pytest.fixture
def tagged(store: Store) -> Store:
    for name, n in (("tulu-like", 8), ("smol-like", 6)):
        records = [{"instruction": f"{name} task {i}: {XSS} compute {i} * 3", "output": f"{3 * i}"} for i in range(n)]
        ingest_records(store, records, name=name, shape="alpaca", license="MIT")
        report = run_tagging(store, dataset=name, tags="turns,lengths,difficulty")
        ids = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = ? "
                             "ORDER BY s.id", [name])["id"].tolist()
        T.write_tags(store, report.run_id, T.rows_frame(
            [row(i, "category", value=CATS[(k + n) % 8], method="judge") for k, i in enumerate(ids)]
            + [row(i, "input_quality", value=["poor", "average", "good"][k % 3], method="judge")
               for k, i in enumerate(ids)]
            + [row(i, "response_quality", score=float(k % 4) + (n == 6), method="judge") for k, i in enumerate(ids)]),
            replace_failed=False)
    return store


def test_tags_page_click_a_bar_to_read_its_samples(workbench, browser_page, tagged: Store) -> None:
    page = browser_page
    url = workbench(tagged.path)
    page.goto(url + "/Tags")
    page.get_by_role("heading", name="Tags").wait_for()
    page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=90_000)  # first render is slow on a busy box
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for()
    page.get_by_text("difficulty is not charted: no sample has a difficulty value").wait_for()
    drawn = " ".join(page.locator(".js-plotly-plot").all_inner_texts())
    assert "[not_computed]" not in drawn and "Creative writing" in drawn
    chart.scroll_into_view_if_needed()
    bar = chart.locator(".barlayer .point path").first
    bar.wait_for()
    bar.click(force=True)
    caption = page.get_by_text("samples:").first
    caption.wait_for(timeout=30_000)
    assert "category" in caption.inner_text()
    caption.scroll_into_view_if_needed()
    page.mouse.wheel(0, 250)
    page.wait_for_timeout(500)
    page.screenshot(path=ARTIFACTS / "tags.png", full_page=True)
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.locator("img[src='x']").count() == 0
