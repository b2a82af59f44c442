"""Real browser: label three samples with the keyboard only and watch the progress change."""

from __future__ import annotations

from pathlib import Path

import pytest

import core.labels.labelling as L
from core.ingest.importer import ingest
from tests.browser_support import ARTIFACTS, wait_idle

SCHEMA = {"name": "task", "guidelines": "Pick the **main** task.",
          "fields": [{"name": "category", "vocabulary": "magpie_task_category"}]}


def press(page, key: str) -> None:
    """Press a key once the app is idle: a key pressed in the middle of a rerun can be dropped."""
    wait_idle(page)
    page.keyboard.press(key)


@pytest.mark.browser
def test_keyboard_labelling(workbench, browser_page, store, shared: Path) -> None:
    wait = workbench.launch(store.path)  # the server starts while the store is built
    ingest(store, shared / "mt-bench" / "mt_bench_question.jsonl", name="mt-bench", license="Apache-2.0")
    L.save_schema(store, L.parse_schema(SCHEMA))
    url = wait()
    page = browser_page
    page.goto(url + "/Label")
    page.get_by_label("Your name").fill("kim")
    page.get_by_role("button", name="Start labelling").click()
    page.get_by_text("Progress (kim): 0 / 80").wait_for()
    page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page, not a field
    for n, (key, name) in enumerate([("6", "Math"), ("2", "Reasoning"), ("5", "Coding & Debugging")], start=1):
        press(page, key)  # pick, and see the pick highlighted before submitting
        page.locator("[data-testid=stBaseButton-primary]", has_text=f"{key} · {name}").wait_for()
        press(page, "Enter")
        page.get_by_text(f"Progress (kim): {n} / 80").wait_for()
    press(page, "s")  # skip the fourth
    page.get_by_text("Skipped sample").wait_for()
    press(page, "u")  # and take the skip back
    page.get_by_text("Undid your last action").wait_for()
    page.screenshot(path=ARTIFACTS / "label.png", full_page=True)
    log = L.events(store, "task")
    assert list(log["kind"]) == ["label", "label", "label", "skip", "undo"]
    assert list(log[log["kind"] == "label"]["value"]) == ['"Math"', '"Reasoning"', '"Coding & Debugging"']
    assert not page.dialogs
