"""Loading data through the home page's upload form, in a real headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.store.database import Store
from tests.browser_support import ARTIFACTS

pytestmark = pytest.mark.browser


def _upload(page, path: Path, name: str) -> None:
    expander = page.get_by_text("Load another dataset")
    if expander.count():  # a store with data keeps the form in an expander
        page.locator('[data-testid="stDataFrame"]').first.wait_for()  # let the page settle first
        expander.first.click()
    page.get_by_role("textbox", name="Name").wait_for()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("button", name="Load", exact=True).click()


def test_upload_a_good_file_then_a_broken_one(workbench, browser_page, tmp_path: Path, shared: Path) -> None:
    store = Store(tmp_path / "upload.duckdb", busy_timeout=5)
    store.schema_version()  # an empty store: the home page explains how to load data
    page = browser_page
    page.goto(workbench(store.path))
    page.get_by_text("This store is empty").wait_for()

    _upload(page, shared / "mt-bench" / "mt_bench_question.jsonl", "mt-bench-upload")
    page.get_by_text("Loaded 80 samples into dataset 'mt-bench-upload'").wait_for(timeout=30_000)
    assert store.dataset("mt-bench-upload").n_samples == 80

    page.screenshot(path=str(ARTIFACTS / "upload_ok.png"), full_page=True)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "a"}\n{"question": "q2", "answer": \n')
    _upload(page, broken, "broken")
    page.get_by_text("broken.jsonl line 2").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "upload_error.png"), full_page=True)
    assert store.dataset_names() == ["mt-bench-upload"]  # the broken file wrote nothing
