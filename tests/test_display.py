"""core.display: human headers, missing values as a dash, plurals, the home page's computed kinds."""

from __future__ import annotations

import pandas as pd

from core.display import MISSING, computed_kinds, label, plural, table


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


def test_missing_values_show_as_a_dash_and_values_keep_their_type() -> None:
    frame = pd.DataFrame({"id": [1, 2], "hits": pd.array([3, None], dtype="Int64"), "score": [0.25, float("nan")],
                          "note": ["a", None]})
    styled = table(frame)["data"]
    html = styled.to_html()
    assert html.count(MISSING) == 3 and "None" not in html and "nan" not in html.lower()
    assert styled.data["score"].dtype == float  # numbers still sort as numbers
    plain = pd.DataFrame({"id": [1]})
    assert table(plain)["data"] is plain  # nothing missing: no styling


def test_computed_kinds_in_words() -> None:
    assert computed_kinds("cluster, embed, map, project") == "clusters, embeddings, maps, projection"
    assert computed_kinds("") == ""
