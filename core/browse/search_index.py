"""A full-text index beside the store, so that a search of a large dataset does not scan every sample.

The browse search is a case-insensitive substring of a sample's flat text (RE2 `(?i)` over DuckDB). This
module answers the same question from a tantivy index, with the same answer:

- Each dataset of at least MIN_SAMPLES samples gets its own index, built when it is loaded, in
  `<store file>.search/d<dataset id>-<loaded_at>/`. A dataset never changes after its load, so an index is
  written once, into a temporary folder, and renamed into place whole: readers never see half an index, two
  processes never write the same index (each builds its own folder; the first rename wins), and tantivy's
  writer lock is never contended. Dropping a dataset deletes its folders.
- An index is used only when its folder name (dataset id and load time), its format version and its
  document count agree with the store. Anything else (an older store, a deleted folder, a build killed
  midway, a dataset dropped and loaded again) is "no index": the search scans as before and, in a long-lived
  process (the workbench), the index is rebuilt in the background.
- Tokens are maximal runs of alphanumeric characters (Unicode), lowercased. A query made only of such
  characters ("marbles", "苹果") matches exactly the samples holding a token that contains it, and the
  index's vocabulary (kept beside it as text) is searched for those tokens: the answer is the scan's, with
  no text read. A query with spaces or punctuation ("two apples", "$5.00") needs its inner words whole and
  its outer words as suffix/prefix; the index gives the candidates and the exact substring is then checked
  on their texts only. A query with no letters or digits ("?!"), over MAX_QUERY_CHARS, or holding a letter
  that RE2 folds differently from lowercasing (long s, Greek final sigma, ...) while the dataset holds its
  partner letter, is answered by the scan.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tantivy

from core.store.database import Store, pid_alive

log = logging.getLogger(__name__)

SEARCH_HELP = (
    "Finds samples whose text contains what you type, ignoring case, character for character: `apple` also "
    "finds *pineapples*, and quotes, colons and stars are plain characters. Large datasets answer from a "
    "word index (words: runs of letters and digits, in any script); a term with spaces or punctuation is "
    "found through its words and then checked letter for letter, so the results are the same as reading "
    "every sample. Terms with no letters or digits, and searches in another column, read every sample."
)

INDEX_VERSION = 1
# Below this many samples the scan takes a few ms (1M samples: about 0.5 s), so no index is built.
MIN_SAMPLES = int(os.environ.get("ASSAY_SEARCH_INDEX_MIN_SAMPLES", "20000"))
MAX_QUERY_CHARS = 256
# Whether a search that finds no current index starts building one in a daemon thread: yes in the
# workbench (a long-lived process); the command line turns it off (its process ends before the build).
BACKGROUND_REBUILD = os.environ.get("ASSAY_SEARCH_INDEX_BACKGROUND", "1") != "0"
MARKER = "assay-index.json"
TERMS = "terms.txt"
_MAX_TOKEN_BYTES = 65_530  # tantivy leaves out longer tokens: samples holding one are always checked
_TOKENIZER = "assay_words"

# Letters that RE2's case-insensitive match treats as equal although their lowercase forms differ (or, for
# İ, lowercasing gives two characters): with the partner in the dataset, the token index could miss or add a
# match, so such a query is scanned. Found by testing every Unicode case pair with DuckDB's regexp_matches.
_ODD: dict[str, str] = json.loads(
    r'{"I": "\u0130", "S": "\u017f", "i": "\u0130", "s": "\u017f", "\u00b5": "\u039c\u03bc", "\u0130": '
    r'"Ii\u0307", "\u017f": "Ss", "\u0307": "\u0130", "\u0345": "\u0399\u03b9\u1fbe", "\u0392": "\u03d0", '
    r'"\u0395": "\u03f5", "\u0398": "\u03d1", "\u0399": "\u0345\u1fbe", "\u039a": "\u03f0", "\u039c": '
    r'"\u00b5", "\u03a0": "\u03d6", "\u03a1": "\u03f1", "\u03a3": "\u03c2", "\u03a6": "\u03d5", "\u03b2": '
    r'"\u03d0", "\u03b5": "\u03f5", "\u03b8": "\u03d1", "\u03b9": "\u0345\u1fbe", "\u03ba": "\u03f0", '
    r'"\u03bc": "\u00b5", "\u03c0": "\u03d6", "\u03c1": "\u03f1", "\u03c2": "\u03a3\u03c3", "\u03c3": '
    r'"\u03c2", "\u03c6": "\u03d5", "\u03d0": "\u0392\u03b2", "\u03d1": "\u0398\u03b8\u03f4", "\u03d5": '
    r'"\u03a6\u03c6", "\u03d6": "\u03a0\u03c0", "\u03f0": "\u039a\u03ba", "\u03f1": "\u03a1\u03c1", '
    r'"\u03f4": "\u03d1", "\u03f5": "\u0395\u03b5", "\u0412": "\u1c80", "\u0414": "\u1c81", "\u041e": '
    r'"\u1c82", "\u0421": "\u1c83", "\u0422": "\u1c84\u1c85", "\u042a": "\u1c86", "\u0432": "\u1c80", '
    r'"\u0434": "\u1c81", "\u043e": "\u1c82", "\u0441": "\u1c83", "\u0442": "\u1c84\u1c85", "\u044a": '
    r'"\u1c86", "\u0462": "\u1c87", "\u0463": "\u1c87", "\u1c80": "\u0412\u0432", "\u1c81": '
    r'"\u0414\u0434", "\u1c82": "\u041e\u043e", "\u1c83": "\u0421\u0441", "\u1c84": "\u0422\u0442\u1c85", '
    r'"\u1c85": "\u0422\u0442\u1c84", "\u1c86": "\u042a\u044a", "\u1c87": "\u0462\u0463", "\u1c88": '
    r'"\ua64a\ua64b", "\u1e60": "\u1e9b", "\u1e61": "\u1e9b", "\u1e9b": "\u1e60\u1e61", "\u1fbe": '
    r'"\u0345\u0399\u03b9", "\ua64a": "\u1c88", "\ua64b": "\u1c88"}'
)
_PARTNERS = "".join(sorted(set("".join(_ODD.values()))))


def _analyzer() -> tantivy.TextAnalyzer:
    """Alphanumeric runs, lowercased character by character (tantivy's simple tokenizer + lowercase)."""
    return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase()).build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("id", stored=False, indexed=False, fast=True)
    builder.add_text_field("text", stored=False, tokenizer_name=_TOKENIZER, index_option="basic")
    builder.add_boolean_field("long", stored=False, indexed=True)
    return builder.build()


