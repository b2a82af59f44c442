"""The vectorised token count equals the per-string estimate on any text, sliced or chunked."""

from __future__ import annotations

import random

import pyarrow as pa

from core.ingest.tokens import count_tokens, estimate_tokens

EDGES = ["", " ", "a", " a b ", "hello, world!", "x\n\ny", "ümlaut—dash …", "  lead", "trail  ", "a\x0bb",
         "a\x1cb", "\t\r\n\x0c", "(nested [brackets]) {x}", "e\u0301 😀 中文", None, "ok."]


def test_edges_nulls_and_slices() -> None:
    expected = [estimate_tokens(t or "") for t in EDGES]
    assert list(count_tokens(pa.array(EDGES))) == expected
    assert list(count_tokens(pa.array(EDGES, pa.large_string()))) == expected
    assert list(count_tokens(pa.array(EDGES).slice(3, 9))) == expected[3:12]
    assert list(count_tokens(pa.array([], pa.string()))) == []


def test_random_texts_across_chunks() -> None:
    rng = random.Random(7)
    alphabet = " \t\n\r\x0b\x0c.,!?;:'\"()-_abcXYZ019é中😀\u00a0\u2028"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(20_000)]
    column = pa.chunked_array([pa.array(texts[:7_001]), pa.array(texts[7_001:])])  # chunks of odd sizes
    assert list(count_tokens(column)) == [estimate_tokens(t) for t in texts]
