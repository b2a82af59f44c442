"""One run lifecycle (core/store/runs.py): frozen params, metrics apart, failure and cancel recorded, resume."""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
from pathlib import Path

import pytest

from core.ingest.importer import ingest_records
from core.mixture.export import MixturePlanError, export_mixture
from core.mixture.recipe import load_recipe
from core.store.database import Store
from core.store.jobs import cancel_job, start_job
from core.store.runs import Run

ROOT = Path(__file__).resolve().parent.parent


def _row(store: Store, run_id: int):
    return store.runs().set_index("run_id").loc[run_id]


def test_params_are_frozen_and_metrics_kept_apart(store: Store) -> None:
    params = {"k": 5, "datasets": ["a", "b"]}
    with store.run("probe", params) as run:
        params["k"] = 99  # the caller's dict changing later does not change the run
        with pytest.raises(TypeError):
            run.params["k"] = 6  # type: ignore[index]
        run.set_metrics(seconds=1.5)
        run.metrics["found"] = 3
        run.finish(10)
    row = _row(store, run.run_id)
    assert json.loads(row.params) == {"k": 5, "datasets": ["a", "b"]}
    assert json.loads(row.metrics) == {"seconds": 1.5, "found": 3}
    assert (row.status, row.n_samples, row.state) == ("finished", 10, "finished")


def test_leaving_the_block_finishes_the_run(store: Store) -> None:
    with store.run("probe", {"x": 1}) as run:
        assert _row(store, run.run_id).status == "running"
    row = _row(store, run.run_id)
    assert row.status == "finished" and row.finished_at is not None and row.metrics is None


def test_a_failure_is_recorded_with_its_error_and_re_raised(store: Store) -> None:
    with pytest.raises(ValueError, match="no such column 'foo'"):
        with store.run("probe", {"x": 1}) as run:
            run.set_metrics(stage="reading")
            raise ValueError("no such column 'foo'")
    row = _row(store, run.run_id)
    assert row.status == "failed" and row.error == "ValueError: no such column 'foo'"
    assert json.loads(row.metrics) == {"stage": "reading"} and row.finished_at is not None


def test_a_failed_mixture_export_is_recorded_as_failed(store: Store) -> None:
    ingest_records(store, [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)], name="small", shape="qa")
    recipe = load_recipe("name: toomuch\nsources: [{dataset: small, count: 500}]\n")
    with pytest.raises(MixturePlanError):
        export_mixture(store, recipe, store.path.parent / "out", allow_shortfall=False)
    run = store.runs().query("kind == 'mix-export'").iloc[0]
    assert run.status == "failed" and run.error.startswith("MixturePlanError: The recipe's targets cannot be met")


def test_a_cancelled_job_records_its_run_as_cancelled(store: Store) -> None:
    inside, go = threading.Event(), threading.Event()

    def work(job) -> None:
        with store.run("probe", {"x": 1}):
            inside.set()
            go.wait(30)
            job.report(0.5, "half way")  # raises JobCancelled: the user pressed stop
            raise AssertionError("not reached")

    job = start_job("probe", "a probe", work, db=str(store.path))
    assert inside.wait(30)
    assert cancel_job(job.job_id)
    go.set()
    deadline = time.monotonic() + 30
    while job.status == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status == "cancelled"
    row = store.runs().iloc[-1]
    assert row.status == "cancelled" and row.error.startswith("JobCancelled: Cancelled by the user")


def test_resume_takes_up_an_unfinished_run_with_identical_params(store: Store) -> None:
    params = {"model": "m", "datasets": ["a"]}
    with pytest.raises(RuntimeError):
        with store.run("probe", params, resume=True) as first:
            first.set_metrics(done=40)
            raise RuntimeError("killed")
    again = store.run("probe", dict(params), resume=True)
    assert again.run_id == first.run_id and again.resumed and again.metrics == {"done": 40}
    assert _row(store, again.run_id).status == "running" and _row(store, again.run_id).error is None
    with again:
        again.finish(5)
    # finished runs, other params, other kinds and resume=False all start new runs
    assert store.run("probe", params, resume=True).run_id != first.run_id
    assert not store.run("probe", {"model": "other", "datasets": ["a"]}, resume=True).resumed
    assert store.run("probe", params).resumed is False


def test_resume_skips_a_run_a_live_process_is_doing(store: Store) -> None:
    live = store.start_run("probe", params={"x": 1})
    with store.connect() as con:  # pid 1 is alive on this host and is not this process
        con.execute("UPDATE runs SET pid = 1 WHERE run_id = ?", [live])
    run = store.run("probe", {"x": 1}, resume=True)
    assert run.run_id != live and not run.resumed


def test_a_run_inside_the_callers_transaction_goes_with_its_rollback(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction() as con:
            with store.run("probe", {"x": 1}, con=con):
                raise RuntimeError("load failed")
    assert store.runs().empty


def test_prepare_writes_the_runs_own_rows_in_the_same_transaction(store: Store) -> None:
    def prepare(con, run_id: int) -> None:
        con.execute("CREATE TABLE probe_items AS SELECT ? AS run_id, range AS i FROM range(3)", [run_id])

    run = store.run("probe", {"x": 1}, prepare=prepare)
    assert store.query_df("SELECT count(*) AS n FROM probe_items WHERE run_id = ?", [run.run_id]).n[0] == 3


_DIRECT = re.compile(r"\.(start_run|finish_run)\(|UPDATE runs SET")


def test_no_module_bypasses_the_lifecycle() -> None:
    """Only the lifecycle (core/store/runs.py) and the store's bare row helpers write run rows."""
    allowed = {Path(inspect.getfile(Run)).resolve(), Path(inspect.getfile(Store)).resolve()}
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "core").resolve().rglob("*.py"))
                 if p not in allowed and _DIRECT.search(p.read_text())]
    assert offenders == []


_SQL = re.compile(r"query_df\(|\.execute\(|\.sql\(|\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s")


def test_pages_hold_no_sql() -> None:
    files = [*sorted((ROOT / "pages").glob("*.py")), *(ROOT / n for n in ("app.py", "ui.py", "ui_jobs.py"))]
    offenders = [f"{p.name}:{i}" for p in files if p.exists()
                 for i, line in enumerate(p.read_text().splitlines(), 1) if _SQL.search(line)]
    assert offenders == []


def test_a_resumed_run_of_a_live_process_is_not_read_as_interrupted(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.run("probe", {"x": 1}, resume=True) as first:
            raise RuntimeError("stopped")
    with store.connect() as con:  # started long before this process existed
        con.execute("UPDATE runs SET started_at = started_at - INTERVAL 3 HOUR WHERE run_id = ?", [first.run_id])
    resumed = store.run("probe", {"x": 1}, resume=True)
    assert resumed.run_id == first.run_id
    row = _row(store, first.run_id)
    assert row.status == "running" and not row.interrupted and row.state == "running"
    assert store.interrupted_runs("probe").empty
