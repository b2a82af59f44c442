"""Embedding Atlas on the map page in real headless Chromium (software WebGPU): every point drawn, hostile
dataset text shown as text in its tooltip, and a click on its legend selecting samples on the page."""

from __future__ import annotations

import pytest

import core.maps.atlas as atlas
from tests.browser_support import ARTIFACTS, CHROMIUM

HOSTILE = "<img src=x onerror=alert(1)> **bold** [link](http://example.com) <b>b</b>"


@pytest.mark.browser
@pytest.mark.skipif(not atlas.available(), reason="embedding-atlas 0.26.0 is not installed")
def test_atlas_draws_every_point_text_stays_text_legend_selects(tmp_path, workbench, playwright_driver) -> None:
    from bench.map_draw import ATLAS_CHROMIUM_ARGS, atlas_frame, build_store, wait_atlas_drawn

    wait = workbench.launch(tmp_path / "store.duckdb")  # the server starts while the store is built
    store, _ = build_store(tmp_path / "store.duckdb", 0)
    with store.transaction() as con:  # every text hostile: whichever point the mouse finds shows one
        con.execute("UPDATE samples SET text = ? || ' #' || id", [HOSTILE])
    n = int(store.query_df("SELECT count(*) AS n FROM samples").n[0])
    url = wait()
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ATLAS_CHROMIUM_ARGS)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url + "/Map?draw=atlas")
        assert wait_atlas_drawn(page, 240) > 0, "the atlas drew no points"
        frame = atlas_frame(page)
        frame.get_by_text(f"{n:,} points").first.wait_for(timeout=30_000)  # all of them, none sampled
        canvas = frame.locator("canvas").first
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        tooltip = frame.get_by_text("<img src=x onerror=alert(1)>", exact=False)
        for i in range(60):  # hover a grid of spots until one is on a point
            page.mouse.move(box["x"] + box["width"] * (0.2 + 0.6 * (i % 8) / 7),
                            box["y"] + box["height"] * (0.2 + 0.6 * (i // 8) / 7))
            page.wait_for_timeout(300)
            if tooltip.count():
                break
        assert tooltip.count(), "no tooltip with the text"
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map_atlas.png"))
        assert "**bold**" in tooltip.first.inner_text()  # markdown shown as characters, not bold
        assert frame.locator("img[src='x']").count() == 0 and frame.locator("a[href='http://example.com']").count() == 0
        # A click on a legend entry selects that category: the page resolves it to samples.
        frame.get_by_text("topic", exact=False).first.click()
        heading = page.get_by_text("Selected:", exact=False).first
        heading.wait_for(timeout=90_000)
        assert "samples" in heading.inner_text() and not heading.inner_text().startswith("Selected: 0 ")
        assert not dialogs
    finally:
        browser.close()
