"""Text normalisation and hashed word n-grams, shared by duplicate and contamination detection.

One definition of "the same words" for the whole project: Unicode NFKC, lower case, and every run of
characters that are not letters, marks or digits (punctuation, symbols, whitespace, controls) treated as
one separator. `normalize()` gives the exact-duplicate key; `tokens()` the words n-grams are built from.
The SQL form (`NORMALIZE_SQL`) does the same inside DuckDB, with NFKC + lower case from a Python UDF
because DuckDB has only NFC.

Contamination checks use GPT-3's own normalisation instead (`gpt3_words`, Brown et al. 2020, appendix C):
lower case, words delimited by whitespace, punctuation removed, so "she's" is one word ("shes") and
"$2.50" one number ("250").

N-grams are hashed to 64 bits (xxh64 per word, then a fixed random linear combination per position and
a 64-bit finaliser), computed for whole batches of documents at once with numpy.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import regex
import xxhash

_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")
_ASCII_WORD = regex.compile(r"[a-z0-9]+")
# RE2 (DuckDB) spelling of the same separator class.
_SEPARATORS_RE2 = r"[^\p{L}\p{M}\p{N}]+"
UDF_NAME = "assay_nfkc_lower"
# GPT-3's "punctuation removed": Unicode punctuation and symbols ($, %, +, ...) deleted inside words.
_PUNCT = regex.compile(r"[\p{P}\p{S}]+")
_ASCII_PUNCT = str.maketrans("", "", string.punctuation)  # the ASCII P and S characters exactly
_NON_SPACE = regex.compile(r"\S+")


def nfkc_lower(text: str) -> str:
    """NFKC then lower case; the ASCII fast path skips the (already trivial) normalisation."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).lower()


def tokens(text: str) -> list[str]:
    """The normalised words of a text."""
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    return _WORD.findall(nfkc_lower(text))


def token_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words with their character offsets in the original text (for highlighting matches).

    The words equal `tokens(text)` except in rare cases where NFKC splits or joins words; both sides of a
    comparison use `tokens`, so offsets only ever locate a match, they never decide one.
    """
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    for match in _WORD.finditer(text):
        for word in _WORD.findall(nfkc_lower(match.group())):
            words.append(word)
            spans.append(match.span())
    return words, spans


def gpt3_words(text: str) -> list[str]:
    """GPT-3's words (Brown et al. 2020, appendix C): lower case, split on whitespace, punctuation removed
    (a word made only of punctuation disappears)."""
    if text.isascii():
        return text.lower().translate(_ASCII_PUNCT).split()
    return [w for w in (_PUNCT.sub("", t) for t in text.lower().split()) if w]


def gpt3_word_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """`gpt3_words(text)` with each word's character range in the original text (for highlighting)."""
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    for match in _NON_SPACE.finditer(text):
        word = _PUNCT.sub("", match.group().lower())
        if word:
            words.append(word)
            spans.append(match.span())
    return words, spans


def normalize(text: str) -> str:
    """The exact-duplicate key: normalised words joined by single spaces."""
    return " ".join(tokens(text))


def _nfkc_lower_arrow(values: pa.Array) -> pa.Array:
    return pa.array([None if v is None else nfkc_lower(v) for v in values.to_pylist()], type=pa.string())


def register_sql(con) -> None:  # noqa: ANN001 - a duckdb connection
    """Make `NORMALIZE_SQL` usable on this connection (DuckDB lacks NFKC; one vectorised Python UDF)."""
    try:
        con.create_function(UDF_NAME, _nfkc_lower_arrow, ["VARCHAR"], "VARCHAR", type="arrow",
                            side_effects=False)
    except Exception as exc:  # already registered on this connection
        if "already exists" not in str(exc):
            raise


def normalize_sql(column: str) -> str:
    """SQL expression equal to `normalize(column)`; `column` must be a trusted identifier or expression."""
    return f"trim(regexp_replace({UDF_NAME}({column}), '{_SEPARATORS_RE2}', ' ', 'g'))"


# ---- hashed n-grams --------------------------------------------------------------------------------

