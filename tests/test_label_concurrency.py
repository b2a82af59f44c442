"""Nothing lost: concurrent writers (threads and a second process), a SIGKILLed labelling process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

import core.labels.labelling as L
from core.ingest.importer import ingest_records
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
N_THREADS = 8
PER_WRITER = 500

SCHEMA = {"name": "keep", "fields": [{"name": "decision", "type": "keep_drop"}]}


def _setup(store: Store, n: int = PER_WRITER) -> list[int]:
    ingest_records(store, ({"text": f"sample number {i}"} for i in range(n)), name="tiny", shape="text")
    L.save_schema(store, L.parse_schema(SCHEMA))
    return store.query_df("SELECT id FROM samples ORDER BY row_idx")["id"].tolist()


# The child writes through the same function the page uses and prints an ack after each returned write.
CHILD = textwrap.dedent(
    """
    import sys
    import core.labels.labelling as L
    from core.store.database import Store
    path, annotator, n, delay, bulk = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    store = Store(path, busy_timeout=60)
    schema = L.get_schema(store, "keep")
    ids = store.query_df("SELECT id FROM samples ORDER BY row_idx")["id"].tolist()
    print("ready", flush=True)
    for start in range(0, n if bulk else 0, bulk or 1):  # the bulk view's path: one label on a page of samples
        L.record_bulk(store, schema, ids[start:start + bulk], {"decision": "drop"}, annotator=annotator)
        print(f"ack-bulk {start}", flush=True)
    for i in range(0 if bulk else n):
        sid = ids[i % len(ids)]
        L.record_label(store, schema, sid, {"decision": "keep" if i % 2 else "drop"}, annotator=annotator, origin="cli")
        print(f"ack {sid} {i}", flush=True)
        if delay:
            import time; time.sleep(delay)
    print("done", flush=True)
    """
)


def _child(path: Path, annotator: str, n: int, delay: float = 0.0, bulk: int = 0) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), annotator, str(n), str(delay), str(bulk)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _writer(store: Store, schema: L.LabelSchema, ids: list[int], name: str, errors: list[BaseException],
            returned: list[int]) -> None:
    try:
        for i, sid in enumerate(ids):
            returned += L.record_label(store, schema, sid, {"decision": "keep" if i % 2 else "drop"},
                                       annotator=name, origin="focus", session=name)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


@pytest.fixture
def fast_dir(tmp_path: Path):
    """A folder in RAM where there is one: the test is about lost events under contention, not about
    disk speed, and fsync on this shared disk would make 4,000 commits take a minute."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="assay-labels-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_eight_threads_and_a_second_process_lose_nothing(fast_dir: Path) -> None:
    store = Store(fast_dir / "labels.duckdb", busy_timeout=5)
    ids = _setup(store)
    schema = L.get_schema(store, "keep")
    child = _child(store.path, "other-process", PER_WRITER, bulk=25)  # the bulk path, 20 transactions
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    errors: list[BaseException] = []
    returned: list[int] = []
    threads = [threading.Thread(target=_writer, args=(store, schema, ids, f"annotator-{k}", errors, returned))
               for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, err = child.communicate(timeout=300)
    assert not errors, errors
    assert child.returncode == 0, err
    acks = [line for line in out.splitlines() if line.startswith("ack-bulk")]
    assert len(acks) == PER_WRITER // 25
    stored = set(store.query_df("SELECT event_id FROM label_events")["event_id"])
    lost = sorted(set(returned) - stored)
    assert not lost, f"{len(lost)} acknowledged events are missing: {lost[:10]}"
    counts = store.query_df("SELECT annotator, count(*) AS n, count(DISTINCT sample_id) AS s "
                            "FROM label_events GROUP BY annotator ORDER BY annotator")
    assert len(counts) == N_THREADS + 1
    assert (counts["n"] == PER_WRITER).all() and (counts["s"] == PER_WRITER).all()
    total = store.query_df("SELECT count(*) AS n, count(DISTINCT event_id) AS e FROM label_events")
    assert int(total["n"][0]) == int(total["e"][0]) == (N_THREADS + 1) * PER_WRITER


def test_sigkill_mid_batch_keeps_every_acknowledged_label(tmp_path: Path) -> None:
    store = Store(tmp_path / "killed.duckdb", busy_timeout=30)
    _setup(store, 200)
    child = _child(store.path, "killed", 10_000, delay=0.002)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    acked: list[int] = []
    deadline = time.monotonic() + 60
    while len(acked) < 40 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("ack"):
            acked.append(int(line.split()[2]))
    os.kill(child.pid, signal.SIGKILL)  # in the middle of the batch: more writes were under way
    child.wait(timeout=10)
    # Acks printed after the last one we read were also acknowledged before the kill: count them too.
    rest = child.stdout.read()
    acked += [int(line.split()[2]) for line in rest.splitlines() if line.startswith("ack")]
    assert len(acked) >= 40
    events = Store(store.path, busy_timeout=30).query_df(
        "SELECT sample_id, count(*) AS n FROM label_events WHERE annotator = 'killed' GROUP BY sample_id")
    n_events = int(events["n"].sum())
    assert n_events >= len(acked)  # every acknowledged write is there (at most one more, unacknowledged)
    assert n_events <= len(acked) + 1
