"""End to end in a real headless Chromium: home page, open a dataset, search, open a sample, no script runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.browse.samples import query_samples
from core.ingest.importer import ingest, ingest_records
from core.store.database import Store
from tests.browser_support import ARTIFACTS, wait_idle

XSS = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Store:
    """One store and one server for this module's tests: they only read."""
    store = Store(tmp_path_factory.mktemp("browse") / "browser.duckdb", busy_timeout=5)
    ingest(store, shared / "gsm8k" / "train.jsonl", name="gsm8k-train", license="MIT")
    ingest_records(store, [{"instruction": f"Please say {XSS} now", "output": f"{IMG} and **bold**"}],
                   name="xss", shape="alpaca", license="MIT")
    return store


def _click_first_row(page) -> None:
    # The table is a canvas data grid: click the selection checkbox of its first data row, once no rerun
    # can redraw the grid under the click.
    wait_idle(page)
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)


def test_browse_search_and_open_a_sample(module_workbench, browser_page, loaded: Store) -> None:
    page = browser_page
    url = module_workbench(loaded.path)
    page.goto(url)
    page.get_by_role("heading", name="Assay").wait_for()
    page.get_by_text("Datasets (2)").wait_for()
    nav = page.get_by_test_id("stSidebarNav")
    nav.get_by_role("link", name="Home").wait_for()
    words = nav.inner_text().split()  # link labels, with their icons' ligature names
    assert "app" not in words and all(w in words for w in ("Home", "Datasets", "Map", "Label", "Mixture"))

    page.get_by_role("link", name="Browse a dataset").click()  # opens the dataset page (first dataset)
    page.get_by_role("heading", name="gsm8k-train").wait_for()
    page.get_by_text("rows 1–50 of 7,473 matching").wait_for()

    search = page.get_by_role("textbox", name="Search")
    search.fill("marbles")
    search.press("Enter")
    expected = query_samples(loaded, "gsm8k-train", search="marbles")
    page.get_by_text(f"rows 1–{min(50, expected.total)} of {expected.total:,} matching").wait_for()

    _click_first_row(page)
    page.get_by_role("heading", name=f"Sample {expected.ids[0]}").wait_for()
    turns = page.locator('[data-testid="stChatMessage"]')
    turns.get_by_text(expected.rows.preview[0][:60]).first.wait_for()
    assert "marbles" in turns.first.inner_text().lower()
    page.set_viewport_size({"width": 1400, "height": 2400})  # the page scrolls inside Streamlit's own container
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "browse.png"))
    assert page.dialogs == []


def test_script_tags_do_not_run_in_the_browser(module_workbench, browser_page, loaded: Store) -> None:
    page = browser_page
    url = module_workbench(loaded.path)
    page.goto(url + "/Datasets?dataset=xss")
    page.get_by_text("rows 1–1 of 1 matching").wait_for()
    sample_id = query_samples(loaded, "xss").ids[0]
    box = page.get_by_role("spinbutton", name="Open sample by id (or select a row above)")
    box.fill(str(sample_id))
    box.press("Enter")
    turns = page.locator('[data-testid="stChatMessage"]')  # (the grid's hidden a11y table holds the text too)
    turns.get_by_text(f"Please say {XSS} now", exact=True).wait_for()
    turns.get_by_text(f"{IMG} and **bold**", exact=True).wait_for()
    page.wait_for_timeout(1000)  # give any injected handler (img onerror) the time to fire
    assert page.dialogs == []
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("script", has_text="alert(1)").count() == 0
    page.set_viewport_size({"width": 1400, "height": 2000})
    page.screenshot(path=str(ARTIFACTS / "browse_xss.png"))
