"""core/tags/results.py: vocabulary checks, the long tags table, current tags, comparing runs; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import core.tags.results as T
import core.tags.vocabulary as vocab
from core.cli.main import main as cli_main
from core.ingest.importer import ingest_records
from core.store.database import Store
from core.tags.taggers.base import row
from core.tags.taggers.job import run_tagging
from core.tags.taggers.reward_models import aggregate

RECORDS = [
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "Write a poem."}, {"role": "assistant", "content": "Roses..."},
                  {"role": "user", "content": "Shorter."}, {"role": "assistant", "content": "Roses."}]},
    {"messages": [{"role": "user", "content": "Bonjour, pouvez-vous m'aider avec mon devoir de chimie ?"}]},
]


@pytest.fixture
def small(store: Store) -> Store:
    ingest_records(store, RECORDS, name="small", shape="openai", license="MIT")
    return store


def _ids(store: Store) -> list[int]:
    return store.query_df("SELECT id FROM samples ORDER BY id")["id"].tolist()


def test_vocabulary_matches_magpie_and_the_labels_module() -> None:
    assert vocab.TASK_CATEGORIES == ["Information seeking", "Reasoning", "Planning", "Editing", "Coding & Debugging",
                                 "Math", "Role playing", "Data analysis", "Creative writing", "Advice seeking",
                                 "Brainstorming", "Others"]
    assert vocab.DIFFICULTY == ["very easy", "easy", "medium", "hard", "very hard"]
    assert vocab.INPUT_QUALITY == ["very poor", "poor", "average", "good", "excellent"]
    assert list(vocab.HAZARDS) == [f"S{i}" for i in range(1, 12)] and vocab.HAZARDS["S9"] == "Hate"
    labels = pytest.importorskip("core.labels.labelling")
    assert labels.MAGPIE_TASK_CATEGORIES == vocab.TASK_CATEGORIES


def test_check_value_never_passes_an_unknown_value_as_real() -> None:
    assert vocab.check_value("category", " math ") == ("Math", "ok", None)
    assert vocab.check_value("category", "Mathematics") == (None, "out_of_vocabulary", "Mathematics")
    assert vocab.check_value("difficulty", 3)[1] == "out_of_vocabulary"
    assert vocab.check_value("difficulty", "")[1] == "parse_error"
    assert vocab.check_value("hazards", ["S1", "s9"]) == ("S1,S9", "ok", None)
    assert vocab.check_value("hazards", ["S12"])[1] == "out_of_vocabulary"
    assert vocab.check_value("other_categories", ["Reasoning"]) == (json.dumps(["Reasoning"]), "ok", None)
    assert vocab.check_value("intent", "The user wants X")[1] == "ok"
    assert vocab.expand_groups("category,safety,lengths") == ["category", "other_categories", "safety", "hazards",
                                                          "n_chars", "n_tokens"]
    with pytest.raises(ValueError, match="unknown tag"):
        vocab.expand_groups("category,vibes")


def test_write_read_current_and_compare(small: Store) -> None:
    a, b, c = _ids(small)
    runs = []
    for values in (["Math", "Creative writing", "Others"], ["Math", "Editing", None]):
        run = small.start_run("tag", params={"x": len(runs)})
        with small.transaction() as con:
            con.execute("INSERT INTO tag_runs VALUES (?, 'offline', ['category'], 'dataset:small', 3, '{}', '{}')", [run])
        rows = [row(sid, "category", value=v, score=0.5, method="test") if v else
                row(sid, "category", status="parse_error", detail="garbage", method="test")
                for sid, v in zip((a, b, c), values, strict=True)]
        rows += [row(sid, "response_quality", score=s, method="test") for sid, s in zip((a, b, c), (1.0, 2.0, 3.0), strict=True)]
        T.write_tags(small, run, T.rows_frame(rows))
        small.finish_run(run)
        runs.append(run)
    cur = T.current_tags(small, "small")
    assert list(cur.index) == [a, b, c]
    assert cur.loc[b, "category"] == "Editing" and cur.loc[b, "category__run"] == runs[1]
    assert cur.loc[c, "category"] is None and cur.loc[c, "category__status"] == "parse_error"
    assert cur.loc[a, "response_quality"] == 1.0
    first = T.current_tags(small, "small", run_ids=[runs[0]])
    assert first.loc[c, "category"] == "Others"
    table = T.compare_runs(small, runs[0], runs[1]).set_index("tag")
    assert table.loc["category", "n_common"] == 3 and table.loc["category", "n_both_ok"] == 2
    assert table.loc["category", "agreement"] == 0.5
    assert table.loc["response_quality", "spearman"] == pytest.approx(1.0)
    conf = T.confusion(small, runs[0], runs[1], "category")
    assert conf.loc["Others", "[parse_error]"] == 1
    assert T.done_ids(small, runs[0]) == {a, b, c}
    assert T.quality_scores(small, [a, b]).to_dict() == {a: 1.0, b: 2.0}


def test_request_errors_are_not_done_and_are_replaced(small: Store) -> None:
    a, b, _ = _ids(small)
    run = small.start_run("tag")
    T.write_tags(small, run, T.rows_frame([row(a, "category", status="request_error", detail="HTTP 500"),
                                           row(b, "category", value="Math")]))
    assert T.done_ids(small, run) == {b}
    T.write_tags(small, run, T.rows_frame([row(a, "category", value="Reasoning")]))
    assert T.run_tags(small, run)["status"].tolist() == ["ok", "ok"]
    with pytest.raises(ValueError):
        T.rows_frame([row(a, "category", status="made_up")])


def test_offline_structure_and_not_computed(small: Store) -> None:
    report = run_tagging(small, dataset="small", tags="difficulty,safety,turns,lengths,language", language_mode="low")
    cur = T.current_tags(small, "small")
    a, b, c = _ids(small)
    assert cur.loc[a, "turns"] == "single" and cur.loc[b, "turns"] == "multi" and cur.loc[b, "turns__score"] == 2
    assert cur.loc[a, "n_chars"] > 0
    assert cur.loc[c, "language"] == "fr"
    for tag in ("difficulty", "intent", "knowledge", "safety", "hazards"):
        assert (cur[f"{tag}__status"] == "not_computed").all() and cur[tag].isna().all()
    rows = T.run_tags(small, report.run_id, ["difficulty"])
    assert rows["detail"].str.contains("offline backend has no model").all()
    assert report.metrics["turns"]["accuracy"] == 1.0 and report.metrics["difficulty"]["method"] == "not computed"
    runs = T.tag_runs(small, "small")
    assert runs.loc[0, "methods"]["language"].startswith("lingua")


def test_cli_tag_and_compare(small: Store, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(small.path)
    assert cli_main(["--db", db, "tag", "--dataset", "small", "--tags", "turns,lengths", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n_tagged"] == 3 and first["status_counts"]["turns"] == {"ok": 3}
    assert cli_main(["--db", db, "tag", "--dataset", "small", "--tags", "turns,lengths,safety"]) == 0
    out = capsys.readouterr().out
    assert "not_computed 3" in out and "safety" in out
    runs = T.tag_runs(small)["run_id"].tolist()
    assert cli_main(["--db", db, "tag-compare", str(runs[1]), str(runs[0]), "--json"]) == 0
    table = {r["tag"]: r for r in json.loads(capsys.readouterr().out)}
    assert table["turns"]["agreement"] == 1.0


def test_ensemble_aggregation_is_conservative() -> None:
    z = np.array([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0]])  # rewards already calibrated per model
    assert np.allclose(aggregate(z, "min"), z.min(1))
    assert np.allclose(aggregate(z, "uwo", lam=2.0), z.mean(1) - 2 * z.var(1))
    assert np.allclose(aggregate(z[:, :1], "min"), z[:, 0])  # one model: its own reward
