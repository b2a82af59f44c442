"""The scale engine on Ray's local mode: same results as the local engine, resumable by shard.

Real data (GSM8K questions), the real bundled embedding model, real offline taggers, one local Ray for
the whole file (2 CPUs, 2 workers)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.ingest.importer import ingest_records
from core.scale import EmbedStep, Job, MinHashStep, TagStep, run_step
from core.scale.engine import init_ray
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
N_SAMPLES = 64


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    init_ray(num_cpus=2, object_store_memory=200 * 1024**2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def base_store(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the first N_SAMPLES GSM8K training questions; tests copy the file."""
    path = tmp_path_factory.mktemp("scale") / "base.duckdb"
    with open(shared / "gsm8k" / "train.jsonl") as f:
        records = [json.loads(line) for line in itertools.islice(f, N_SAMPLES - 6)]
    # Six near-duplicates (one word changed) so that de-duplication has groups to find.
    records += [{**r, "question": r["question"].replace(" ", "  ", 1).replace("a ", "one ", 1)} for r in records[:6]]
    store = Store(path)
    ingest_records(store, records, name="gsm8k-sample", shape="qa", license="MIT")
    return path


def copy_store(base: Path, folder: Path) -> Store:
    return Store(base, busy_timeout=30).copy_to(folder / "store.duckdb")


def outputs(job_dir: str, key: str) -> pd.DataFrame:
    return pd.concat([t.to_pandas() for _, t in Job.load(job_dir).read_outputs()]).sort_values(
        key, kind="stable").reset_index(drop=True)


def test_embedding_ray_equals_local(base_store: Path, tmp_path: Path, ray_cluster: str) -> None:
    from core.maps.embed import load_vectors

    stores = {e: copy_store(base_store, tmp_path / e) for e in ("local", "ray")}
    reports = {e: run_step(EmbedStep(), s, "gsm8k-sample", engine=e, rows_per_shard=22, batch_size=11,
                           job_dir=tmp_path / e / "job") for e, s in stores.items()}
    assert reports["ray"].n_shards == 3 and reports["ray"].shards_computed == 3
    local, ray_out = outputs(reports["local"].job_dir, "content_hash"), outputs(reports["ray"].job_dir, "content_hash")
    assert list(local.content_hash) == list(ray_out.content_hash)
    np.testing.assert_allclose(np.stack(local.vector), np.stack(ray_out.vector), atol=1e-5)
    # Imported into the store as ordinary embedding runs: the map pages read them with load_vectors.
    (ids_a, va), (ids_b, vb) = (load_vectors(s, reports[e].run_id) for e, s in stores.items())
    assert len(ids_a) == N_SAMPLES and list(ids_a) == list(ids_b) and va.shape == (N_SAMPLES, 384)
    np.testing.assert_allclose(va, vb, atol=1e-5)
    runs = stores["ray"].query_df("SELECT status, params FROM runs WHERE run_id = ?", [reports["ray"].run_id])
    assert runs.status[0] == "finished" and json.loads(runs.params[0])["engine"] == "ray"


def test_tagging_ray_equals_local(base_store: Path, tmp_path: Path, ray_cluster: str) -> None:
    from core.tags.results import run_tags

    stores = {e: copy_store(base_store, tmp_path / e) for e in ("local", "ray")}
    step = TagStep(groups=["language", "turns", "lengths", "category"], language_mode="low")
    reports = {e: run_step(step, s, "gsm8k-sample", engine=e, rows_per_shard=32, job_dir=tmp_path / e / "job")
               for e, s in stores.items()}
    tags = {e: run_tags(stores[e], reports[e].run_id).drop(columns=["run_id"]) for e in stores}
    assert len(tags["local"]) == N_SAMPLES * 6  # language, turns, n_chars, n_tokens, category, other_categories
    pd.testing.assert_frame_equal(tags["local"].drop(columns="score"), tags["ray"].drop(columns="score"))
    np.testing.assert_allclose(tags["local"].score.astype(float), tags["ray"].score.astype(float), atol=1e-4)
    cats = tags["ray"][tags["ray"].tag == "category"]
    assert (cats.value == "Math").mean() > 0.8  # GSM8K questions are maths


