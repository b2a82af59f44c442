"""The noise page in a real headless Chromium: the run's charts and the suspicious list render, no script runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser_support import ARTIFACTS
from tests.test_noise import build_noisy_store

pytestmark = pytest.mark.browser


def test_noise_page_in_a_browser(workbench, browser_page, tmp_path_factory, shared: Path) -> None:
    store, scores = build_noisy_store(tmp_path_factory.getbasetemp(), shared)
    page = browser_page
    url = workbench(store.path)
    page.goto(url + "/Noise")
    page.get_by_role("heading", name="Noisy labels").wait_for(timeout=90_000)
    page.get_by_text("rescaler flags").first.wait_for(timeout=60_000)
    page.get_by_role("heading", name="Suspicious samples").wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Cartography").click()
    page.wait_for_timeout(1500)
    page.set_viewport_size({"width": 1400, "height": 2600})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "noise.png"), full_page=True)
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1
    assert not page.dialogs  # no dataset text ran as script
    assert page.get_by_test_id("stMetricValue").get_by_text(f"{len(scores):,}", exact=True).first.is_visible()
