"""Signal filters and sorts (core/browse/samples.py) give the answer of the straightforward query: every
signal LEFT JOINed onto the samples in full (`Signal.bind`), the filter on the joined value, a separate count.
Many filter / sort combinations on a small store with real runs of every kind read through their providers:
the newest run and an explicit one, a newer run that covers only some samples, a dataset no contamination run
checked."""

from __future__ import annotations

import random

import pytest

import core.browse.samples as browse
import core.labels.labelling as labels
from core.browse.samples import Column, Filter, _filter_sql, matching_ids, query_samples
from core.browse.selections import exclude, save_selection
from core.ingest.importer import ingest_records
from core.signals.registry import find_on
from core.store.database import Store

N = 40
CATS = ["Math", "Coding", "Writing"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Datasets d (every kind of run) and e (tags only); d's second tag run covers a third of it and fails on
    some samples, so the first run's value stays current there."""
    store = Store(tmp_path_factory.mktemp("sigq") / "sigq.duckdb")
    ingest_records(store, [{"instruction": f"q {i}", "output": "a " * (i % 7 + 1)} for i in range(N)], name="d",
                   shape="alpaca")
    ingest_records(store, [{"instruction": f"e {i}", "output": "b"} for i in range(8)], name="e", shape="alpaca")
    ingest_records(store, [{"instruction": "eval", "output": "x"}], name="ev", shape="alpaca", is_eval=True)
    d, e = store.dataset("d").dataset_id, store.dataset("e").dataset_id
    ids = store.query_df("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id", [d])["id"].tolist()
    old, new = store.start_run("tag", dataset_id=d), store.start_run("tag", dataset_id=d)
    noise, dup = store.start_run("noise", dataset_id=d), store.start_run("dedup", params={"dataset_ids": [d]})
    contam = store.start_run("contamination", dataset_id=d)
    with store.connect() as con:
        for run, tags in ((old, ["category", "preference_proxy"]), (new, ["category"])):
            con.execute("INSERT INTO tag_runs VALUES (?, 'offline', ?, 'x', 0, '{}', '{}')", [run, tags])
        con.execute("INSERT INTO tags SELECT ?, id, 'category', (?::VARCHAR[])[CAST(1 + id % 3 AS BIGINT)], 0.5, "
                    "'ok', NULL, 'x' FROM samples WHERE dataset_id IN (?, ?)", [old, CATS, d, e])
        con.execute("INSERT INTO tags SELECT ?, id, 'preference_proxy', NULL, CASE WHEN id % 4 = 0 THEN NULL "
                    "ELSE (id * 7) % 11 END, 'ok', NULL, 'x' FROM samples WHERE dataset_id IN (?, ?)", [old, d, e])
        con.execute("INSERT INTO tags SELECT ?, id, 'category', CASE WHEN id % 2 = 0 THEN 'Math' ELSE NULL END, 0.9, "
                    "CASE WHEN id % 2 = 0 THEN 'ok' ELSE 'parse_error' END, NULL, 'x' FROM samples "
                    "WHERE dataset_id = ? AND id % 3 = 0", [new, d])
        con.execute("INSERT INTO noise_runs VALUES (?, ?, 'meta:x', 0, ['a'], ['cleanlab'], ?, 0, 0, '{}')",
                    [noise, d, N])
        con.execute("INSERT INTO noise_scores (run_id, sample_id, given_label, cleanlab_score, cleanlab_flag) "
                    "SELECT ?, id, 'a', (id % 9) / 10, CASE WHEN id % 6 = 0 THEN NULL ELSE id % 5 = 0 END "
                    "FROM samples WHERE dataset_id = ? AND id % 8 <> 1", [noise, d])
        con.execute("INSERT INTO dup_groups VALUES (?, 1, ?, true, 1.0), (?, 1, ?, false, 1.0), (?, 2, ?, true, 1.0), "
                    "(?, 2, ?, false, 1.0)", [dup, ids[0], dup, ids[1], dup, ids[4], dup, ids[9]])
        flagged = [ids[2], ids[3], ids[3], ids[17]]  # twice: one row per evaluation set it matched
        con.executemany("INSERT INTO contamination_results (run_id, sample_id, eval_dataset_id, contaminated) "
                        "VALUES (?, ?, 1, true)", [[contam, i] for i in flagged])
        con.execute("INSERT INTO contamination_results (run_id, sample_id, eval_dataset_id, contaminated) "
                    "VALUES (?, ?, 1, false)", [contam, ids[5]])
    for run in (old, new, noise, dup, contam):
        store.finish_run(run)
    schema = labels.save_schema(store, labels.parse_schema({"name": "t", "fields": [
        {"name": "cat", "type": "single_choice", "options": ["x", "y"]}]}))
    for i in ids[:12:3]:
        labels.record_label(store, schema, i, {"cat": "x" if i % 2 else "y"}, annotator="a")
    save_selection(store, "picked", ids[5:15], origin="manual")
    exclude(store, [ids[7]], reason="off topic", origin="manual")
    store.runs_by_name = {"old": old, "new": new}  # type: ignore[attr-defined]
    return store


def _reference(store: Store, dataset: str, filters: list[Filter], sort: str | None, descending: bool,
               runs: dict[str, int] | None) -> list[int]:
    """Every matching id in page order: the straightforward query, each signal joined in full."""
    with store.connect() as con:
        d = con.execute("SELECT dataset_id FROM datasets WHERE name = ?", [dataset]).fetchall()[0][0]
        joins, join_params, where, params, aliases = [], [], ["s.dataset_id = ?"], [d], {}
        for name in [f.column for f in filters] + ([sort] if sort else []):
            if name in aliases:
                continue
            signal = find_on(con, name, [d])
            bound = signal.bind(con, [d], (runs or {}).get(name))
            aliases[name] = Column(name, browse._SIGNAL_KINDS[signal.kind], "signal", path=f"j{len(aliases)}")
            joins.append(f"LEFT JOIN ({bound.sql}) j{len(aliases) - 1} ON j{len(aliases) - 1}.sample_id = s.id")
            join_params += bound.params
        for flt in filters:
            sql, flt_params = _filter_sql(aliases[flt.column], flt.op, flt.value)
            where.append(f"({sql})")
            params += flt_params
        order = "s.row_idx"
        if sort:
            order = f"{aliases[sort].path}.value {'DESC' if descending else 'ASC'} NULLS LAST, s.row_idx"
        rows = con.execute(f"SELECT s.id FROM samples s {' '.join(joins)} WHERE {' AND '.join(where)} "
                           f"ORDER BY {order}", [*join_params, *params]).fetchall()
    return [int(r[0]) for r in rows]


# Per signal, filters exercising every operator of the grammar on that signal's kind.
FILTERS = {
    "tag.category": [("eq", "Math"), ("ne", "Math"), ("in", ["Math", "Writing"]), ("not_in", ["Coding"]),
                     ("contains", "at"), ("not_contains", "in"), ("is_null", None), ("not_null", None),
                     ("gt", "Coding"), ("le", "Math"), ("between", ["C", "N"]), ("eq", "")],
    "reward.proxy": [("gt", 4), ("le", 3), ("lt", 0), ("ge", 10), ("between", [2, 8]), ("between", [None, 5]),
                     ("between", [None, None]), ("eq", 7), ("ne", 7), ("in", [1, 2, 3]), ("not_in", [1, 2]),
                     ("is_null", None), ("not_null", None)],
    "noise.cleanlab.flag": [("is_true", None), ("is_false", None), ("is_null", None), ("not_null", None),
                            ("eq", True), ("ne", "true")],
    "noise.cleanlab.score": [("gt", 0.35), ("between", [0.1, 0.5]), ("is_null", None), ("ne", 0)],
    "contamination": [("eq", "clean"), ("eq", "contaminated"), ("ne", "clean"), ("ne", "contaminated"),
                      ("in", ["clean", "contaminated"]), ("not_in", ["clean"]), ("is_null", None),
                      ("not_null", None), ("contains", "cont"), ("not_contains", "lea"), ("gt", "clean")],
    "dup.status": [("eq", "not duplicated"), ("ne", "duplicate (to drop)"), ("is_null", None),
                   ("contains", "kept")],
    "selection.picked": [("is_true", None), ("is_false", None), ("not_null", None)],
    "exclusion.any": [("is_false", None), ("is_true", None)],
    "label.t.cat": [("eq", "x"), ("is_null", None), ("not_in", ["y"])],
}
SORTS = [None, "reward.proxy", "tag.category", "contamination", "noise.cleanlab.score", "dup.status"]


def _cases(seed: int, n: int) -> list[tuple[list[Filter], str | None, bool]]:
    rng = random.Random(seed)
    singles = [Filter(name, op, value) for name, ops in FILTERS.items() for op, value in ops]
    cases = [([flt], None, False) for flt in singles]  # every operator on its own
    for _ in range(n):
        names = rng.sample(sorted(FILTERS), rng.randint(2, 3))
        filters = [Filter(name, *rng.choice(FILTERS[name])) for name in names]
        cases.append((filters, rng.choice(SORTS), rng.random() < 0.5))
    return cases


def _check(store: Store, dataset: str, filters: list[Filter], sort: str | None, descending: bool,
           runs: dict[str, int] | None = None, full: bool = True) -> None:
    """The page (and with `full`, the count past the end and matching_ids) against the reference."""
    expected = _reference(store, dataset, filters, sort, descending, runs)
    what = f"{dataset} {filters} sort={sort} desc={descending} runs={runs}"
    for offset, limit in ((2, 6), (len(expected) + 3, 5)) if full else ((2, 6),):
        page = query_samples(store, dataset, filters=filters, sort=sort, descending=descending, offset=offset,
                             limit=limit, runs=runs)
        assert (page.total, page.ids) == (len(expected), expected[offset:offset + limit]), what
    if full:
        assert matching_ids(store, dataset, filters=filters, runs=runs) == sorted(
            expected, key=lambda i: _row_order(store)[i]), what


_ROW_ORDER: dict[int, int] = {}


def _row_order(store: Store) -> dict[int, int]:
    if not _ROW_ORDER:
        rows = store.query_df("SELECT id, dataset_id, row_idx FROM samples")
        _ROW_ORDER.update({int(r.id): (int(r.dataset_id), int(r.row_idx)) for r in rows.itertuples()})
    return _ROW_ORDER


def test_every_operator_and_many_combinations_match_the_straightforward_query(store: Store) -> None:
    for k, (filters, sort, descending) in enumerate(_cases(seed=15, n=20)):
        _check(store, "d", filters, sort, descending, full=k % 3 == 0)


def test_an_explicit_run_and_a_dataset_no_run_checked(store: Store) -> None:
    old = store.runs_by_name["old"]  # type: ignore[attr-defined]
    for flt in [Filter("tag.category", op, value) for op, value in FILTERS["tag.category"]]:
        _check(store, "d", [flt, Filter("contamination", "ne", "contaminated")], "reward.proxy", True,
               runs={"tag.category": old}, full=False)
    # e: tags only; no contamination, noise or dedup run checked it, so those signals have no value there.
    for flt in [Filter("tag.category", "eq", "Math"), Filter("reward.proxy", "gt", 3), Filter("tag.category", "is_null"),
                Filter("contamination", "eq", "clean"), Filter("contamination", "is_null"),
                Filter("contamination", "ne", "clean"), Filter("dup.status", "is_null"),
                Filter("dup.status", "eq", "not duplicated")]:
        _check(store, "e", [flt], "reward.proxy", False)
        _check(store, "e", [flt, Filter("tag.category", "ne", "Coding")], "contamination", True, full=False)


def test_the_sparse_contamination_signal_has_the_full_answer(store: Store) -> None:
    """Dense (every consumer) and sparse (browse filters) forms agree: one row per sample, clean by default."""
    from core import signals

    values = signals.values(store, "contamination", dataset="d")
    ids = store.query_df("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id", [store.dataset("d").dataset_id])
    flagged = set(store.query_df("SELECT sample_id FROM contamination_results WHERE contaminated")["sample_id"])
    assert values["sample_id"].tolist() == ids["id"].tolist()
    assert dict(zip(values["sample_id"], values["value"], strict=True)) == {
        int(i): "contaminated" if i in flagged else "clean" for i in ids["id"]}
    assert signals.values(store, "contamination", dataset="e").empty
    with store.connect() as con:  # browse joins the flagged rows alone
        d = store.dataset("d").dataset_id
        assert find_on(con, "contamination", [d]).bind_sparse(con, [d]).covers == (d,)
    page = query_samples(store, "d", signals=["contamination"], sort="contamination", limit=N)
    assert list(page.rows["contamination"]) == sorted(page.rows["contamination"])
    assert page.rows.set_index("id")["contamination"].to_dict() == {
        int(i): "contaminated" if i in flagged else "clean" for i in ids["id"]}
