"""The mixture page in a real headless Chromium: compose, preview, export, download the zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from core.ingest.demo import load_demo
from core.store.database import Store
from tests.browser_support import ARTIFACTS, choose_option

pytestmark = pytest.mark.browser


@pytest.fixture
def loaded(tmp_path: Path, shared: Path) -> Store:
    store = Store(tmp_path / "browser.duckdb", busy_timeout=5)
    load_demo(store, shared, names=["gsm8k-train", "alpaca-gpt4-demo-1k"])
    return store


def test_compose_preview_export_download(workbench, browser_page, loaded: Store, tmp_path: Path) -> None:
    page = browser_page
    url = workbench(loaded.path)
    page.goto(url + "/Mixture")
    page.get_by_role("heading", name="Mixture").wait_for()
    page.get_by_text("Pick one or more sources").wait_for()
    for name in ("gsm8k-train", "alpaca-gpt4-demo-1k"):
        choose_option(page, page.locator('[data-testid="stMultiSelect"]').first, name)
        page.keyboard.press("Escape")
    page.get_by_text("Samples per source").first.wait_for(timeout=60_000)  # the preview's bar chart
    page.get_by_text("Before and after filters").first.wait_for()
    page.get_by_role("tab", name="Warnings").click()
    page.get_by_text("non-commercial licence").first.wait_for()
    page.get_by_role("tab", name="Export").click()
    page.get_by_role("button", name="Export").click()
    page.get_by_text("export run").wait_for(timeout=60_000)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download zip").click()
    path = tmp_path / "mix.zip"
    info.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith("manifest.json") for n in names) and any(n.endswith("openai/train.jsonl") for n in names)
    page.get_by_role("tab", name="Composition").click()
    page.set_viewport_size({"width": 1400, "height": 3200})  # Streamlit scrolls inside its own container
    page.get_by_text("Samples per source").first.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=ARTIFACTS / "mixture.png", full_page=True)
    assert not page.dialogs
