"""Embeddings of real shared data with the real bundled model: cache hits, resume after SIGKILL, backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from core.ingest.importer import ingest_records
from core.maps.embed import embed, embedding_runs, get_embedder, load_vectors
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
N_GSM8K = 200
N_ARENA = 120


def read_jsonl(path: Path, n: int) -> list[dict]:
    with path.open() as handle:
        return [json.loads(line) for line in islice(handle, n)]


def load_real(store: Store, shared: Path) -> None:
    """200 GSM8K test questions and 120 Arena-Hard prompts: two real datasets of different kinds."""
    ingest_records(store, read_jsonl(shared / "gsm8k" / "test.jsonl", N_GSM8K), name="gsm8k", shape="qa",
                   license="MIT")
    ingest_records(store, read_jsonl(shared / "arena-hard" / "arena_hard_v0.1_question.jsonl", N_ARENA),
                   name="arena", shape="turns", license="Apache-2.0")


_BUILT: dict[str, Path] = {}


def embedded_store(tmp_root: Path, shared: Path) -> tuple[Store, int]:
    """A store with both datasets embedded once per test session (copied per use: tests may write)."""
    if "base" not in _BUILT:
        base = tmp_root / "embedded.duckdb"
        store = Store(base)
        load_real(store, shared)
        embed(store, ["gsm8k", "arena"])
        _BUILT["base"] = base
    copy = tmp_root / f"copy-{len(_BUILT)}.duckdb"
    _BUILT[str(copy)] = copy
    store = Store(_BUILT["base"]).copy_to(copy)
    return store, int(embedding_runs(store).run_id.iloc[0])


def test_embed_real_data_then_cache_hits(store: Store, shared: Path) -> None:
    load_real(store, shared)
    first = embed(store, "gsm8k", commit_every=64)
    assert (first.n_items, first.n_cached, first.n_computed, first.dims) == (N_GSM8K, 0, N_GSM8K, 384)
    ids, vectors = load_vectors(store, first.run_id)
    assert vectors.shape == (N_GSM8K, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    # Same model and text on unchanged samples: a new run, every vector from the cache.
    again = embed(store, "gsm8k")
    assert again.run_id != first.run_id and (again.n_cached, again.n_computed) == (N_GSM8K, 0)
    assert np.array_equal(load_vectors(store, again.run_id)[1], vectors)
    # Both datasets: only arena's prompts are new.
    both = embed(store, ["gsm8k", "arena"])
    assert (both.n_items, both.n_cached, both.n_computed) == (N_GSM8K + N_ARENA, N_GSM8K, N_ARENA)
    # Another text selection embeds other text: the whole conversation differs from the question.
    some = store.query_df("SELECT id FROM samples ORDER BY id LIMIT 40").id.tolist()
    conv = embed(store, "gsm8k", text="conversation", sample_ids=some)
    assert conv.n_computed == 40
    runs = store.runs()
    assert set(runs[runs.kind == "embed"].status) == {"finished"}


def test_reference_agreement_of_vectors(store: Store, shared: Path) -> None:
    """The stored vectors are what SentenceTransformer.encode gives for the question text: the default
    path on a CPU (ONNX fp32) reproduces torch to ~1e-6, which is why the two share one cache key."""
    load_real(store, shared)
    report = embed(store, "gsm8k", sample_ids=None)
    assert report.computed_with.startswith("onnxruntime fp32") and report.model_key.endswith("|torch|fp32")
    ids, vectors = load_vectors(store, report.run_id)
    questions = [r["question"] for r in read_jsonl(shared / "gsm8k" / "test.jsonl", N_GSM8K)]
    reference = get_embedder(backend="torch")._st.encode(questions, normalize_embeddings=True)  # noqa: SLF001
    assert np.abs(vectors - reference).max() < 1e-6


def test_onnx_int8_backend_agrees_with_torch(store: Store, shared: Path) -> None:
    texts = [r["question"] for r in read_jsonl(shared / "gsm8k" / "test.jsonl", 40)]
    reference = get_embedder(backend="torch").encode(texts)
    from core.maps.embed import OnnxEmbedder

    fast = OnnxEmbedder(int8=True).encode(texts)
    cosine = (fast * reference).sum(axis=1)
    assert cosine.mean() > 0.98, cosine.mean()


_CHILD = """
import sys, time
from core.maps.embed import embed
from core.store.database import Store
def progress(done, total):
    print(f"committed {done}/{total}", flush=True)
    if done > 0:
        time.sleep(0.5)  # give the parent time to kill us between batches
embed(Store(sys.argv[1]), "small", commit_every=30, progress=progress)
print("finished", flush=True)
"""


N_SMALL = 100


def load_small(store: Store, shared: Path) -> None:
    ingest_records(store, read_jsonl(shared / "gsm8k" / "train.jsonl", N_SMALL), name="small", shape="qa")


def test_killed_run_resumes_where_it_stopped(store: Store, shared: Path, tmp_path: Path) -> None:
    load_small(store, shared)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(store.path)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    deadline = time.monotonic() + 240
    for line in child.stdout:  # type: ignore[union-attr]
        seen.append(line.strip())
        if line.startswith("committed 60/"):
            child.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, seen
    killed = store.runs()
    run_id = int(killed[killed.kind == "embed"].run_id.iloc[0])
    assert killed[killed.run_id == run_id].status.iloc[0] == "running"  # it never finished
    committed = int(store.query_df("SELECT count(*) AS n FROM embedding_vectors").n[0])
    assert 60 <= committed < N_SMALL

    resumed = embed(store, "small", commit_every=30)
    assert resumed.resumed and resumed.run_id == run_id
    assert resumed.n_computed == N_SMALL - committed and resumed.n_cached == committed

    fresh = Store(tmp_path / "fresh.duckdb")
    load_small(fresh, shared)
    uninterrupted = embed(fresh, "small")
    ids_a, a = load_vectors(store, run_id)
    ids_b, b = load_vectors(fresh, uninterrupted.run_id)
    assert np.array_equal(ids_a, ids_b)
    assert np.allclose(a, b, atol=1e-5)


def test_bad_arguments(store: Store, shared: Path) -> None:
    load_real(store, shared)
    with pytest.raises(ValueError):
        embed(store, "gsm8k", text="everything")
    with pytest.raises(KeyError):
        embed(store, "no-such-dataset")
    with pytest.raises(ValueError):
        embed(store, "gsm8k", backend="magic")
