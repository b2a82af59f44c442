"""The map page in a real headless Chromium: the map draws, a box dragged on it selects, the table shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.maps import make_map
from tests.browser_support import ARTIFACTS
from tests.test_embed import embedded_store


@pytest.mark.browser
def test_map_draws_and_box_selection_shows_table(tmp_path_factory, shared: Path, workbench, browser_page) -> None:
    store, run = embedded_store(tmp_path_factory.getbasetemp(), shared)
    make_map(store, ["gsm8k", "arena"], embedding_run_id=run, method="pca", clusters="kmeans", k=5)
    url = workbench(store.path)
    page = browser_page
    page.goto(url + "/Map")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(state="visible", timeout=90_000)
    page.wait_for_selector(".js-plotly-plot .nsewdrag", timeout=30_000)
    page.wait_for_timeout(1500)  # let WebGL draw
    drag = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    assert drag and drag["width"] > 200
    x0, y0 = drag["x"] + drag["width"] * 0.05, drag["y"] + drag["height"] * 0.05
    x1, y1 = drag["x"] + drag["width"] * 0.6, drag["y"] + drag["height"] * 0.95
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=8)
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()
    heading = page.get_by_text("Selected:", exact=False).first
    heading.wait_for(timeout=60_000)
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)
    page.locator("[data-testid='stDataFrame']").first.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map.png"), full_page=True)
    text = heading.inner_text()
    assert "samples" in text and not text.startswith("Selected: 0 ")
    assert not page.dialogs  # no script in the data ran
