"""Long work in a real Chromium: a map job started on the Map page says beforehand what it will embed,
keeps running when the user goes to the home page, shows there with its progress, and Cancel stops it,
leaving a cancelled run that the next embedding of the same data resumes."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from core.ingest.importer import ingest_records
from core.maps.embed import embed
from core.maps.estimates import embedding_plan
from core.store.database import Store
from core.store.jobs import JobCancelled
from tests.browser_support import ARTIFACTS, wait_idle
from tests.test_embed import read_jsonl


def _embed_run(store: Store):
    runs = store.runs()
    runs = runs[runs.kind == "embed"]
    return None if runs.empty else runs.iloc[-1]


@pytest.mark.browser
def test_a_map_job_runs_on_is_listed_on_home_and_cancels(store: Store, shared: Path, workbench,
                                                         browser_page) -> None:
    ingest_records(store, read_jsonl(shared / "gsm8k" / "train.jsonl", 3000), name="gsm8k", shape="qa")
    store.release()
    url = workbench(store.path)
    page = browser_page
    page.goto(url + "/Map")
    page.get_by_text("distinct texts to compute", exact=False).first.wait_for(timeout=90_000)
    assert page.get_by_text("0 cached", exact=False).count() >= 1  # said before it starts
    wait_idle(page)
    page.get_by_role("button", name="Embed, project and cluster").click()
    page.get_by_role("button", name="Cancel").first.wait_for(timeout=60_000)

    page.goto(url)  # leave the page (a new session, as after closing the tab): the job keeps running
    page.get_by_text("Map of gsm8k", exact=False).first.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jobs-home.png"), full_page=True)
    # Cancel once the first chunk of 512 texts is committed (the sidebar follows the job every 2 s).
    progress = page.locator("[data-testid='stSidebar']").get_by_text(re.compile(r"embedding \d+/3000"))
    deadline = time.monotonic() + 300
    while int(re.search(r"embedding (\d+)/", progress.first.inner_text(timeout=60_000)).group(1)) <= 600:
        assert time.monotonic() < deadline, "the embedding made no progress"
        page.wait_for_timeout(1000)
    wait_idle(page)
    page.get_by_role("button", name="Cancel").first.click()

    # The server holds the store while its job works, so watch the page, not the file.
    deadline = time.monotonic() + 300
    while page.get_by_text("cancelled after", exact=False).count() == 0:
        assert time.monotonic() < deadline, "the job was not cancelled"
        page.wait_for_timeout(2000)
        page.reload()
        page.get_by_text("Jobs").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "jobs-cancelled.png"), full_page=True)
    assert not page.dialogs
    time.sleep(2)  # the server lets go of the store after 1 s idle
    run = _embed_run(store)
    assert run.status == "cancelled"
    # What was committed stays, and the same embedding resumes the cancelled run (stopped again after
    # one more batch here, to keep the test short): still one embed run, with more vectors cached.
    before = embedding_plan(store, "gsm8k").n_cached
    assert before > 0

    def stop_after_a_batch(done: int, total: int) -> None:
        if done > 32:  # the first chunk of 32 is committed, the second is not
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        embed(store, "gsm8k", text="instruction", commit_every=32, progress=stop_after_a_batch)
    runs = store.runs()
    assert (runs.kind == "embed").sum() == 1 and _embed_run(store).status == "cancelled"
    assert embedding_plan(store, "gsm8k").n_cached > before
