"""Streamlit views of background jobs (core/store/jobs.py): a job's live progress with a Cancel button, and the
list of running jobs shown on every page's sidebar and on the home page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

import core.store.jobs as J
from ui import error, md_text, success, warning

POLL_S = 1.0


def start(state_key: str, kind: str, title: str, work: Callable[[J.Job], Any], db: str) -> J.Job:
    """Start `work` as a background job and remember it under `state_key` for this page."""
    job = J.start_job(kind, title, work, db=db)
    st.session_state[state_key] = job.job_id
    return job


def running(state_key: str) -> bool:
    job = J.get_job(st.session_state.get(state_key))
    return job is not None and job.status == "running"


def follow(state_key: str, on_done: Callable[[J.Job], None] | None = None) -> None:
    """The page's job under `state_key`: live progress and Cancel while it runs; its outcome once, then
    `on_done(job)` (for a finished job) and a rerun of the whole page so that it shows the results."""
    job = J.get_job(st.session_state.get(state_key))
    if job is None:
        return

    @st.fragment(run_every=POLL_S if job.status == "running" else None)
    def _view() -> None:
        current = J.get_job(st.session_state.get(state_key))
        if current is None:
            return
        if current.status == "running":
            st.progress(current.fraction, text=md_text(current.describe()))
            if st.button("Cancel", key=f"{state_key}_cancel", disabled=current.cancelling,
                         help="stops at the next batch; what was committed stays, and running it again resumes"):
                J.cancel_job(current.job_id)
            return
        st.session_state.pop(state_key, None)
        if current.status == "finished":
            if on_done is not None:
                on_done(current)
            st.rerun(scope="app")
        elif current.status == "cancelled":
            warning(current.describe())
        else:
            error(current.describe())

    _view()


def announce(state_key: str, message: str, *, ok: bool = True) -> None:
    """From a job's `on_done`: a message shown once by `show_announcement` on the rerun that follows
    (as a success, or a warning where the job finished without computing what was asked)."""
    st.session_state[f"{state_key}_message"] = (ok, message)


def show_announcement(state_key: str) -> None:
    """The message `announce` left for this job, once."""
    if outcome := st.session_state.pop(f"{state_key}_message", None):
        ok, message = outcome
        (success if ok else warning)(message)


def sidebar(db: str) -> None:
    """Running jobs of this store, on every page (called from app.py's navigation)."""
    if not J.jobs(db, running_only=True):
        return

    @st.fragment(run_every=2.0)
    def _list() -> None:
        active = J.jobs(db, running_only=True)
        if not active:
            return
        st.caption(f"Running jobs ({len(active)})")
        for job in active:
            st.progress(job.fraction, text=md_text(job.describe()))

    with st.sidebar:
        _list()


def jobs_table(db: str) -> None:
    """Home page: every job of this server process on this store, newest first, with Cancel for running ones."""
    found = J.jobs(db)
    if not found:
        st.caption("No jobs started from the workbench since it started.")
        return
    for job in found[:10]:
        c1, c2 = st.columns([6, 1])
        if job.status == "running":
            c1.progress(job.fraction, text=md_text(job.describe()))
            if c2.button("Cancel", key=f"home_cancel_{job.job_id}", disabled=job.cancelling):
                J.cancel_job(job.job_id)
                st.rerun()
        else:
            c1.text(job.describe())
