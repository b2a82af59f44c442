"""core.browse.samples and `assay datasets` / `assay show` against real ingested data, checked against pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.browse.samples import (
    Filter,
    column_catalog,
    get_sample,
    matching_ids,
    query_samples,
    top_values,
    value_range,
)
from core.cli.main import main as cli_main
from core.ingest.importer import ingest, ingest_records
from core.store.database import Store

XSS = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Store:
    store = Store(tmp_path_factory.mktemp("browse") / "browse.duckdb", busy_timeout=5)
    ingest(store, shared / "gsm8k" / "train.jsonl", name="gsm8k-train", license="MIT")
    ingest(store, shared / "hate-offensive-crowd" / "labeled_data.csv", name="hate-offensive-crowd", license="MIT",
           shape="mapped", mapping={"text": "tweet"})
    ingest_records(store, [
        {"instruction": f"Say {XSS} and 50% of a_b", "output": f"{IMG} **bold** [x](javascript:alert(1))",
         "category": "odd", "score": 1.5},
        {"instruction": "plain question", "output": "plain answer", "category": "plain", "score": None},
    ], name="xss", shape="alpaca", license="MIT")
    return store


@pytest.fixture(scope="module")
def gsm8k(shared: Path) -> pd.DataFrame:
    return pd.read_json(shared / "gsm8k" / "train.jsonl", lines=True)


@pytest.fixture(scope="module")
def hate(shared: Path) -> pd.DataFrame:
    return pd.read_csv(shared / "hate-offensive-crowd" / "labeled_data.csv")


def _contains(series: pd.Series, term: str) -> pd.Series:
    return series.str.lower().str.contains(term.lower(), regex=False)


def test_catalog_has_sample_and_meta_columns(loaded: Store) -> None:
    catalog = {c.name: c for c in column_catalog(loaded, "hate-offensive-crowd")}
    for name in ("id", "source_id", "n_turns", "n_chars", "n_tokens", "text"):
        assert catalog[name].source == "sample"
    for name in ("count", "hate_speech", "offensive_language", "neither", "class"):
        assert catalog[name].source == "meta" and catalog[name].kind == "numeric"  # CSV text "3" is a number
    xss = {c.name: c for c in column_catalog(loaded, "xss")}
    assert xss["category"].kind == "category" and xss["score"].kind == "numeric"


def test_search_counts_match_pandas(loaded: Store, gsm8k: pd.DataFrame, hate: pd.DataFrame) -> None:
    for term in ("apples", "Marbles", "per HOUR"):
        expected = (_contains(gsm8k.question, term) | _contains(gsm8k.answer, term)).sum()
        assert query_samples(loaded, "gsm8k-train", search=term).total == expected, term
    for term in ("%", "_", "lol", "&amp;"):  # LIKE wildcards are matched literally
        assert query_samples(loaded, "hate-offensive-crowd", search=term).total == _contains(hate.tweet, term).sum()


def test_filters_match_pandas(loaded: Store, hate: pd.DataFrame) -> None:
    def total(*filters: Filter, **kw) -> int:
        return query_samples(loaded, "hate-offensive-crowd", filters=filters, **kw).total

    assert total(Filter("class", "in", [0])) == (hate["class"] == 0).sum() == 1430
    assert total(Filter("class", "in", [0, 2])) == hate["class"].isin([0, 2]).sum()
    assert total(Filter("hate_speech", "between", (2, None))) == (hate.hate_speech >= 2).sum()
    assert total(Filter("count", "between", (4, 6))) == hate["count"].between(4, 6).sum()
    assert total(Filter("neither", "gt", 0), Filter("class", "eq", 1)) == ((hate.neither > 0) & (hate["class"] == 1)).sum()
    assert total(Filter("class", "ne", 1)) == (hate["class"] != 1).sum()
    assert total(Filter("text", "contains", "RT @")) == _contains(hate.tweet, "rt @").sum()  # case-insensitive
    both = total(Filter("class", "in", [2]), search="bird")
    assert both == ((hate["class"] == 2) & _contains(hate.tweet, "bird")).sum() > 0
    assert total(Filter("class", "is_null")) == 0


def test_sort_and_paging(loaded: Store, hate: pd.DataFrame) -> None:
    page = query_samples(loaded, "hate-offensive-crowd", sort="hate_speech", descending=True, limit=50)
    expected = hate.hate_speech.sort_values(ascending=False, kind="stable").head(50).tolist()
    assert page.rows["hate_speech"].astype(int).tolist() == expected
    asc = query_samples(loaded, "gsm8k-train", sort="n_chars", limit=100).rows["n_chars"].tolist()
    assert asc == sorted(asc)
    first = query_samples(loaded, "gsm8k-train", sort="n_tokens", descending=True, limit=100).ids
    second = query_samples(loaded, "gsm8k-train", sort="n_tokens", descending=True, offset=50, limit=50)
    assert second.ids == first[50:] and second.first_row == 51 and second.last_row == 100
    assert second.total == 7473 and second.n_pages == 150
    ids = matching_ids(loaded, "hate-offensive-crowd", filters=[Filter("class", "in", [0])])
    assert len(ids) == 1430
    assert query_samples(loaded, "hate-offensive-crowd", ids=ids[:7], limit=50).ids == ids[:7]


def test_rows_carry_preview_and_meta(loaded: Store, gsm8k: pd.DataFrame) -> None:
    rows = query_samples(loaded, "gsm8k-train", limit=3).rows
    assert list(rows.columns[:6]) == ["id", "source_id", "preview", "n_turns", "n_chars", "n_tokens"]
    assert rows.preview[0] == gsm8k.question[0][:200]
    assert query_samples(loaded, "xss", filters=[Filter("category", "in", ["odd"])]).rows["score"].tolist() == [1.5]


def test_get_sample_turns_meta_raw(loaded: Store, gsm8k: pd.DataFrame) -> None:
    sample_id = query_samples(loaded, "gsm8k-train", limit=1).ids[0]
    sample = get_sample(loaded, sample_id)
    assert sample["dataset"] == "gsm8k-train"
    assert [t["role"] for t in sample["messages"]] == ["user", "assistant"]
    assert sample["messages"][0]["content"] == gsm8k.question[0]
    assert sample["raw"] == {"question": gsm8k.question[0], "answer": gsm8k.answer[0]}
    with pytest.raises(KeyError):
        get_sample(loaded, 10**12)


def test_top_values_and_range(loaded: Store, hate: pd.DataFrame) -> None:
    top = top_values(loaded, "hate-offensive-crowd", "class")
    assert dict(zip(top.value, top.n, strict=True)) == {str(k): v for k, v in hate["class"].value_counts().items()}
    assert value_range(loaded, "hate-offensive-crowd", "count") == (hate["count"].min(), hate["count"].max())


def _table_intact(store: Store) -> tuple[int, int]:
    return (store.query_df("SELECT count(*) AS n FROM samples").n[0], store.query_df("SELECT count(*) AS n FROM datasets").n[0])


@pytest.mark.parametrize("attack", [
    "'; DROP TABLE samples; --",
    "%' OR 1=1 --",
    "\\'; DELETE FROM samples; --",
    "x') OR ('1'='1",
])
def test_injection_in_search_and_values(loaded: Store, attack: str) -> None:
    before = _table_intact(loaded)
    assert query_samples(loaded, "gsm8k-train", search=attack).total == 0
    assert query_samples(loaded, "gsm8k-train", filters=[Filter("text", "contains", attack)]).total == 0
    assert query_samples(loaded, "gsm8k-train", filters=[Filter("source_id", "in", [attack, "0"])]).total == 1
    assert query_samples(loaded, "xss", filters=[Filter("category", "eq", attack)]).total == 0
    with pytest.raises(ValueError, match="needs a number"):
        query_samples(loaded, "hate-offensive-crowd", filters=[Filter("class", "between", (attack, None))])
    assert _table_intact(loaded) == before


def test_injection_text_is_found_literally(loaded: Store) -> None:
    attack = "'; DROP TABLE samples; --"
    ingest_records(loaded, [{"text": f"a sample that says {attack} literally"}], name="attack-text", shape="text")
    page = query_samples(loaded, "attack-text", search=attack)
    assert page.total == 1 and attack in get_sample(loaded, page.ids[0])["text"]
    assert query_samples(loaded, "attack-text", search="DROP TABLE samples; --x").total == 0


@pytest.mark.parametrize("column", ["n_chars; DROP TABLE samples", "meta->>'$.x'", "1=1 --", "id)"])
def test_injection_in_column_names(loaded: Store, column: str) -> None:
    before = _table_intact(loaded)
    for kwargs in ({"sort": column}, {"filters": [Filter(column, "eq", 1)]}, {"search": "x", "search_column": column}):
        with pytest.raises(ValueError) as err:
            query_samples(loaded, "gsm8k-train", **kwargs)
        assert repr(column) in str(err.value) and "Valid columns: id, row_idx" in str(err.value)
    with pytest.raises(ValueError, match="Unknown filter operator"):
        query_samples(loaded, "gsm8k-train", filters=[Filter("id", "eq; DROP TABLE samples", 1)])
    assert _table_intact(loaded) == before


def test_script_tags_stay_literal(loaded: Store) -> None:
    page = query_samples(loaded, "xss", search=XSS)
    assert page.total == 1 and XSS in page.rows.preview[0]
    sample = get_sample(loaded, page.ids[0])
    assert XSS in sample["messages"][0]["content"] and IMG in sample["messages"][1]["content"]
    assert query_samples(loaded, "xss", search="50% of a_b").total == 1


# ---- the command line ----------------------------------------------------------------------------


def _cli(store: Store, capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli_main(["--db", str(store.path), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_datasets_and_show(loaded: Store, capsys: pytest.CaptureFixture, gsm8k: pd.DataFrame) -> None:
    code, out, _ = _cli(loaded, capsys, "datasets", "--json")
    assert code == 0
    by_name = {d["name"]: d for d in json.loads(out)}
    assert by_name["gsm8k-train"]["n_samples"] == 7473 and by_name["gsm8k-train"]["license"] == "MIT"
    code, out, _ = _cli(loaded, capsys, "datasets")
    assert code == 0 and "hate-offensive-crowd" in out and "24783" in out

    code, out, _ = _cli(loaded, capsys, "--json", "show", "gsm8k-train", "--limit", "3", "--search", "apples")
    result = json.loads(out)
    expected = (_contains(gsm8k.question, "apples") | _contains(gsm8k.answer, "apples")).sum()
    assert code == 0 and result["total"] == expected and len(result["rows"]) == 3
    code, out, _ = _cli(loaded, capsys, "show", "hate-offensive-crowd", "--filter", "class:in:0", "--sort", "count",
                        "--desc", "--limit", "2")
    assert code == 0 and "rows 1-2 of 1430 matching" in out
    sample_id = result["rows"][0]["id"]
    code, out, _ = _cli(loaded, capsys, "show", "gsm8k-train", "--sample", str(sample_id))
    assert code == 0 and "[user]" in out and "apples" in out.lower()


def test_cli_errors_are_one_line(loaded: Store, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _cli(loaded, capsys, "show", "gsm8k-train", "--sort", "nope; DROP TABLE samples")
    assert code == 2 and "Unknown column 'nope; DROP TABLE samples'" in err
    code, _, err = _cli(loaded, capsys, "show", "no-such-dataset")
    assert code == 2 and "No dataset named 'no-such-dataset'" in err
    code, _, err = _cli(loaded, capsys, "show", "gsm8k-train", "--filter", "justacolumn")
    assert code == 2 and "COL:OP" in err
