"""Background jobs: long work started from a page runs in a thread of the server process.

A page hands `start_job` a function that takes a `report(fraction, message, done=None, total=None)`
callback; the job runs on its own thread, so it keeps going when the user moves to another page or
closes the tab, and every page (and the home page) can list the jobs with their progress. Cancelling is
cooperative: the next progress report raises `JobCancelled` inside the work, which unwinds through the
compute step's own run bookkeeping (its run is recorded as cancelled; what it committed stays, and the
kinds that resume — embeddings, tags — pick up from there when started again).

The registry is per process (the Streamlit server); work started from the command line is visible through
the `runs` table instead. Nothing here imports streamlit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "JobCancelled", "Report", "start_job", "jobs", "get_job", "cancel_job", "forget_finished",
           "duration"]

log = logging.getLogger(__name__)
Report = Callable[..., None]
_MAX_KEPT = 50  # finished jobs remembered for the pages to show
EXIT_WAIT_S = float(os.environ.get("ASSAY_EXIT_WAIT_S", "30"))  # for running jobs to stop at interpreter exit


class JobCancelled(Exception):
    """Raised inside a job's work at its next progress report after the user cancelled it."""

    def __init__(self) -> None:
        super().__init__("Cancelled by the user; what was committed stays and the run can resume")


@dataclass
class Job:
    """One piece of background work and its progress."""

    job_id: str
    kind: str
    title: str
    db: str
    started: float = field(default_factory=time.time)
    fraction: float = 0.0
    message: str = "starting"
    done: int | None = None
    total: int | None = None
    status: str = "running"  # running, finished, failed, cancelled
    error: str | None = None
    result: Any = None
    finished: float | None = None
    stage_started: float = field(default_factory=time.time)  # a step's fraction restarts from 0 per stage
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.time()) - self.started

    @property
    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from the progress so far (None until there is enough to go on)."""
        in_stage = time.time() - self.stage_started
        if self.status != "running" or self.fraction < 0.02 or in_stage < 2:
            return None
        return in_stage * (1 - self.fraction) / self.fraction

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set() and self.status == "running"

    def report(self, fraction: float, message: str = "", done: int | None = None, total: int | None = None) -> None:
        """Progress from the work; raises JobCancelled once the user has cancelled."""
        if self._cancel.is_set():
            raise JobCancelled()
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction < self.fraction:
            self.stage_started = time.time()
        self.fraction = fraction
        if message:
            self.message = message
        self.done, self.total = done, total

    def describe(self) -> str:
        """One line for a page: what, how far, how long left."""
        counts = f" ({self.done:,}/{self.total:,})" if self.done is not None and self.total else ""
        if self.status == "running":
            eta = self.eta_s
            left = f", about {duration(eta)} left" if eta is not None else ""
            state = "cancelling" if self.cancelling else f"{self.fraction:.0%}"
            return f"{self.title}: {self.message}{counts}, {state}, {duration(self.elapsed_s)} so far{left}"
        detail = f": {self.error}" if self.error else ""
        return f"{self.title}: {self.status} after {duration(self.elapsed_s)}{detail}"


def duration(seconds: float) -> str:
    """A duration for people: "45 s", "3 min 20 s", "1 h 05 min"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


_jobs: dict[str, Job] = {}
_lock = threading.Lock()


def start_job(kind: str, title: str, work: Callable[[Job], Any], *, db: str) -> Job:
    """Run `work(job)` on a background thread; `work` reports progress through `job.report`."""
    job = Job(uuid.uuid4().hex[:12], kind, title, str(db))

    def run() -> None:
        try:
            job.result = work(job)
            job.status, job.fraction = "finished", 1.0
        except JobCancelled as exc:
            job.status, job.error = "cancelled", str(exc)
        except Exception as exc:  # noqa: BLE001 - shown on the page as a sentence; the trace goes to the log
            job.status, job.error = "failed", _one_line(exc)
            log.exception("job %s (%s) failed", job.job_id, title)
        finally:
            job.finished = time.time()

    with _lock:
        _jobs[job.job_id] = job
        _trim()
    job._thread = threading.Thread(target=run, name=f"assay-job-{job.job_id}", daemon=True)
    job._thread.start()
    return job


@atexit.register
def _stop_at_exit() -> None:
    """Cancel the running jobs and wait (bounded) for their threads before the interpreter finalises.

    A daemon thread still inside native code (DuckDB, onnxruntime, tantivy) when finalisation starts is
    ended by a forced unwind as it retakes the GIL; a C++ `catch (...)` that swallows it makes glibc abort
    the whole process ("FATAL: exception not rethrown", exit 134) after everything else went well."""
    with _lock:
        running = [j for j in _jobs.values() if j._thread is not None and j._thread.is_alive()]
    for job in running:
        job._cancel.set()
    deadline = time.monotonic() + EXIT_WAIT_S
    for job in running:
        job._thread.join(max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]


def _one_line(exc: BaseException) -> str:
    from core.errors import UserError

    text = " ".join(str(exc).split())
    if isinstance(exc, UserError | KeyError | ValueError):
        return text.strip("'\"")
    return f"internal error ({type(exc).__name__}); details in the server log"


def _trim() -> None:
    done = [j for j in _jobs.values() if j.status != "running"]
    for job in sorted(done, key=lambda j: j.started)[: max(0, len(done) - _MAX_KEPT)]:
        _jobs.pop(job.job_id, None)


def jobs(db: str | None = None, *, running_only: bool = False) -> list[Job]:
    """The jobs of this process (of one store), newest first."""
    with _lock:
        found = [j for j in _jobs.values() if db is None or j.db == str(db)]
    if running_only:
        found = [j for j in found if j.status == "running"]
    return sorted(found, key=lambda j: j.started, reverse=True)


def get_job(job_id: str | None) -> Job | None:
    return _jobs.get(job_id) if job_id else None


def cancel_job(job_id: str) -> bool:
    """Ask a running job to stop at its next progress report; False if it is not running."""
    job = _jobs.get(job_id)
    if job is None or job.status != "running":
        return False
    job._cancel.set()
    return True


def forget_finished(db: str | None = None) -> None:
    with _lock:
        for job in [j for j in _jobs.values() if j.status != "running" and (db is None or j.db == str(db))]:
            _jobs.pop(job.job_id, None)
