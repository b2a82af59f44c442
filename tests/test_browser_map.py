"""The map page in a real headless Chromium: the map draws, a box dragged on it selects, the table shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.maps.points import make_map
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
    # The default tool pans (so that a click reads a point); the box tool is one click in the toolbar.
    page.locator(".js-plotly-plot").first.hover()
    page.locator(".js-plotly-plot .modebar-btn[data-title='Box Select']").first.click()
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


# JS helpers: where a drawn point is on the page, and the trace colours as plotly drew them.
_POINT_XY = """([want]) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[0];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  const out = [];
  for (const t of gd._fullData) {
    if (t.type !== 'scattergl' || !t.hovertext) continue;
    for (let i = 0; i < t.x.length; i++) {
      if (String(t.hovertext[i]).includes(want)) out.push({id: Number(t.customdata[i]), text: String(t.hovertext[i]),
        x: box.left + xa._offset + xa.l2p(t.x[i]), y: box.top + ya._offset + ya.l2p(t.y[i])});
    }
  }
  return out;
}"""
_LEGEND_COLOURS = """() => {
  const gd = document.querySelectorAll('.js-plotly-plot')[0];
  const out = {};
  gd.querySelectorAll('.legend .traces').forEach(g => {
    const name = g.querySelector('.legendtext').textContent;
    const swatch = g.querySelector('.legendpoints path');
    out[name] = swatch ? getComputedStyle(swatch).fill : null;
  });
  return out;
}"""


# Whether the hover label on the map names sample `id` (the label's "id N" part).
_HOVER_NAMES = """(id) => [...document.querySelectorAll('.js-plotly-plot .hoverlayer .hovertext')]
  .some(g => [...g.querySelectorAll('text')].some(t => t.textContent.trim() === `id ${id}`))"""


_POINTS = """() => {
  const gd = document.querySelectorAll('.js-plotly-plot')[0];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  const out = [];
  for (const t of gd._fullData) {
    if (t.type !== 'scattergl') continue;
    for (let i = 0; i < t.x.length; i++) out.push({id: Number(t.customdata[i]),
      x: box.left + xa._offset + xa.l2p(t.x[i]), y: box.top + ya._offset + ya.l2p(t.y[i])});
  }
  return out;
}"""


def _isolated(points: list[dict], p: dict, radius: float = 8.0) -> bool:
    """Whether no other drawn point lies within `radius` px of p (so a click there hits p)."""
    return all(q is p or (q["x"] - p["x"]) ** 2 + (q["y"] - p["y"]) ** 2 >= radius ** 2 for q in points)


@pytest.mark.browser
def test_new_map_is_shown_click_reads_a_point_unclustered_is_grey(tmp_path_factory, shared: Path, workbench,
                                                                   browser_page) -> None:
    from core.maps.figures import UNCLUSTERED, UNCLUSTERED_COLOUR
    from core.maps.points import list_maps
    from tests.browser_support import wait_idle

    store, run = embedded_store(tmp_path_factory.getbasetemp(), shared)
    first = make_map(store, ["arena", "gsm8k"], embedding_run_id=run, method="pca", clusters="hdbscan")
    page = browser_page
    page.goto(workbench(store.path) + "/Map")
    page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=90_000)
    wait_idle(page)
    picker = page.get_by_role("combobox", name="Map", exact=True)
    assert picker.input_value().startswith(first.name)

    # Unclustered (HDBSCAN noise) is grey in the legend, the clusters are not.
    page.wait_for_selector(".js-plotly-plot .legend .traces", timeout=30_000)
    colours = page.evaluate(_LEGEND_COLOURS)
    grey = "rgb({}, {}, {})".format(*(int(UNCLUSTERED_COLOUR[i:i + 2], 16) for i in (1, 3, 5)))
    assert colours.get(UNCLUSTERED) == grey, colours
    others = [c for name, c in colours.items() if name != UNCLUSTERED]
    assert len(others) >= 2 and grey not in others and len(set(others)) == len(others)

    page.locator(".js-plotly-plot .nsewdrag").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    points = page.evaluate(_POINTS)
    height = page.viewport_size["height"]
    clickable = [p for p in points if 40 < p["y"] < height - 40 and _isolated(points, p)]
    # Hover shows a quote as a quote (plain text, not &quot;).
    ids = {p["id"] for p in clickable}
    quoted = next(p for p in page.evaluate(_POINT_XY, ['"']) if p["id"] in ids)
    page.mouse.move(quoted["x"], quoted["y"])
    page.wait_for_selector(".js-plotly-plot .hoverlayer .hovertext", timeout=10_000)
    hover = page.locator(".js-plotly-plot .hoverlayer .hovertext").first.text_content()
    assert '"' in hover and "&quot;" not in hover and "&amp;" not in hover

    # A click in the default tool (pan) opens the point: its text and its nearest neighbours.
    target = next(p for p in clickable if p["id"] != quoted["id"])
    page.mouse.move(target["x"], target["y"])
    # As a user does, click once the label names the point. Plotly computes hover at most every 50 ms
    # and a click reads the last hover it computed: a click sooner after the move opened the quoted point.
    page.wait_for_function(_HOVER_NAMES, arg=target["id"], timeout=10_000)
    page.mouse.click(target["x"], target["y"])
    page.get_by_text(f"Sample {target['id']}", exact=True).wait_for(timeout=60_000)
    page.get_by_text("Nearest neighbours (cosine)").wait_for(timeout=30_000)
    text = store.query_df("SELECT text FROM samples WHERE id = ?", [target["id"]]).text[0]
    assert page.get_by_text(text[:40], exact=False).count() >= 1

    # Make a second map on the page: it is the one shown afterwards.
    page.get_by_text("Compute a new map").click()
    wait_idle(page)
    page.get_by_role("button", name="Embed, project and cluster").click()
    page.get_by_text("Made map", exact=False).wait_for(timeout=180_000)
    wait_idle(page)
    newest = list_maps(store, "arena").iloc[0]
    assert int(newest.map_id) != first.map_id
    assert picker.input_value().startswith(newest["name"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map_click_new.png"), full_page=True)
    assert not page.dialogs