def test_interrupted_ray_run_resumes_without_redoing_shards(base_store: Path, tmp_path: Path,
                                                             ray_cluster: str) -> None:
    store = copy_store(base_store, tmp_path / "kill")
    job_dir = tmp_path / "kill" / "job"
    script = ("import sys; from core.store.database import Store; from core.scale import EmbedStep, run_step; "
              "run_step(EmbedStep(), Store(sys.argv[1]), 'gsm8k-sample', engine='ray', ray_address=sys.argv[2], "
              "rows_per_shard=4, batch_size=4, job_dir=sys.argv[3])")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    driver = subprocess.Popen([sys.executable, "-c", script, str(store.path), ray_cluster, str(job_dir)],
                              cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    out = job_dir / "output"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if out.exists() and len(list(out.glob("shard-*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    assert driver.poll() is None, f"the driver ended before it could be interrupted: {driver.stderr.read()[-2000:]!r}"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver we started, and nothing else
    driver.wait()
    time.sleep(3)  # Ray tears down the dead driver's actors
    job = Job.load(job_dir)
    done_before = {n for n in job.names() if job.is_computed(n)}
    assert 2 <= len(done_before) < len(job.names()) == 16
    assert store.query_df("SELECT status FROM runs WHERE run_id = ?", [job.run_id]).status[0] == "running"

    report = run_step(EmbedStep(), store, "gsm8k-sample", engine="ray", rows_per_shard=4, batch_size=4,
                      job_dir=job_dir)
    resumed = {c["shard"] for c in Job.load(job_dir).computations() if c["attempt"] == report.attempt}
    assert report.run_id == job.run_id
    assert not resumed & done_before  # nothing finished before the kill was computed again
    assert report.shards_skipped >= len(done_before)
    assert len(resumed) == report.shards_computed == 16 - report.shards_skipped
    from core.maps.embed import load_vectors

    ids, vectors = load_vectors(store, report.run_id)
    assert len(ids) == N_SAMPLES and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert store.query_df("SELECT status FROM runs WHERE run_id = ?", [job.run_id]).status[0] == "finished"


def test_minhash_on_ray_matches_core_dedup(base_store: Path, tmp_path: Path, ray_cluster: str) -> None:
    import core.dedup.groups as dedup

    store = copy_store(base_store, tmp_path / "dd")
    report = run_step(MinHashStep(threshold=0.5), store, "gsm8k-sample", engine="ray", rows_per_shard=40,
                      job_dir=tmp_path / "dd" / "job")
    direct = dedup.find_duplicates(store, ["gsm8k-sample"], method="near", threshold=0.5)
    groups = {r: dedup.duplicate_groups(store, r)[["group_id", "sample_id", "is_representative"]]
              .reset_index(drop=True) for r in (report.run_id, direct.run_id)}
    pd.testing.assert_frame_equal(groups[report.run_id], groups[direct.run_id])
    assert report.result["n_groups"] == direct.n_groups >= 6


def test_user_parquet_source_local(tmp_path: Path, store: Store) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "mine"
    src.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": ["a cat sat on the mat", "a cat sat on the mat"]}), src / "a.parquet")
    pq.write_table(pa.table({"id": [3], "text": ["something else entirely"]}), src / "b.parquet")
    report = run_step(MinHashStep(), store, source=src, job_dir=tmp_path / "job")
    assert report.n_shards == 2 and report.n_rows == 3
    sigs = outputs(report.job_dir, "id")
    assert list(sigs.id) == [1, 2, 3] and list(sigs.signature[0]) == list(sigs.signature[1])
    assert store.query_df("SELECT kind, status FROM runs").to_dict("records") == [
        {"kind": "scale-dedup", "status": "finished"}]
    with pytest.raises(ValueError, match="lacks the column"):
        run_step(EmbedStep(), store, source=tmp_path / "job" / "output", job_dir=tmp_path / "job2")


def _tiny_reward_model(folder: Path) -> str:
    """A randomly initialised BERT sequence classifier with a word-level tokenizer: a real model to load."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["how many eggs does she sell per day the answer is 18 user assistant"],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[CLS]", "[SEP]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=2048, num_labels=1,
                        pad_token_id=fast.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def test_reward_scoring_ray_equals_local(base_store: Path, tmp_path: Path, ray_cluster: str) -> None:
    from core.scale import RewardStep
    from core.tags.results import run_tags

    model = _tiny_reward_model(tmp_path / "rm")
    stores = {e: copy_store(base_store, tmp_path / e) for e in ("local", "ray")}
    reports = {e: run_step(RewardStep(models=[model]), s, "gsm8k-sample", engine=e, rows_per_shard=32,
                           job_dir=tmp_path / e / "job") for e, s in stores.items()}
    scores = {e: run_tags(stores[e], reports[e].run_id) for e in stores}
    assert len(scores["ray"]) == N_SAMPLES and set(scores["ray"].tag) == {"response_quality"}
    assert scores["ray"].status.eq("ok").all()
    np.testing.assert_allclose(scores["local"].score, scores["ray"].score, atol=1e-5)


def test_assay_tag_engine_ray_matches_assay_tag(base_store: Path, tmp_path: Path, ray_cluster: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`assay tag --engine ray` (the command users run) gives the same offline tags as plain `assay tag`."""
    from core.cli.main import main as cli_main
    from core.tags.results import run_tags

    stores = {e: copy_store(base_store, tmp_path / e) for e in ("local", "ray")}
    common = ["tag", "--dataset", "gsm8k-sample", "--tags", "turns,lengths", "--json"]
    assert cli_main(["--db", str(stores["local"].path), *common]) == 0
    local = json.loads(capsys.readouterr().out)
    assert cli_main(["--db", str(stores["ray"].path), *common, "--engine", "ray", "--ray-address", ray_cluster,
                     "--job-dir", str(tmp_path / "job")]) == 0
    ray_report = json.loads(capsys.readouterr().out)
    assert ray_report["engine"] == "ray" and ray_report["n_rows"] == N_SAMPLES
    frames = {e: run_tags(stores[e], r["run_id"])[["sample_id", "tag", "value"]].sort_values(["sample_id", "tag"])
              .reset_index(drop=True) for e, r in (("local", local), ("ray", ray_report))}
    pd.testing.assert_frame_equal(frames["local"], frames["ray"])
    assert cli_main(["--db", str(stores["ray"].path), *common, "--engine", "ray", "--backend", "openai"]) == 2
    assert "--engine ray runs the offline backend" in json.loads(capsys.readouterr().out)["message"]
