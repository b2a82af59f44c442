"""Background jobs (core/store/jobs.py) and the estimates shown before them (core/maps/estimates.py), with a real
embedding run: cancelling stops it at its next committed chunk, the run is recorded as cancelled with what
it committed kept, and starting it again resumes the same run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import core.store.jobs as jobs
from core.errors import InputError
from core.ingest.importer import ingest_records
from core.maps.embed import embed
from core.maps.estimates import embedding_plan
from core.store.database import Store
from tests.test_embed import read_jsonl

N = 200
ROOT = Path(__file__).resolve().parent.parent


def _wait(job: jobs.Job, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while job.status == "running":
        assert time.monotonic() < deadline, job.describe()
        time.sleep(0.05)


@pytest.fixture()
def gsm8k(store: Store, shared: Path) -> Store:
    ingest_records(store, read_jsonl(shared / "gsm8k" / "test.jsonl", N), name="gsm8k", shape="qa")
    return store


def test_cancel_keeps_what_was_committed_and_the_run_resumes(gsm8k: Store) -> None:
    store = gsm8k
    plan = embedding_plan(store, "gsm8k")
    assert (plan.n_samples, plan.n_cached) == (N, 0) and plan.n_to_compute == plan.n_distinct > 0
    assert "typical on a 2-core CPU" in plan.rate_source or "GPU" in plan.rate_source

    def work(job: jobs.Job):
        def progress(done: int, total: int) -> None:
            job.report(done / max(total, 1), f"embedding {done}/{total}", done, total)
            if done >= 32:
                jobs.cancel_job(job.job_id)  # the user clicks Cancel once the first chunk is in
        return embed(store, "gsm8k", commit_every=32, progress=progress)

    job = jobs.start_job("embed", "Embed gsm8k", work, db=str(store.path))
    _wait(job)
    assert job.status == "cancelled" and "resume" in job.error
    runs = store.runs()
    run = runs[runs.kind == "embed"].iloc[-1]
    assert run.status == "cancelled"
    kept = embedding_plan(store, "gsm8k").n_cached
    assert 32 <= kept < plan.n_distinct  # the committed chunk stays, the rest was not computed

    again = embed(store, "gsm8k")
    assert again.resumed and again.run_id == int(run.run_id)
    assert again.n_computed == plan.n_distinct - kept
    after = embedding_plan(store, "gsm8k")
    assert after.n_to_compute == 0 and "measured here" in after.rate_source
    assert "nothing to compute" in after.describe("m")


def test_a_job_reports_progress_and_a_user_error_as_a_sentence(tmp_path: Path) -> None:
    def fine(job: jobs.Job) -> int:
        for i in range(5):
            job.report(i / 5, "step", i, 5)
        return 42

    def bad(job: jobs.Job) -> None:
        raise InputError("data.jsonl line 3: expected a string")

    def bug(job: jobs.Job) -> None:
        raise RuntimeError("/secret/path/module.py exploded")

    done, refused, broken = (jobs.start_job("x", t, w, db=str(tmp_path)) for t, w in
                             (("fine", fine), ("bad", bad), ("bug", bug)))
    for job in (done, refused, broken):
        _wait(job)
    assert (done.status, done.result, done.fraction) == ("finished", 42, 1.0)
    assert refused.status == "failed" and refused.error == "data.jsonl line 3: expected a string"
    assert broken.status == "failed" and "/secret" not in broken.error and "server log" in broken.error
    assert {j.job_id for j in jobs.jobs(str(tmp_path))} >= {done.job_id, refused.job_id, broken.job_id}
    assert not jobs.cancel_job(done.job_id)  # nothing to cancel once it has finished


def test_eta_comes_from_the_current_stage() -> None:
    job = jobs.Job("j", "k", "t", "db")
    job.report(0.5, "stage one")
    job.stage_started -= 10  # ten seconds into the stage, half way
    assert job.eta_s == pytest.approx(10, abs=0.5)
    job.report(0.1, "stage two")  # a new stage restarts the clock
    assert job.eta_s is None
    assert "stage two" in job.describe() and "10%" in job.describe()


# A process whose job is inside onnxruntime (a tiny self-built model, no torch to import) when the interpreter
# exits: without the exit handler the daemon thread is unwound in native code and glibc aborts the process
# (exit 134, "terminate called ..."; 3 of 3 runs), which failed CI runs after every test had passed.
EXIT_CHILD = """
import time
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from core.store.jobs import start_job
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 512])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 512])
nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}" if i < 7 else "y"]) for i in range(8)]
w = helper.make_tensor("w", TensorProto.FLOAT, [512, 512], np.full(512 * 512, 1e-3, np.float32))
model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 13)])
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
batch = np.ones((4096, 512), np.float32)
def work(job):
    for i in range(10_000):
        job.report(i / 10_000, "computing")
        session.run(None, {"x": batch})
start_job("compute", "compute", work, db="unused")
time.sleep(0.5)
"""


def test_a_running_job_does_not_abort_the_interpreter_exit() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASSAY_EXIT_WAIT_S"}
    done = subprocess.run([sys.executable, "-c", EXIT_CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-2000:]
