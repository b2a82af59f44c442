"""Label schemas, the event log and its views, queues, agreement (checked by hand), export, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import core.labels.agreement as A
import core.labels.labelling as L
from core.cli.main import main as cli
from core.ingest.importer import ingest
from core.store.database import Store

TASK = {
    "name": "task", "title": "Task category", "guidelines": "Pick the **main** task.",
    "fields": [
        {"name": "category", "vocabulary": "magpie_task_category", "suggest_from": "task_category"},
        {"name": "quality", "type": "rating"},
        {"name": "notes", "type": "free_text"},
    ],
}


@pytest.fixture
def loaded(store: Store, shared: Path) -> tuple[Store, L.LabelSchema, list[int]]:
    ingest(store, shared / "mt-bench" / "mt_bench_question.jsonl", name="mt-bench", license="Apache-2.0")
    schema = L.save_schema(store, L.parse_schema(TASK))
    ids = store.query_df("SELECT id FROM samples ORDER BY row_idx")["id"].tolist()
    return store, schema, ids


def test_schema_parsing_vocabulary_and_versions(store: Store, tmp_path: Path) -> None:
    schema = L.parse_schema(TASK)
    assert list(schema.field("category").options) == L.MAGPIE_TASK_CATEGORIES
    assert schema.primary.name == "category" and schema.field("quality").choices == ["1", "2", "3", "4", "5"]
    assert not schema.field("notes").required
    with pytest.raises(L.LabelError):
        L.parse_schema({"name": "x", "type": "single_choice"})  # no options
    with pytest.raises(L.LabelError):
        L.parse_schema({"name": "x", "type": "rating_scale"})
    one = L.parse_schema({"name": "keep", "type": "keep-drop"})
    assert one.fields[0].name == "label" and one.fields[0].type == "keep_drop"
    assert L.save_schema(store, schema).version == 1
    assert L.save_schema(store, schema).version == 1  # unchanged: no new version
    changed = L.parse_schema({**TASK, "guidelines": "new"})
    assert L.save_schema(store, changed).version == 2
    assert L.get_schema(store, "task").guidelines == "new"
    assert L.canonical_value(schema.field("quality"), "4") == 4
    multi = L.parse_schema({"name": "m", "type": "multi_choice", "options": ["a", "b", "c"]}).fields[0]
    assert L.canonical_value(multi, ["c", "a"]) == ["a", "c"]
    for bad in [(schema.field("quality"), 6), (schema.field("category"), "Cooking"), (multi, ["z"])]:
        with pytest.raises(L.LabelError):
            L.canonical_value(*bad)


def test_events_undo_consensus_and_current_labels(loaded) -> None:
    store, schema, ids = loaded
    a, b, c = ids[:3]
    L.record_label(store, schema, a, {"category": "Math", "quality": 4, "notes": ""}, annotator="ann")
    L.record_label(store, schema, a, {"category": "Math", "quality": 2}, annotator="bob")
    L.record_label(store, schema, b, {"category": "Coding & Debugging", "quality": 5}, annotator="ann")
    L.record_label(store, schema, b, {"category": "Reasoning", "quality": 5}, annotator="bob")
    L.record_label(store, schema, c, {"category": "Planning", "quality": 3}, annotator="ann")
    # ann changes her mind on c, then undoes the change: back to Planning
    L.record_label(store, schema, c, {"category": "Editing", "quality": 3}, annotator="ann")
    undone = L.undo_last(store, schema, annotator="ann")
    assert undone["sample_id"] == c and len(undone["undone"]) == 2
    L.record_skip(store, schema, ids[3], annotator="ann")
    log = L.events(store, "task")
    assert (log["kind"] == "undo").sum() == 2 and (log["kind"] == "skip").sum() == 1
    assert len(log) == 12 + 2 + 1  # nothing deleted: 12 label events (empty notes left out), 2 undos, 1 skip
    current = L.current_labels(store, "task")
    assert current.index.name == "sample_id"
    assert current.loc[a, "category"] == "Math" and current.loc[a, "category__status"] == "unanimous"
    assert current.loc[b, "category"] is None or pd.isna(current.loc[b, "category"])
    assert current.loc[b, "category__status"] == "tie"
    assert current.loc[c, "category"] == "Planning"
    L.adjudicate(store, schema, b, "category", "Reasoning", annotator="lead")
    current = L.current_labels(store, "task")
    assert current.loc[b, "category"] == "Reasoning" and current.loc[b, "category__status"] == "adjudicated"
    mine = L.annotator_labels(store, "task")
    assert set(mine["annotator"]) == {"ann", "bob"}  # adjudication is not an annotator's own label
    assert L.my_current(store, "task", c, "ann") == {"category": "Planning", "quality": 3}


def test_queue_order_overlap_and_progress(loaded) -> None:
    store, schema, ids = loaded
    cand = ids[:10]
    L.record_label(store, schema, cand[5], {"category": "Math", "quality": 3}, annotator="bob")
    L.record_label(store, schema, cand[0], {"category": "Math", "quality": 3}, annotator="carol")
    L.record_skip(store, schema, cand[1], annotator="carol")
    # carol: not her own (0) nor her skip (1); with overlap 2, bob's sample 5 comes first
    queue = L.build_queue(store, "task", cand, annotator="carol", min_annotations=2)
    assert queue[0] == cand[5] and cand[0] not in queue and cand[1] not in queue and len(queue) == 8
    # with one annotation wanted, samples someone already labelled are left out
    assert cand[5] not in L.build_queue(store, "task", cand, annotator="dan", min_annotations=1)
    assert L.progress(store, "task", cand, annotator="carol") == (1, 10)
    assert L.suggestion_for(store, schema, cand[0]) is None  # no tags table yet: no suggestion
    assert L.most_uncertain_first(store, schema, cand) == []


def test_uncertainty_ignores_reward_scores(loaded) -> None:
    """A low reward is a judgement of quality, not an uncertain tag: it does not order the queue."""
    store, _, ids = loaded
    schema = L.save_schema(store, L.parse_schema({"name": "rq", "fields": [
        {"name": "quality", "type": "rating", "suggest_from": "response_quality"},
        {"name": "category", "vocabulary": "magpie_task_category", "suggest_from": "task_category"}]}))
    run = store.start_run("tag")
    with store.transaction() as con:
        con.execute("INSERT INTO tags (run_id, sample_id, tag, value, score, status) VALUES "
                    "(?, ?, 'response_quality', '3', -3.0, 'ok'), (?, ?, 'response_quality', '4', 2.0, 'ok')",
                    [run, ids[0], run, ids[1]])
    assert L.most_uncertain_first(store, schema, ids[:5]) == []
    with store.transaction() as con:
        con.execute("INSERT INTO tags (run_id, sample_id, tag, value, score, status) VALUES "
                    "(?, ?, 'task_category', 'Math', 0.4, 'ok'), (?, ?, 'task_category', 'Math', 0.8, 'ok')",
                    [run, ids[1], run, ids[0]])
    assert L.most_uncertain_first(store, schema, ids[:5]) == [ids[1], ids[0]]


def test_suggestions_from_a_tags_table(loaded) -> None:
    store, schema, ids = loaded
    run = store.start_run("tag")
    with store.transaction() as con:  # rows as core/tags/results.py writes them (migration 0006)
        con.execute("INSERT INTO tags (run_id, sample_id, tag, value, score, status) VALUES "
                    "(?, ?, 'task_category', 'Math', 0.9, 'ok'), (?, ?, 'task_category', 'Coding & Debugging', 0.3, 'ok'), "
                    "(?, ?, 'task_category', NULL, NULL, 'parse_error')", [run, ids[0], run, ids[1], run, ids[2]])
    sugg = L.suggestion_for(store, schema, ids[0])
    assert sugg["category"].value == "Math" and sugg["category"].score == 0.9 and f"run {run}" in sugg["category"].source
    assert L.most_uncertain_first(store, schema, ids[:5]) == [ids[1], ids[0]]
    L.record_label(store, schema, ids[0], {"category": "Math", "quality": 3}, annotator="ann")
    L.record_label(store, schema, ids[1], {"category": "Math", "quality": 3}, annotator="ann")
    category = A.agreement_report(store, "task")[0]
    assert category.machine.iloc[0]["percent_agreement"] == 0.5


def test_cohen_kappa_by_hand() -> None:
    # 50 items, yes/no: both yes 20, A yes B no 5, A no B yes 10, both no 15.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    p_o = 35 / 50
    p_e = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
    assert math.isclose(A.cohen_kappa(a, b), (p_o - p_e) / (1 - p_e))
    assert math.isclose(A.cohen_kappa(a, b), 0.4)


def _alpha_nominal_by_hand(units: list[list[int]]) -> float:
    """Krippendorff's alpha from the coincidence matrix, written out (nominal metric)."""
    from collections import Counter
    o: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, x in enumerate(values):
            for j, y in enumerate(values):
                if i != j:
                    o[(x, y)] += 1 / (m - 1)
    n_c: Counter = Counter()
    for (x, _), v in o.items():
        n_c[x] += v
    n = sum(n_c.values())
    d_o = sum(v for (x, y), v in o.items() if x != y) / n
    d_e = sum(n_c[x] * n_c[y] for x in n_c for y in n_c if x != y) / (n * (n - 1))
    return 1 - d_o / d_e