_POSITION_KEYS = np.random.default_rng(20240607).integers(1, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


class _HashCache(dict):
    def __missing__(self, word: str) -> int:
        value = self[word] = xxhash.xxh64_intdigest(word.encode())
        return value


class WordHasher:
    """64-bit word hashes with a cache (vocabularies are small next to corpora); lookups run in C via map()."""

    def __init__(self) -> None:
        self._cache = _HashCache()

    def __call__(self, words: Sequence[str]) -> np.ndarray:
        out = np.fromiter(map(self._cache.__getitem__, words), dtype=np.uint64, count=len(words))
        if len(self._cache) > 2_000_000:  # bound memory on huge vocabularies
            self._cache.clear()
        return out


@dataclass
class NgramBatch:
    """Hashed n-grams of a batch of documents: parallel arrays, one entry per n-gram occurrence."""

    hashes: np.ndarray  # uint64
    doc: np.ndarray  # int64 index into the batch
    start: np.ndarray  # int64 first word of the n-gram within its document
    n_words: np.ndarray  # int64 words per document


def word_hashes(docs: Sequence[Sequence[str]], hasher: WordHasher | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(flat word hashes, words per document) of a batch: hash once, build n-grams of several sizes from it."""
    hasher = hasher or WordHasher()
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    return hasher([w for d in docs for w in d]), lengths


def ngram_batch(docs: Sequence[Sequence[str]] | None, n: int, hasher: WordHasher | None = None,
                short_docs: bool = False, words: tuple[np.ndarray, np.ndarray] | None = None) -> NgramBatch:
    """Hash every word n-gram of every document in one vectorised pass.

    With `short_docs`, a document of 1..n-1 words contributes one n-gram made of all its words (MinHash
    needs at least one shingle); otherwise it contributes none (n-gram overlap ignores short texts).
    """
    if not 1 <= n <= len(_POSITION_KEYS):
        raise ValueError(f"n-gram size must be between 1 and {len(_POSITION_KEYS)}, got {n}")
    flat, lengths = words if words is not None else word_hashes(docs or [], hasher)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = len(flat)
    if total >= n:
        windows = total - n + 1
        acc = np.zeros(windows, dtype=np.uint64)
        for j in range(n):
            acc += flat[j:j + windows] * _POSITION_KEYS[j]
        starts_global = np.arange(windows, dtype=np.int64)
        doc_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)[:windows]
        keep = starts_global + n <= offsets[doc_of + 1]
        hashes, doc, start = _fmix64(acc[keep]), doc_of[keep], starts_global[keep] - offsets[doc_of[keep]]
    else:
        hashes = np.empty(0, np.uint64)
        doc = start = np.empty(0, np.int64)
    if short_docs:
        short = np.flatnonzero((lengths > 0) & (lengths < n))
        if len(short):
            extra = np.empty(len(short), dtype=np.uint64)
            for k, i in enumerate(short):
                words = flat[offsets[i]:offsets[i] + lengths[i]]
                extra[k] = (words * _POSITION_KEYS[: len(words)]).sum(dtype=np.uint64)
            hashes = np.concatenate([hashes, _fmix64(extra)])
            doc = np.concatenate([doc, short])
            start = np.concatenate([start, np.zeros(len(short), np.int64)])
            order = np.argsort(doc, kind="stable")
            hashes, doc, start = hashes[order], doc[order], start[order]
    return NgramBatch(hashes=hashes, doc=doc, start=start, n_words=lengths)


def ngram_hashes(words: Sequence[str], n: int, hasher: WordHasher | None = None) -> np.ndarray:
    """Hashed n-grams of one document, in order."""
    return ngram_batch([words], n, hasher).hashes


def merge_spans(word_starts: Sequence[int], n: int, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character ranges covered by n-grams starting at `word_starts` (merged where they overlap)."""
    out: list[tuple[int, int]] = []
    for first in sorted(set(int(s) for s in word_starts)):
        last = min(first + n, len(spans)) - 1
        if last < first:
            continue
        lo, hi = spans[first][0], spans[last][1]
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
