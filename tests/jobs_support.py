"""Pages start long work as background jobs (core/store/jobs.py); AppTest tests wait for them, then rerun the
page so that it picks up the outcome as a user's next rerun would."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

import core.store.jobs as jobs


def finish_jobs(at: AppTest, timeout: float = 300.0) -> AppTest:
    """Wait until no job is running, then rerun the page: it shows the outcome (and reruns itself once)."""
    deadline = time.monotonic() + timeout
    while jobs.jobs(running_only=True):
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs still running after {timeout:.0f} s: {jobs.jobs(running_only=True)}")
        time.sleep(0.1)
    return at.run()