def test_krippendorff_alpha_by_hand() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, gaps.
    nan = float("nan")
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    import numpy as np
    matrix = np.array(data, dtype=float)
    units = [[int(v) for v in matrix[:, u] if not np.isnan(v)] for u in range(matrix.shape[1])]
    by_hand = _alpha_nominal_by_hand(units)
    assert math.isclose(by_hand, 0.743, abs_tol=5e-4)  # the paper's value
    assert math.isclose(A.krippendorff_alpha(matrix, "nominal"), by_hand, rel_tol=1e-9)
    assert math.isclose(A.krippendorff_alpha(matrix, "ordinal"), 0.815, abs_tol=5e-4)


def test_agreement_report_on_stored_labels(loaded) -> None:
    store, schema, ids = loaded
    a = ["Math", "Math", "Coding & Debugging", "Reasoning", "Math", "Editing"]
    b = ["Math", "Reasoning", "Coding & Debugging", "Reasoning", "Math", "Planning"]
    for sid, x, y in zip(ids, a, b, strict=False):
        L.record_label(store, schema, sid, {"category": x, "quality": 3}, annotator="ann")
        L.record_label(store, schema, sid, {"category": y, "quality": 3}, annotator="bob")
    category, quality = A.agreement_report(store, "task")
    pair = category.pairs.iloc[0]
    assert pair["n_common"] == 6 and math.isclose(pair["percent_agreement"], 4 / 6)
    assert math.isclose(pair["kappa"], A.cohen_kappa(a, b))
    assert sorted(category.disagreements["sample_id"]) == [ids[1], ids[5]]
    assert category.level == "nominal" and quality.level == "ordinal"
    assert store.runs()["kind"].tolist()[-1] == "agreement"


