"""core.browse.display: human headers, missing values as a dash, plurals, the home page's computed kinds."""

from __future__ import annotations

import pandas as pd

from core.browse.display import MISSING, computed_kinds, label, plural, table


def test_plural() -> None:
    assert plural(1, "sample") == "1 sample"
    assert plural(0, "sample") == "0 samples"
    assert plural(1234, "sample") == "1,234 samples"
    assert plural(2, "query", "queries") == "2 queries"


def test_labels_and_config() -> None:
    assert label("n_tokens") == "tokens" and label("ngram8_train_frac") == "sample's 8-grams in eval set"
    assert label("some_meta_field") == "some meta field"
    frame = pd.DataFrame({"row_idx": [1], "mink_score": [0.5]})
    assert table(frame, {"row_idx": "row"})["column_config"] == {"row_idx": "row", "mink_score": "Min-K% Prob"}


def test_missing_values_show_as_a_dash() -> None:
    frame = pd.DataFrame({"id": [1, 2], "hits": pd.array([3, None], dtype="Int64"), "score": [0.25, float("nan")],
                          "note": ["a", None], "flag": pd.array([True, None], dtype="boolean")})
    shown = table(frame)["data"]
    assert shown["hits"].tolist() == ["3", MISSING] and shown["score"].tolist() == ["0.25", MISSING]
    assert shown["note"].tolist() == ["a", MISSING] and shown["flag"].tolist() == ["yes", MISSING]
    assert shown["id"].dtype == frame["id"].dtype  # columns without gaps keep their type
    assert frame["score"].isna().sum() == 1  # the caller's frame is left as it was
    when = pd.DataFrame({"finished": [pd.Timestamp("2026-01-02 03:04:05.6789"), pd.NaT]})
    assert table(when)["data"]["finished"].tolist() == ["2026-01-02 03:04:05", MISSING]
    plain = pd.DataFrame({"id": [1]})
    assert table(plain)["data"] is plain


def test_computed_kinds_in_words() -> None:
    assert computed_kinds("cluster, embed, map, project") == "clusters, embeddings, maps, projection"
    assert computed_kinds("") == ""
