"""In a real headless Chromium: the Datasets page filters by a signal typed in the filter grammar."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_signals import _expected_category, build_toy

pytestmark = pytest.mark.browser


def test_datasets_page_filters_by_a_signal(workbench, browser_page, tmp_path: Path) -> None:
    store = build_toy(tmp_path / "browser-signals.duckdb")
    page = browser_page
    page.goto(workbench(store.path) + "/Datasets?dataset=toy")
    page.get_by_text("rows 1–30 of 30 matching").wait_for()
    page.get_by_text("Filters (0)").click()
    box = page.get_by_role("textbox", name="Filters as text")
    box.fill("tag.category:eq:Math\nreward.proxy:gt:1")
    box.press("Control+Enter")
    n = sum(1 for i in range(1, 31) if _expected_category(i) == "Math" and i / 10 > 1)
    page.get_by_text(f"rows 1–{n} of {n} matching").wait_for()
