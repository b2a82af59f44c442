"""The search index (core/browse/search_index.py): the same answers as the scan, kept up to date, never wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import core.browse.search_index as search_index
from core.browse.samples import Filter, matching_ids, query_samples
from core.cli.main import main as cli_main
from core.ingest.importer import drop_dataset, ingest, ingest_records
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent

# Words, parts of words, phrases, punctuation, digits, query-syntax characters, case, edges and absences.
QUERIES = [
    "apples", "APPLES", "arble", "pple", "Natalia", "two apples", "how many", " of ", "$5", "$", "50%", "12",
    "3.5", "10:00", '"', "'s", ":", "*", "a:b*", "text:apples", '"apples"', "(", "\\", "apples AND oranges",
    "apples OR", "+-", "?", "total of", "per hour.", "zzzqqq", "ing ", " the", "x", "é",
]
MULTILINGUAL = [
    {"text": "我喜欢吃苹果，每天三个苹果。"}, {"text": "東京タワーは高い"}, {"text": "Ἀθῆναι καὶ ΣΟΦΙΑ σοφός"},
    {"text": "İstanbul ve Ankara"}, {"text": "Waſſer und Meer"}, {"text": "naïve café Zürich"},
    {"text": "emoji 🍎 apples 🍏"}, {"text": "Москва и Санкт-Петербург"}, {"text": "मैं सेब खाता हूँ"},
    {"text": "a" * 70_000 + "needle" + "b" * 10},  # a token longer than tantivy keeps
    {"text": "the quick brown fox"}, {"text": 'say "a:b*" (now)'},
]
UNICODE_QUERIES = ["苹果", "三个苹", "東京", "タワー", "σοφ", "ΣΟΦ", "σ", "ς", "Ἀθῆ", "i", "istanbul", "İstanbul",
                   "s", "wasser", "ſ", "café", "naïve", "ZÜRICH", "🍎", "москва", "САНКТ-", "सेब", "needle",
                   "aneedleb", "quick brown", '"a:b*"', "a:b*", "(now)", ""]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Store:
    store = Store(tmp_path_factory.mktemp("search") / "search.duckdb", busy_timeout=10)
    ingest(store, shared / "gsm8k" / "train.jsonl", name="gsm8k-train", license="MIT")
    ingest_records(store, MULTILINGUAL, name="multilingual", shape="text", license="MIT")
    for name in ("gsm8k-train", "multilingual"):  # below MIN_SAMPLES: not indexed at ingest
        search_index.build_index(store, name)
    return store


def _scanned(monkeypatch: pytest.MonkeyPatch, fn, *args, **kw):
    """The same call answered by the scan (no index found)."""
    with monkeypatch.context() as m:
        m.setattr(search_index, "open_index", lambda *a, **k: None)
        m.setattr(search_index, "BACKGROUND_REBUILD", False)
        return fn(*args, **kw)


def _plan(store: Store, name: str, term: str) -> search_index.Plan | None:
    info = store.dataset(name)
    index = search_index.open_index(store, info.dataset_id, info.loaded_at, info.n_samples)
    assert index is not None
    return search_index.plan(index, term)


def _same(store: Store, monkeypatch: pytest.MonkeyPatch, name: str, term: str, **kw) -> int:
    page = query_samples(store, name, search=term, limit=25, **kw)
    scan = _scanned(monkeypatch, query_samples, store, name, search=term, limit=25, **kw)
    assert (page.total, page.ids) == (scan.total, scan.ids), term
    ids = matching_ids(store, name, search=term, filters=kw.get("filters", ()))
    assert ids == _scanned(monkeypatch, matching_ids, store, name, search=term, filters=kw.get("filters", ())), term
    return page.total


def test_index_answers_like_the_scan_on_real_data(loaded: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for term in QUERIES:
        _same(loaded, monkeypatch, "gsm8k-train", term)
    # with filters, a sort, a page further on and a selection, where the index hands its ids to SQL
    for term in ("apples", "two apples", "$5", "arble"):
        _same(loaded, monkeypatch, "gsm8k-train", term, filters=[Filter("n_chars", "between", (200, 900))],
              sort="n_tokens", descending=True, offset=5)
    selection = matching_ids(loaded, "gsm8k-train", search="marbles")[::2]
    page = query_samples(loaded, "gsm8k-train", search="marbles", ids=selection, limit=500)
    assert page.ids == selection
    # the index was really used: a word exactly, a phrase as candidates checked, no letters by the scan
    assert _plan(loaded, "gsm8k-train", "apples").exact
    assert not _plan(loaded, "gsm8k-train", "two apples").exact
    assert _plan(loaded, "gsm8k-train", "?") is None


def test_unicode_cjk_and_syntax_characters(loaded: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    totals = {term: _same(loaded, monkeypatch, "multilingual", term) for term in UNICODE_QUERIES}
    assert totals["苹果"] == totals["三个苹"] == totals["東京"] == totals["needle"] == 1
    assert totals["a:b*"] == totals['"a:b*"'] == 1 and totals[""] == len(MULTILINGUAL)
    assert totals["s"] == totals["ſ"] >= 3  # RE2 folds the long s with s: the scan answers both
    assert _plan(loaded, "multilingual", "ſ") is None and _plan(loaded, "multilingual", "s") is None
    # every term is checked on the text here: one sample is too long for the index's tokens
    assert _plan(loaded, "multilingual", "苹果") is not None and not _plan(loaded, "multilingual", "苹果").exact


def test_ingest_and_drop_keep_the_index(store: Store, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_index, "MIN_SAMPLES", 0)
    ingest(store, shared / "gsm8k" / "test.jsonl", name="columnar")  # columnar path
    ingest_records(store, [{"text": "red apples"}, {"text": "green pears"}], name="records", shape="text")
    root = search_index.index_root(store)
    folders = {p.name for p in root.iterdir()}
    ids = {store.dataset(n).dataset_id: n for n in ("columnar", "records")}
    assert {f.split("-")[0] for f in folders} == {f"d{i}" for i in ids}
    assert _plan(store, "records", "apple").exact
    assert query_samples(store, "records", search="APPLE").total == 1
    drop_dataset(store, "records")
    assert {p.name.split("-")[0] for p in root.iterdir()} == {f"d{store.dataset('columnar').dataset_id}"}
    ingest_records(store, [{"text": "blue apples"}], name="records", shape="text")  # same name, new dataset
    assert query_samples(store, "records", search="apple").ids == matching_ids(store, "records", search="blue")


def test_missing_stale_and_damaged_indexes_fall_back(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_index, "BACKGROUND_REBUILD", False)
    ingest_records(store, [{"text": f"sample {i} about apples"} for i in range(50)], name="d", shape="text")
    info = store.dataset("d")
    folder = search_index.build_index(store, "d")

    def answered() -> int:
        return query_samples(store, "d", search="apples").total

    assert answered() == 50
    # stale: the marker disagrees with the store (count), or the folder went; the scan answers
    marker = json.loads((folder / search_index.MARKER).read_text())
    (folder / search_index.MARKER).write_text(json.dumps({**marker, "n_docs": 49}))
    search_index._cache.clear()
    assert search_index.open_index(store, info.dataset_id, info.loaded_at, info.n_samples) is None
    assert answered() == 50
    search_index.build_index(store, "d")  # replaces the stale index
    assert search_index.open_index(store, info.dataset_id, info.loaded_at, info.n_samples) is not None
    search_index._cache.clear()
    for file in (folder / "index").iterdir():  # damaged: segment files gone
        if file.suffix not in (".json", ".lock"):
            file.unlink()
    assert answered() == 50
    # a build killed midway leaves only a temporary folder of a dead process: swept, never read
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = search_index.index_root(store) / f".tmp-{int(dead.stdout)}-x"
    leftover.mkdir()
    orphan = search_index.index_root(store) / "d999-20200101T000000000000"  # a dropped dataset's, left behind
    orphan.mkdir()
    search_index._remove(folder)
    assert answered() == 50
    search_index.build_index(store, "d")
    assert not leftover.exists() and not orphan.exists() and answered() == 50


def test_background_rebuild_after_a_miss(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_index, "MIN_SAMPLES", 0)
    monkeypatch.setattr(search_index, "BACKGROUND_REBUILD", True)
    ingest_records(store, [{"text": "old apples"}, {"text": "pears"}], name="d", shape="text")
    info = store.dataset("d")
    search_index.drop_index(store, info.dataset_id)  # an older store: no index
    assert query_samples(store, "d", search="apples").total == 1  # scanned, and a rebuild started
    for thread in threading.enumerate():
        if thread.name.startswith("assay-search-index-"):
            thread.join(60)
    assert search_index.open_index(store, info.dataset_id, info.loaded_at, info.n_samples) is not None


def test_two_processes_building_at_once(store: Store) -> None:
    ingest_records(store, [{"text": f"row {i} with apples"} for i in range(300)], name="d", shape="text")
    store.release()
    code = ("import sys; from core.store.database import Store; from core.browse.search_index import build_index; "
            "build_index(Store(sys.argv[1], busy_timeout=60), 'd')")
    env = {**os.environ, "ASSAY_IDLE_CLOSE_S": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store.path)], cwd=ROOT, env=env) for _ in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    entries = [p.name for p in search_index.index_root(store).iterdir()]
    assert len(entries) == 1 and entries[0].startswith("d")
    assert query_samples(store, "d", search="apples").total == 300


def test_cli_show_search_uses_the_index(loaded: Store, capsys: pytest.CaptureFixture) -> None:
    for term in ('"a:b*"', "苹果", "apples"):
        code = cli_main(["--db", str(loaded.path), "--json", "show", "multilingual", "--search", term])
        out, _ = capsys.readouterr()
        assert code == 0 and json.loads(out)["total"] == query_samples(loaded, "multilingual", search=term).total