# ---- where indexes live -----------------------------------------------------------------------------


def index_root(store: Store) -> Path:
    """The folder of a store's indexes: beside the DuckDB file, named after it."""
    return store.path.parent / f"{store.path.name}.search"


def _stamp(loaded_at: Any) -> str:
    if isinstance(loaded_at, datetime):
        return loaded_at.strftime("%Y%m%dT%H%M%S%f")
    return re.sub(r"[^0-9A-Za-z]", "", str(loaded_at))


def index_folder(store: Store, dataset_id: int, loaded_at: Any) -> Path:
    return index_root(store) / f"d{int(dataset_id)}-{_stamp(loaded_at)}"


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sweep(store: Store, keep: set[str] | None = None) -> None:
    """Remove the leftovers of builds whose process died, and (given the folder names that belong to the
    store's datasets) indexes of datasets that are gone."""
    root = index_root(store)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(".tmp-"):
            try:
                pid = int(path.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not pid_alive(pid):
                _remove(path)
        elif keep is not None and path.name.startswith("d") and path.name not in keep:
            _remove(path)


def drop_index(store: Store, dataset_id: int) -> None:
    """Delete every index of a dataset (called after the dataset is dropped)."""
    root = index_root(store)
    if root.is_dir():
        for path in root.glob(f"d{int(dataset_id)}-*"):
            _remove(path)
    with _cache_lock:
        for key in [k for k in _cache if k.startswith(str(root / f"d{int(dataset_id)}-"))]:
            _cache.pop(key, None)


# ---- building ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dataset:
    dataset_id: int
    loaded_at: Any
    n_samples: int


def _dataset(store: Store, dataset: str | int) -> _Dataset:
    column = "name" if isinstance(dataset, str) else "dataset_id"
    with store.connect() as con:
        rows = con.execute(f"SELECT dataset_id, loaded_at, n_samples FROM datasets WHERE {column} = ?",
                           [dataset]).fetchall()
    if not rows:
        from core.errors import NotFoundError

        raise NotFoundError(f"No dataset {dataset!r} in {store.path}")
    return _Dataset(*rows[0])


def build_index(store: Store, dataset: str | int) -> Path:
    """Build the search index of one dataset (by name or id) unless a current one exists; returns its folder.

    The texts are first copied to a Parquet file (holding the store only for that), then indexed without
    the store, into a temporary folder renamed into place when complete."""
    info = _dataset(store, dataset)
    final = index_folder(store, info.dataset_id, info.loaded_at)
    if _current(final, info.n_samples) is not None:
        return final
    root = index_root(store)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        texts = tmp / "texts.parquet"
        with store.connect() as con:
            current = con.execute("SELECT dataset_id, loaded_at FROM datasets").fetchall()
            sweep(store, {index_folder(store, d, t).name for d, t in current})  # dropped datasets' leftovers
            target = str(texts).replace("'", "''")  # COPY takes no parameter for its file
            con.execute(f"COPY (SELECT id, row_idx, text FROM samples WHERE dataset_id = {int(info.dataset_id)} "
                        f"ORDER BY id) TO '{target}' (FORMAT parquet)")
        marker = _write_index(tmp, texts, info)
        texts.unlink()
        (tmp / MARKER).write_text(json.dumps(marker))
        _install(tmp, final, info.n_samples)
    finally:
        _remove(tmp)
    return final


def _write_index(folder: Path, texts: Path, info: _Dataset) -> dict[str, Any]:
    (folder / "index").mkdir()
    index = tantivy.Index(_schema(), path=str(folder / "index"), reuse=False)
    index.register_tokenizer(_TOKENIZER, _analyzer())
    writer = index.writer(heap_size=128_000_000, num_threads=0)
    n_docs, n_long, in_order, last_row = 0, 0, True, -1
    present: set[str] = set()
    for batch in pq.ParquetFile(texts).iter_batches(batch_size=20_000):
        ids = batch.column("id").to_pylist()
        rows = batch.column("row_idx").to_numpy()
        in_order = in_order and bool(np.all(np.diff(rows) > 0)) and (len(rows) == 0 or bool(rows[0] > last_row))
        last_row = int(rows[-1]) if len(rows) else last_row
        text_col = pc.fill_null(batch.column("text"), "")
        present |= _odd_present(text_col, present)
        long_mask = pc.greater(pc.binary_length(text_col), _MAX_TOKEN_BYTES).to_pylist()
        for sample_id, text, is_long in zip(ids, text_col.to_pylist(), long_mask, strict=True):
            doc = tantivy.Document(id=sample_id, text=text)
            if is_long:  # may hold a token tantivy leaves out: always a candidate, always checked
                doc.add_boolean("long", True)
                n_long += 1
            writer.add_document(doc)
        n_docs += len(ids)
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    terms = sorted(term for term, _ in index.searcher().terms_with_prefix("text", ""))
    (folder / TERMS).write_text("\n" + "\n".join(terms) + "\n", encoding="utf-8")
    return {"version": INDEX_VERSION, "dataset_id": info.dataset_id, "loaded_at": _stamp(info.loaded_at),
            "n_docs": n_docs, "n_long": n_long, "id_order": in_order, "odd_present": "".join(sorted(present)),
            "n_terms": len(terms)}


def _odd_present(texts: pa.Array, known: set[str]) -> set[str]:
    """Which partner letters of _ODD occur in these texts (one regex pass for the ones not yet seen)."""
    missing = [c for c in _PARTNERS if c not in known]
    if not missing:
        return set()
    pattern = "[" + "".join(re.escape(c) for c in missing) + "]"
    hits = pc.filter(texts, pc.match_substring_regex(texts, pattern))
    found: set[str] = set()
    for text in hits.to_pylist():
        found |= set(text) & set(missing)
        if len(found) == len(missing):
            break
    return found


def _install(tmp: Path, final: Path, n_samples: int) -> None:
    """Rename the complete index into place. Another process may have got there first (keep its index),
    or a stale one may sit there (an older format, a count that disagrees): move that aside first."""
    if final.exists():
        if _current(final, n_samples) is not None:
            return
        trash = final.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            final.rename(trash)
        except OSError:
            return
        _remove(trash)
    try:
        tmp.rename(final)
    except OSError:  # lost the race to another builder: its index is as good
        pass


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _current(folder: Path, n_samples: int) -> dict[str, Any] | None:
    marker = _read_marker(folder)
    if marker and marker.get("version") == INDEX_VERSION and marker.get("n_docs") == n_samples:
        return marker
    return None


def after_ingest(store: Store, dataset_id: int, n_samples: int) -> None:
    """Index a freshly loaded dataset when it is large enough to need it. A failure here never fails the
    load (the dataset is committed): searches then scan, and the workbench rebuilds the index."""
    if n_samples < MIN_SAMPLES:
        return
    try:
        build_index(store, int(dataset_id))
    except Exception:  # noqa: BLE001 - the load stands; the index is an accelerator
        log.warning("search index for dataset %s not built; searches scan until it is", dataset_id, exc_info=True)


# ---- searching ---------------------------------------------------------------------------------------


@dataclass
class SearchIndex:
    """One dataset's open index, its vocabulary and what its build found."""

    folder: Path
    marker: dict[str, Any]
    index: tantivy.Index
    searcher: tantivy.Searcher
    _vocab: tuple[bytes, np.ndarray, list[str]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def vocabulary(self) -> tuple[bytes, np.ndarray, list[str]]:
        """The index's tokens as one newline-separated UTF-8 blob, the newline offsets, and the list."""
        with self._lock:
            if self._vocab is None:
                blob = (self.folder / TERMS).read_bytes()
                newlines = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 10)
                terms = blob.decode("utf-8").split("\n")[1:-1]
                self._vocab = (blob, newlines, terms)
            return self._vocab

    def matching_terms(self, needle: str, left_open: bool, right_open: bool) -> list[str]:
        """Vocabulary tokens containing `needle` (lowercased already): anywhere when open on both sides,
        as a suffix when open on the left only, as a prefix when open on the right only, else whole."""
        blob, newlines, terms = self.vocabulary()
        body = re.escape(needle.encode("utf-8"))
        before = b"" if left_open else b"\n"
        after = b"" if right_open else b"(?=\n)"
        starts = [m.start() for m in re.finditer(before + body + after, blob)]
        if not starts:
            return []
        lines = np.unique(np.searchsorted(newlines, np.asarray(starts), side="right") - 1)
        return [terms[int(i)] for i in lines if 0 <= i < len(terms)]


_cache: dict[str, SearchIndex] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 8


def open_index(store: Store, dataset_id: int, loaded_at: Any, n_samples: int | None) -> SearchIndex | None:
    """The dataset's index if a current one is in place, else None (the caller scans)."""
    folder = index_folder(store, dataset_id, loaded_at)
    key = str(folder)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and folder.is_dir() and (n_samples is None or cached.marker["n_docs"] == n_samples):
        return cached
    marker = _read_marker(folder)
    if not marker or marker.get("version") != INDEX_VERSION or (n_samples is not None
                                                                  and marker.get("n_docs") != n_samples):
        return None
    try:
        index = tantivy.Index.open(str(folder / "index"))
        index.register_tokenizer(_TOKENIZER, _analyzer())
        opened = SearchIndex(folder, marker, index, index.searcher())
        if opened.searcher.num_docs != marker["n_docs"]:
            return None
    except Exception:  # noqa: BLE001 - a damaged or vanished index: scan instead
        log.warning("search index %s unreadable; scanning", folder, exc_info=True)
        return None
    with _cache_lock:
        while len(_cache) >= _CACHE_MAX:
            _cache.pop(next(iter(_cache)))
        _cache[key] = opened
    return opened


_building: set[tuple[str, int]] = set()
_building_lock = threading.Lock()


def build_in_background(store: Store, dataset_id: int) -> None:
    """Start (once per process and dataset) a daemon thread that builds a missing or stale index."""
    key = (str(store.path.resolve()), int(dataset_id))
    with _building_lock:
        if key in _building:
            return
        _building.add(key)

    def run() -> None:
        try:
            build_index(store, int(dataset_id))
        except Exception:  # noqa: BLE001 - the search keeps scanning
            log.warning("background search index build failed for dataset %s", dataset_id, exc_info=True)
        finally:
            with _building_lock:
                _building.discard(key)

    thread = threading.Thread(target=run, name=f"assay-search-index-{dataset_id}", daemon=True)
    with _building_lock:
        _builders[:] = [t for t in _builders if t.is_alive()] + [thread]
    thread.start()


_builders: list[threading.Thread] = []
EXIT_WAIT_S = float(os.environ.get("ASSAY_EXIT_WAIT_S", "30"))


@atexit.register
def _wait_for_builders() -> None:
    """Let background builds finish (bounded) before the interpreter finalises: a daemon thread ended
    there while inside DuckDB or tantivy native code can abort the process (core/store/jobs.py says how)."""
    deadline = time.monotonic() + EXIT_WAIT_S
    for thread in list(_builders):
        thread.join(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True)
class Plan:
    """How the index answers one search term: its query, and whether the hits are exactly the substring
    matches (else they are candidates whose text must be checked)."""

    index: SearchIndex
    query: tantivy.Query
    exact: bool

    def count(self) -> int:
        return int(self.index.searcher.search(self.query, 1, count=True, order_by_field="id",
                                              order=tantivy.Order.Asc).count)

    def page(self, offset: int, limit: int) -> tuple[int, list[int]]:
        """The total and the ids of one page in sample-id (= dataset row) order."""
        result = self.index.searcher.search(self.query, limit, count=True, order_by_field="id",
                                            order=tantivy.Order.Asc, offset=offset)
        return int(result.count), [int(key) for key, _ in result.hits]

    def ids(self, n: int) -> list[int]:
        """All hits' sample ids in id order (n: their count)."""
        if n <= 0:
            return []
        result = self.index.searcher.search(self.query, n, count=False, order_by_field="id",
                                            order=tantivy.Order.Asc)
        return [int(key) for key, _ in result.hits]

    @property
    def in_row_order(self) -> bool:
        return bool(self.index.marker.get("id_order"))


def _runs(term: str, analyzer: tantivy.TextAnalyzer) -> list[tuple[str, bool, bool]]:
    """The term's alphanumeric runs, lowercased as the index lowercases, each with whether it touches the
    term's start (may continue a longer token to its left) and end (to its right)."""
    word = [bool(analyzer.analyze(c)) for c in term]
    runs, i = [], 0
    while i < len(term):
        if not word[i]:
            i += 1
            continue
        j = i
        while j < len(term) and word[j]:
            j += 1
        tokens = analyzer.analyze(term[i:j])
        if len(tokens) != 1:  # the tokenizer disagrees with its per-character view: let the scan answer
            return []
        runs.append((tokens[0], i == 0, j == len(term)))
        i = j
    return runs


def plan(index: SearchIndex, term: str) -> Plan | None:
    """The index query for a case-insensitive substring search, or None when only the scan can answer."""
    if not term or len(term) > MAX_QUERY_CHARS:
        return None
    present = set(index.marker.get("odd_present", ""))
    if any(set(_ODD.get(c, "")) & present for c in term):
        return None
    runs = _runs(term, _analyzer())
    if not runs:
        return None
    schema = index.index.schema
    musts = []
    for needle, left_open, right_open in runs:
        terms = index.matching_terms(needle, left_open, right_open)
        if not terms:
            musts = [tantivy.Query.empty_query()]
            break
        musts.append(tantivy.Query.term_set_query(schema, "text", terms))
    query = musts[0] if len(musts) == 1 else tantivy.Query.boolean_query([(tantivy.Occur.Must, q) for q in musts])
    n_long = int(index.marker.get("n_long", 0))
    if n_long:
        long_docs = tantivy.Query.term_query(schema, "long", True)
        query = tantivy.Query.boolean_query([(tantivy.Occur.Should, query), (tantivy.Occur.Should, long_docs)])
    exact = len(runs) == 1 and runs[0][1] and runs[0][2] and not n_long
    return Plan(index, query, exact)
