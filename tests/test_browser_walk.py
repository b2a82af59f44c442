"""The seven tasks a researcher does, end to end in one real Chromium session on the demo data (a subset of
the demo datasets, loaded by the demo loader): browse, map, tag, label, duplicates and contamination, noise,
mixture export. Each step goes through the page as a user would, waits for its result, checks that no
exception reached the page, and leaves a screenshot in tests/artifacts/walk-*.png."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import core.labels.labelling as L
from core.ingest.demo import load_demo
from core.store.database import Store
from tests.browser_support import ARTIFACTS, choose_option, wait_idle

pytestmark = pytest.mark.browser
# The two smallest demo sets (CI has 2 cores): MT-Bench (80, an eval set with categories) is the first in the
# pages' dataset lists, so the map, tags and labels work on it; self-instruct (252) is browsed and checked.
DEMO = ["self-instruct-user-oriented", "mt-bench"]
SCHEMA = {"name": "task", "fields": [{"name": "category", "vocabulary": "magpie_task_category"}]}
LONG = 240_000  # ms: a background job on a loaded 2-core machine


def _step(page, name: str) -> None:
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0, name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"walk-{name}.png"), full_page=True)


@pytest.fixture
def demo_store(tmp_path: Path, shared: Path, workbench) -> tuple[Store, Callable[[], str]]:
    """The demo store and `wait() -> URL` of its server, started first so that it starts while the store loads."""
    wait = workbench.launch(tmp_path / "walk.duckdb")
    store = Store(tmp_path / "walk.duckdb", busy_timeout=10)
    load_demo(store, shared, names=DEMO)
    L.save_schema(store, L.parse_schema(SCHEMA))
    store.release()
    return store, wait


def test_seven_tasks_end_to_end(browser_page, demo_store: tuple[Store, Callable[[], str]], tmp_path: Path) -> None:
    page = browser_page
    try:
        _walk(page, demo_store[1](), tmp_path)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "walk-failed.png"), full_page=True)
        raise


def _press(page, url: str, button: str, done: str) -> None:
    """Open a page, press its button once the app is idle, and wait for the text that says it is done."""
    page.goto(url)
    page.get_by_role("button", name=button).wait_for(timeout=90_000)
    wait_idle(page)
    page.get_by_role("button", name=button).click()
    page.get_by_text(done, exact=False).first.wait_for(timeout=LONG)


def _walk(page, url: str, tmp_path: Path) -> None:
    # 1. Browse: a dataset's page, its rows and a sample turn by turn.
    page.goto(url + "/Datasets?dataset=self-instruct-user-oriented")
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=90_000)
    _step(page, "1-browse")

    # 2. Map: embed, project and cluster the first dataset; the new map is drawn.
    _press(page, url + "/Map", "Embed, project and cluster", "Made map")
    page.locator(".js-plotly-plot").first.wait_for(timeout=90_000)
    _step(page, "2-map")

    # 3. Tag with the offline backend's own tags.
    _press(page, url + "/Tags", "Start tagging", "computed")
    assert page.get_by_text("[not_computed]").count() == 0
    _step(page, "3-tags")

    # 4. Label one sample with the keyboard.
    page.goto(url + "/Label")
    page.get_by_label("Your name").fill("kim")
    page.get_by_role("button", name="Start labelling").click()
    page.get_by_text("Progress (kim): 0 /", exact=False).wait_for(timeout=90_000)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    wait_idle(page)
    page.keyboard.press("6")
    page.locator("[data-testid=stBaseButton-primary]", has_text="6 · Math").wait_for(timeout=60_000)
    wait_idle(page)
    page.keyboard.press("Enter")
    page.get_by_text("Progress (kim): 1 /", exact=False).wait_for(timeout=60_000)
    _step(page, "4-label")

    # 5. Duplicates (exact, across all datasets), then contamination against the eval sets.
    _press(page, url + "/Duplicates", "Find duplicates", "Method:")
    _step(page, "5a-duplicates")
    _press(page, url + "/Contamination", "Check contamination", "Per evaluation set")
    _step(page, "5b-contamination")

    # 6. Noise: the methods on MT-Bench's categories.
    page.goto(url + "/Noise")
    page.get_by_role("heading", name="Noisy labels").wait_for(timeout=90_000)
    choose_option(page, page.locator('[data-testid="stSelectbox"]').first, "mt-bench")
    wait_idle(page)
    run = page.get_by_role("button", name="Find noisy labels")
    if not run.is_visible():
        page.get_by_text("Run the noise methods").first.click()
    run.wait_for(timeout=60_000)
    wait_idle(page)
    run.click()
    page.get_by_text("samples flagged", exact=False).first.wait_for(timeout=LONG)
    # the run's charts and the suspicious list (the noise page's own browser test, folded in here)
    page.get_by_text("rescaler flags").first.wait_for(timeout=60_000)
    page.get_by_role("heading", name="Suspicious samples").wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.set_viewport_size({"width": 1400, "height": 2600})  # the tables sit below the fold
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
    _step(page, "6-noise")
    page.set_viewport_size({"width": 1400, "height": 1000})

    # 7. Mixture: compose from two sources and export a reproducible zip.
    page.goto(url + "/Mixture")
    page.get_by_text("Pick one or more sources").wait_for(timeout=90_000)
    for name in DEMO:
        choose_option(page, page.locator('[data-testid="stMultiSelect"]').first, name)
        page.keyboard.press("Escape")
    page.get_by_text("Samples per source").first.wait_for(timeout=90_000)
    page.get_by_text("Before and after filters").first.wait_for()
    page.get_by_role("tab", name="Export").click()
    page.get_by_role("button", name="Export").click()
    page.get_by_text("export run").wait_for(timeout=120_000)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download zip").click()
    path = tmp_path / "mix.zip"
    info.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith("manifest.json") for n in names) and any(n.endswith("datasheet.md") for n in names)
    assert any(n.endswith("openai/train.jsonl") for n in names)
    _step(page, "7-mixture")
    assert not page.dialogs
