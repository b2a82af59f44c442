"""The demo from the Hugging Face hub, where ../shared is absent: the real download function reads a local
folder laid out as the hub's cache (huggingface_hub's layout), built here from small real shared files.
Nothing is downloaded (HF_HUB_OFFLINE=1, set in conftest)."""

from __future__ import annotations

import csv
import gzip
import json
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.ingest.demo import (
    DEMO,
    HUB_SOURCES,
    UNPINNED,
    demo_source,
    fetch_hub_file,
    hub_reachable,
    load_demo_from_hub,
)
from core.store.database import Store

N = 30  # records per file: small, real
FAKE_MAIN = "0123456789abcdef0123456789abcdef01234567"  # the commit `main` points at in this cache


def _jsonl(path: Path, n: int = N) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in islice(f, n)]


def _hub_files(shared: Path) -> dict[str, tuple[str, object]]:
    """name -> (path in the hub repository, content): the hub's formats, filled with real shared records."""
    alpaca = json.loads((shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").read_text())[:N]
    with (shared / "hate-offensive-crowd" / "labeled_data.csv").open(newline="", encoding="utf-8") as f:
        tweets = list(islice(csv.DictReader(f), N))
    hub_tweets = [{"count": int(r["count"]), "hate_speech_count": int(r["hate_speech"]),
                   "offensive_language_count": int(r["offensive_language"]), "neither_count": int(r["neither"]),
                   "class": int(r["class"]), "tweet": r["tweet"]} for r in tweets]
    return {
        "gsm8k-train": ("main/train-00000-of-00001.parquet", _jsonl(shared / "gsm8k" / "train.jsonl")),
        "gsm8k-test": ("main/test-00000-of-00001.parquet", _jsonl(shared / "gsm8k" / "test.jsonl")),
        "mt-bench": ("raw/question.jsonl", _jsonl(shared / "mt-bench" / "mt_bench_question.jsonl")),
        "arena-hard": ("data/arena-hard-v0.1/question.jsonl",
                       _jsonl(shared / "arena-hard" / "arena_hard_v0.1_question.jsonl")),
        # The hub's copy has a formatted "text" column besides the Alpaca fields.
        "alpaca-gpt4-demo-1k": ("data/train-00000-of-00001-abc.parquet",
                                [r | {"text": f"### Instruction:\n{r['instruction']}"} for r in alpaca]),
        "oasst-sample": ("2023-04-12_oasst_ready.trees.jsonl.gz", _jsonl(shared / "oasst-sample" / "en_100_tree.jsonl")),
        "hh-rlhf-harmless-test": ("harmless-base/test.jsonl.gz",
                                  _jsonl(shared / "hh-rlhf-harmless-test" / "harmless-base_test.jsonl")),
        "hate-offensive-crowd": ("data/train-00000-of-00001.parquet", hub_tweets),
    }


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
        return
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")


def hub_cache(root: Path, shared: Path) -> Path:
    """datasets--ORG--NAME/{refs/main, snapshots/COMMIT/FILE}: what huggingface_hub leaves after a download."""
    for name, (inside, records) in _hub_files(shared).items():
        source = HUB_SOURCES[name]
        repo = root / ("datasets--" + source.repo_id.replace("/", "--"))
        commit = FAKE_MAIN if source.revision == UNPINNED else source.revision
        if source.revision == UNPINNED:
            (repo / "refs").mkdir(parents=True, exist_ok=True)
            (repo / "refs" / UNPINNED).write_text(commit)
        _write(repo / "snapshots" / commit / inside, records)
    return root


@pytest.fixture
def cache(tmp_path: Path, shared: Path) -> Path:
    return hub_cache(tmp_path / "hub", shared)


def test_every_demo_dataset_of_the_issue_has_a_hub_source() -> None:
    names = {d.name for d in DEMO}
    assert set(HUB_SOURCES) <= names
    assert {"gsm8k-train", "gsm8k-test", "mt-bench", "arena-hard", "alpaca-gpt4-demo-1k", "oasst-sample",
            "hh-rlhf-harmless-test", "hate-offensive-crowd"} <= set(HUB_SOURCES)
    for source in HUB_SOURCES.values():  # a full commit hash, or the branch that is recorded at download
        assert source.revision == UNPINNED or (len(source.revision) == 40 and int(source.revision, 16) >= 0)


def test_demo_loads_from_a_hub_cache_with_licences_and_progress(cache: Path, store: Store) -> None:
    seen: list[tuple[float, str]] = []
    reports = load_demo_from_hub(store, cache_dir=cache, progress=lambda f, what: seen.append((f, what)))
    assert {r.dataset for r in reports} == set(HUB_SOURCES)
    datasets = store.datasets().set_index("name")
    datasets["description"] = store.query_df("SELECT name, description FROM datasets").set_index("name").description
    licences = {d.name: d.license for d in DEMO}
    for name, source in HUB_SOURCES.items():
        row = datasets.loc[name]
        assert row["license"] == licences[name]
        assert f"hub {source.repo_id}@" in row["description"]  # where it came from, at which commit
    assert datasets.loc["gsm8k-train", "n_samples"] == N and datasets.loc["gsm8k-train", "shape"] == "qa"
    assert f"@{FAKE_MAIN}" in datasets.loc["gsm8k-train", "description"]
    assert f"@{HUB_SOURCES['mt-bench'].revision}" in datasets.loc["mt-bench", "description"]
    assert datasets.loc["alpaca-gpt4-demo-1k", "shape"] == "alpaca"
    assert datasets.loc["hate-offensive-crowd", "n_samples"] == N
    assert datasets.loc["gsm8k-test", "is_eval"] and datasets.loc["alpaca-gpt4-demo-1k", "synthetic"]
    # OpenAssistant: only English trees, one sample per root-to-leaf path.
    assert datasets.loc["oasst-sample", "n_samples"] >= 1
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) == 2 * len(HUB_SOURCES) + 1
    assert any("openai/gsm8k" in what for _, what in seen)
    # The real tweet text came through the hub's parquet.
    tweet = store.query_df("SELECT s.text FROM samples s JOIN datasets d USING (dataset_id) "
                           "WHERE d.name = 'hate-offensive-crowd' ORDER BY s.id LIMIT 1").text[0]
    assert tweet.strip() and "RT" in store.query_df(
        "SELECT string_agg(s.text, ' ') AS t FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE d.name = 'hate-offensive-crowd'").t[0]
    # Not again into a store that has data.
    assert load_demo_from_hub(store, cache_dir=cache) == []


def test_a_missing_file_in_the_cache_is_a_clear_error(tmp_path: Path) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises((LocalEntryNotFoundError, FileNotFoundError)):
        fetch_hub_file(HUB_SOURCES["gsm8k-train"], tmp_path / "empty-cache")


def test_without_folder_or_hub_there_is_no_demo(tmp_path: Path) -> None:
    assert not hub_reachable()  # HF_HUB_OFFLINE=1: never tries the network
    assert demo_source(tmp_path / "no-such-folder") == "none"
    assert demo_source(tmp_path) == "folder"


def test_home_page_says_so_in_one_sentence_and_shows_how_to_load(tmp_path: Path, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ASSAY_DB", str(tmp_path / "empty.duckdb"))
    monkeypatch.setenv("ASSAY_SHARED_DATASETS", str(tmp_path / "no-such-folder"))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    assert not at.exception
    said = [i.value for i in at.info]
    assert any("Hugging Face hub" in s and "cannot be reached" in s for s in said), said
    sentence = next(s for s in said if "Hugging Face hub" in s)
    assert sentence.count(". ") == 0 and sentence.endswith(".")
    assert any("assay" in t.value and "ingest" in t.value for t in at.text)
    assert at.get("file_uploader")  # the upload form is there
