"""Runs of dead processes read as interrupted, and a killed export's partial folder is cleaned."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.ingest.importer import ingest_records
from core.mixture.export import export_mixture
from core.mixture.recipe import load_recipe
from core.store.database import Store, now_utc, run_interrupted

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "name: killed\nsources: [{dataset: gsm8k-slice, count: 150}]\n"

# A real export in its own process; its progress hook holds it inside the write phase (the staging
# folder half written) until the parent kills it.
_CHILD = """
import sys, time
from core.mixture.export import export_mixture
from core.mixture.recipe import load_recipe
from core.store.database import Store

def progress(stage, fraction):
    print(stage, flush=True)
    if stage.startswith("writing"):
        time.sleep(600)

export_mixture(Store(sys.argv[1]), load_recipe(sys.argv[2]), sys.argv[3], progress=progress)
"""


@pytest.fixture
def loaded(tmp_path: Path, shared: Path) -> Store:
    with (shared / "gsm8k" / "train.jsonl").open() as fh:
        records = [json.loads(line) for _, line in zip(range(300), fh, strict=False)]
    store = Store(tmp_path / "runs.duckdb", busy_timeout=30)
    ingest_records(store, records, name="gsm8k-slice", shape="qa")
    return store


def _kill_export_midway(store: Store, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(store.path), RECIPE, str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in child.stdout:  # type: ignore[union-attr]
        seen.append(line.strip())
        if line.startswith("writing"):
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, (seen, child.stderr.read())  # type: ignore[union-attr]


def test_killed_export_reads_interrupted_and_its_debris_is_removed(loaded: Store, tmp_path: Path,
                                                                  monkeypatch) -> None:
    out = tmp_path / "exports" / "mix"
    _kill_export_midway(loaded, out)
    runs = loaded.runs()
    run = runs[runs.kind == "mix-export"].iloc[0]
    assert run.status == "running"  # what the dead process left in the table ...
    assert run.interrupted and run.state == "interrupted"  # ... and what a person reads
    staging = out.parent / f".mix.partial-run{int(run.run_id)}"
    assert staging.is_dir() and any(p.is_file() for p in staging.rglob("*"))  # the debris of the kill
    assert not out.exists()

    # the home page's runs table says so
    monkeypatch.setenv("ASSAY_DB", str(loaded.path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "note" in d.value.columns)
    shown = table.set_index("run_id").loc[int(run.run_id)]
    assert shown.status == "interrupted" and "run it again" in shown.note

    # the next export cleans it, and succeeds
    result = export_mixture(loaded, load_recipe(RECIPE), tmp_path / "exports" / "again")
    assert not staging.exists()
    assert (result.out_dir / "manifest.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no hidden leftovers at all
    after = loaded.runs().set_index("run_id")
    assert after.loc[int(run.run_id)].state == "interrupted" and after.loc[result.run_id].state == "finished"


def test_a_live_run_is_not_interrupted_and_the_rules_for_other_cases() -> None:
    here, now = socket.gethostname(), now_utc()
    assert not run_interrupted("running", os.getpid(), here, now - timedelta(seconds=1))  # this very process
    assert not run_interrupted("finished", 2 ** 22 + 12345, here, now)  # only 'running' runs can be
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert run_interrupted("running", dead.pid, here, now)
    # our pid, but a run that started long before this process did: the pid was recycled
    started = now - timedelta(seconds=time.time() - _process_start() + 3600)
    assert run_interrupted("running", os.getpid(), here, started)
    # another machine's run cannot be checked: interrupted once it has been running for days
    assert not run_interrupted("running", 1, "elsewhere.example", now - timedelta(hours=3))
    assert run_interrupted("running", 1, "elsewhere.example", now - timedelta(days=3))


def _process_start() -> float:
    import psutil

    return psutil.Process(os.getpid()).create_time()