def test_export_and_cli(loaded, tmp_path: Path, capsys) -> None:
    store, schema, ids = loaded
    L.record_label(store, schema, ids[0], {"category": "Math", "quality": 4}, annotator="ann")
    L.record_label(store, schema, ids[0], {"category": "Reasoning", "quality": 4}, annotator="bob")
    yaml_file = tmp_path / "keep.yaml"
    yaml_file.write_text("name: keep\nguidelines: Keep what teaches something.\ntype: keep_drop\n")
    db = ["--db", str(store.path)]
    assert cli([*db, "label-schema", "add", str(yaml_file)]) == 0
    assert cli([*db, "--json", "label-schema", "list"]) == 0
    out = capsys.readouterr().out
    assert {r["name"] for r in json.loads(out[out.index("["):])} == {"task", "keep"}
    jsonl, parquet = tmp_path / "l.jsonl", tmp_path / "l.parquet"
    assert cli([*db, "labels", "export", "--schema", "task", "--format", "jsonl", "--out", str(jsonl)]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 4 and {r["dataset"] for r in rows} == {"mt-bench"}
    assert cli([*db, "labels", "export", "--schema", "task", "--out", str(parquet), "--what", "consensus"]) == 0
    assert len(pd.read_parquet(parquet)) == 2
    capsys.readouterr()
    assert cli([*db, "labels", "agreement", "--schema", "task", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["field"] == "category" and report[0]["n_disagreements"] == 1
    assert cli([*db, "labels", "export", "--schema", "nope", "--out", str(jsonl)]) == 2


def test_alpha_with_three_annotators_and_missing_labels(loaded) -> None:
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
    values 1-5, gaps; nominal alpha = 0.743. Worked by hand from the coincidence matrix:
    pairable values n = 40 (unit 12 has one value), n_c = 9, 13, 10, 5, 3 for values 1..5;
    disagreeing coincidences: unit 2 (2,2,3,2) gives 2 x 3 x 1/3 = 2, unit 6 (1,2,3,4) gives 12 x 1/3 = 4,
    unit 8 (1,1,2,1) gives 2, so D_o = 8/40; D_e = (40^2 - sum n_c^2) / (40 x 39) = 1216/1560;
    alpha = 1 - (8/40) / (1216/1560) = 1 - 312/1216 = 0.743421.
    Stored as category labels with partial overlap (what crashed: TypeError sorting NaN with strings)."""
    import krippendorff
    import numpy as np

    store, schema, ids = loaded
    nan = float("nan")
    data = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        "C": [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    }
    names = {1: "Math", 2: "Reasoning", 3: "Coding & Debugging", 4: "Planning", 5: "Editing"}
    for annotator, row in data.items():
        for sid, v in zip(ids, row, strict=False):
            if not math.isnan(v):
                L.record_label(store, schema, sid, {"category": names[int(v)]}, annotator=annotator)
    result = A.field_agreement(store, schema, "category")
    assert math.isclose(result.alpha, 1 - 312 / 1216, rel_tol=1e-9)
    assert round(result.alpha, 3) == 0.743  # the paper's figure
    reference = krippendorff.alpha(reliability_data=np.array(list(data.values()), dtype=float),
                                   level_of_measurement="nominal")
    assert math.isclose(result.alpha, reference, rel_tol=1e-9)
    assert result.n_samples == 11


def test_label_queue_moves_undoes_and_pages(loaded) -> None:
    store, schema, ids = loaded
    q = L.new_queue(store, "task", ids[:6], annotator="ann", key=("k",))
    assert q.queue == ids[:6] and q.current == ids[0]
    L.record_label(store, schema, ids[0], {"category": "Math", "quality": 4}, annotator="ann")
    q.advance()
    q.move(-5)
    assert q.pos == 0
    q.move(1)
    assert q.current == ids[1] and q.page(2) == ids[1:3]
    q.remove(ids[1:3])                                  # labelled in bulk: gone from the queue
    assert q.current == ids[3]
    assert L.undo_in_queue(store, schema, q, annotator="ann") == ids[0]
    assert q.current == ids[0]                          # back on the undone sample
    assert L.undo_in_queue(store, schema, q, annotator="ann") is None  # nothing left to undo
    q.move(100)
    assert q.done and q.current is None
    rows = L.bulk_rows(store, [ids[2], ids[0]], chars=20)
    assert rows["id"].tolist() == [ids[2], ids[0]] and rows["text"].str.len().max() <= 20


def test_label_distribution_and_shared_samples(loaded) -> None:
    store, schema, ids = loaded
    for sid, value in ((ids[0], "Math"), (ids[1], "Math"), (ids[2], "Coding & Debugging")):
        L.record_label(store, schema, sid, {"category": value, "quality": 3}, annotator="ann")
    assert L.n_shared_samples(store, "task") == 0
    dist = L.label_distribution(store, "task", "category")
    assert dist.to_dict("records") == [{"annotator": "ann", "value": "Math", "n": 2},
                                       {"annotator": "ann", "value": "Coding & Debugging", "n": 1}]
    L.record_label(store, schema, ids[0], {"category": "Math", "quality": 2}, annotator="bob")
    assert L.n_shared_samples(store, "task") == 1


def test_missing_required_names_the_empty_required_fields() -> None:
    schema = L.parse_schema({"name": "task", "fields": [
        {"name": "category", "type": "single_choice", "options": ["coding", "other"]},
        {"name": "tags", "type": "multi_choice", "options": ["a", "b"]},
        {"name": "note", "type": "free_text"}]})
    assert L.missing_required(schema, {}) == ["category", "tags"]  # free text is optional by default
    assert L.missing_required(schema, {"category": "coding", "tags": [], "note": ""}) == ["tags"]
    assert L.missing_required(schema, {"category": "coding", "tags": ["a"]}) == []
