"""The signal layer (core/signals): the registry, the filter grammar, the built-in providers, and the proof
that a signal registered in one place (here, in the test) reaches every consumer with no other change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

import core.browse.samples as browse
import core.dedup.groups as dedup
import core.labels.labelling as labels
import core.maps.colours as map_colours
import core.maps.points as maps
from core import signals
from core.cli.main import main as cli
from core.errors import InputError, NotFoundError
from core.ingest.importer import ingest_records
from core.mixture.export import export_mixture
from core.mixture.recipe import load_recipe
from core.signals.registry import Bound, Signal
from core.store.database import Store

ROOT = Path(__file__).resolve().parents[1]
N = 30


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_toy(tmp_path_factory.mktemp("signals") / "signals.duckdb")


def build_toy(path: Path) -> Store:
    """30 samples and two finished tag runs (category on every sample, a proxy score on most)."""
    store = Store(path, busy_timeout=5)
    ingest_records(store, [{"instruction": f"question {i}", "output": "answer " * (i + 1)} for i in range(N)],
                   name="toy", shape="alpaca", license="MIT")
    info = store.dataset("toy")
    old = store.start_run("tag", dataset_id=info.dataset_id)
    new = store.start_run("tag", dataset_id=info.dataset_id)
    with store.connect() as con:
        for run, tags in ((old, ["category"]), (new, ["category", "preference_proxy"])):
            con.execute("INSERT INTO tag_runs VALUES (?, 'offline', ?, 'dataset:toy', ?, '{}', '{}')", [run, tags, N])
        # The old run says Coding everywhere; the new one Math on even ids, and fails on ids divisible by 5:
        # there the old run's value stays current.
        con.execute("INSERT INTO tags SELECT ?, id, 'category', 'Coding', 0.5, 'ok', NULL, 'x' FROM samples", [old])
        con.execute("INSERT INTO tags SELECT ?, id, 'category', CASE WHEN id % 5 = 0 THEN NULL WHEN id % 2 = 0 "
                    "THEN 'Math' ELSE 'Coding' END, 0.9, CASE WHEN id % 5 = 0 THEN 'parse_error' ELSE 'ok' END, "
                    "NULL, 'x' FROM samples", [new])
        con.execute("INSERT INTO tags SELECT ?, id, 'preference_proxy', NULL, id / 10, 'ok', NULL, 'x' FROM samples "
                    "WHERE id > 3", [new])
    store.finish_run(old)
    store.finish_run(new)
    return store


def _expected_category(sample_id: int) -> str:
    return "Coding" if sample_id % 5 == 0 or sample_id % 2 else "Math"


def test_grammar_parses_every_operator_and_says_what_is_wrong() -> None:
    f = signals.parse_filter("tag.category:eq:Math")
    assert (f.column, f.op, f.value) == ("tag.category", "eq", "Math")
    assert signals.parse_filter("noise.cleanlab.flag:is_true").op == "is_true"
    assert signals.parse_filter("selection.my pick: 2:is_false").column == "selection.my pick: 2"
    assert signals.parse_filter("tag.language:in:en, de").value == ["en", "de"]
    assert signals.parse_filter("n_chars:between:,500").value == [None, "500"]
    assert signals.parse_filter("text:contains:a:b").value == "a:b"  # a value may hold colons
    for text in ("justacolumn", "tag.category:like:Math", "x:gt", "x:is_true:yes"):
        with pytest.raises(InputError, match="COL:OP|takes no value|needs a value"):
            signals.parse_filter(text)
    for text in ("a.b:eq:x", "a:in:x,y", "a:is_null", "a:between:1,"):
        assert signals.format_filter(signals.parse_filter(text)) == text


def test_tag_signals_are_the_newest_ok_value_and_any_run_by_choice(toy: Store) -> None:
    names = {s.name: s for s in signals.available(toy, "toy")}
    assert names["tag.category"].kind == "category" and names["reward.proxy"].kind == "number"
    got = signals.values(toy, "tag.category", dataset="toy").set_index("sample_id")["value"]
    assert len(got) == N and all(got[i] == _expected_category(i) for i in got.index)
    runs = toy.query_df("SELECT run_id FROM runs WHERE kind = 'tag' ORDER BY run_id")["run_id"].tolist()
    first = signals.values(toy, "tag.category", dataset="toy", run=runs[0])
    assert set(first["value"]) == {"Coding"} and len(first) == N
    with pytest.raises(NotFoundError, match="tag.category"):
        signals.get(toy, "tag.nope")


def test_browse_filters_sorts_and_shows_signals(toy: Store) -> None:
    page = browse.query_samples(toy, "toy", filters=[signals.parse_filter("tag.category:eq:Math"),
                                                     signals.parse_filter("reward.proxy:gt:1")],
                                sort="reward.proxy", descending=True, signals=["tag.category", "reward.proxy"])
    expected = [i for i in range(N, 0, -1) if _expected_category(i) == "Math" and i / 10 > 1]
    assert page.total == len(expected) and page.ids == expected
    assert set(page.rows["tag.category"]) == {"Math"} and page.rows["reward.proxy"].tolist() == [i / 10 for i in expected]
    missing = browse.query_samples(toy, "toy", filters=[signals.parse_filter("reward.proxy:is_null")])
    assert missing.ids == [1, 2, 3]
    assert browse.top_values(toy, "toy", "tag.category")["value"].tolist()[:2] == ["Coding", "Math"]
    assert browse.value_range(toy, "toy", "reward.proxy") == (0.4, 3.0)
    with pytest.raises(ValueError, match="Unknown column 'tag.nope'"):
        browse.query_samples(toy, "toy", filters=[signals.parse_filter("tag.nope:eq:x")])
    card = signals.sample_signals(toy, 4).set_index("signal")
    assert card.at["tag.category", "value"] == "Math" and card.at["reward.proxy", "value"] == "0.4"


# ---- the proof: one registration, every consumer ----------------------------------------------------------


def _probe(con, dataset_ids, run) -> Bound:  # noqa: ANN001 - the registry's builder signature
    """A new per-sample method: id modulo 3 (0, 1, 2), for every sample of the datasets asked for."""
    return Bound("SELECT id AS sample_id, id % 3 AS value FROM samples WHERE list_contains(?::INTEGER[], dataset_id)",
                 [list(dataset_ids)])


@pytest.fixture
def probe() -> Iterator[str]:
    handle = signals.register(Signal("probe.mod3", "number", "sample id modulo 3 (a test's method)",
                                     "0, 1 or 2", _probe, family="probe"))
    yield "probe.mod3"
    signals.unregister(handle)


def _twos(store: Store) -> list[int]:
    ids = store.query_df("SELECT id FROM samples ORDER BY id")["id"].tolist()
    return [i for i in ids if i % 3 == 2]


def test_a_registered_signal_reaches_the_datasets_page(monkeypatch: pytest.MonkeyPatch, toy: Store,
                                                        probe: str) -> None:
    monkeypatch.setenv("ASSAY_DB", str(toy.path))
    at = AppTest.from_file(str(ROOT / "pages" / "1_Datasets.py"), default_timeout=60)
    at.query_params["dataset"] = "toy"
    at.run()
    assert not at.exception, at.exception
    assert probe in at.multiselect(key="shown_signals").options
    at.multiselect(key="shown_signals").set_value([probe])
    at.text_area(key="filter_text").set_value(f"{probe}:eq:2\ntag.category:eq:Math")
    at.run()
    assert not at.exception, at.exception
    expected = [i for i in _twos(toy) if _expected_category(i) == "Math"]
    assert any(t.value.startswith(f"rows 1–{len(expected)} of {len(expected)} matching") for t in at.text)
    table = at.dataframe[0].value
    assert table["id"].tolist() == expected and set(table[probe]) == {2}


def test_a_registered_signal_reaches_show_map_mixture_labels_export_and_dedup(
        toy: Store, probe: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    twos = _twos(toy)
    # assay show --filter (in process: the registration lives in this process)
    code = cli(["--db", str(toy.path), "--json", "show", "toy", "--filter", f"{probe}:ge:2", "--signal", probe,
                "--limit", "100"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["total"] == len(twos) and [r["id"] for r in result["rows"]] == twos
    assert {r[probe] for r in result["rows"]} == {2}

    # the Map's colour options (a projection of the dataset recorded as a map)
    proj = toy.start_run("project")
    with toy.connect() as con:
        con.execute("INSERT INTO projections SELECT ?, id, id, -id FROM samples", [proj])
    toy.finish_run(proj)
    info = maps.record_map(toy, ["toy"], proj, proj, None)
    offered = maps.colour_columns(toy, ["toy"], info.map_id)
    assert offered[f"signal:{probe}"] == "numeric"
    points = maps.load_points(toy, info.map_id, [f"signal:{probe}"])
    assert (points[f"signal:{probe}"] == points["id"] % 3).all()
    assert map_colours.resolve(toy, f"signal:{probe}").kind == "numeric"

    # a mixture filter, and the export's extra column with its run in the manifest
    recipe = load_recipe(f"""
name: probe-mix
seed: 1
sources:
  - dataset: toy
    filters:
      - {{field: "signal:{probe}", op: eq, value: 2}}
      - {{field: "signal:tag.category", op: in, value: [Math]}}
selection: {{method: top, score: "signal:reward.proxy"}}
targets: {{total: 3}}
export: {{formats: [openai], signals: [{probe}, tag.category]}}
""")
    exported = export_mixture(toy, recipe, tmp_path / "mix")
    prov = pq.read_table(tmp_path / "mix" / "provenance.parquet").to_pandas()
    math_twos = [i for i in twos if _expected_category(i) == "Math"]
    assert sorted(prov["sample_id"]) == sorted(math_twos, key=lambda i: -i)[:3][::-1]  # top 3 by reward.proxy
    assert set(prov[probe]) == {2} and set(prov["tag.category"]) == {"Math"}
    tag_runs = toy.query_df("SELECT run_id FROM runs WHERE kind = 'tag' ORDER BY run_id")["run_id"].tolist()
    assert exported.manifest["signals"][probe]["runs"] == []
    assert exported.manifest["signals"]["tag.category"]["runs"] == tag_runs
    assert exported.manifest["signal_runs"]["signal:reward.proxy"] == tag_runs[1:]
    # ... and the export is itself a signal now
    member = signals.values(toy, "mixture.probe-mix", dataset="toy")
    assert sorted(member[member["value"]]["sample_id"]) == sorted(prov["sample_id"])

    # a label queue built from the signal, ordered by it
    schema = labels.save_schema(toy, labels.parse_schema({"name": "probe", "fields": [
        {"name": "ok", "type": "keep_drop"}, {"name": "bucket", "type": "free_text", "suggest_from": probe}]}))
    candidates = labels.signal_candidates(toy, "toy", [f"{probe}:eq:2"])
    queue = labels.new_queue(toy, schema.name, candidates, annotator="ann")
    assert candidates == twos and sorted(queue.candidates) == twos
    ordered = labels.most_uncertain_first(toy, schema, [1, 2, 3, 4, 5, 6], signal=probe)
    assert ordered == [3, 6, 1, 4, 2, 5]
    assert labels.suggestion_for(toy, schema, 5)["bucket"].value == "2"

    # dedup's keep rule: the highest value of the signal represents a group
    members = pd.DataFrame({"sample_id": [3, 4, 5], "group_id": [1, 1, 1], "similarity": [1.0, 1.0, 1.0]})
    chosen, used = dedup.choose_representatives(toy, members, keep=f"signal:{probe}")
    assert used == f"signal:{probe}" and chosen.loc[chosen["is_representative"], "sample_id"].tolist() == [5]


def test_after_unregistering_the_signal_is_gone(toy: Store) -> None:
    assert "probe.mod3" not in {s.name for s in signals.available(toy)}
    with pytest.raises(ValueError, match="Unknown column 'probe.mod3'"):
        browse.query_samples(toy, "toy", filters=[signals.parse_filter("probe.mod3:eq:2")])


def test_built_in_providers_read_their_runs(tmp_path: Path) -> None:
    """Noise, duplicates, contamination, hand labels, selections and exclusions, each from rows as their
    capability writes them; the newest finished run wins and a running one is not read."""
    from core.browse.selections import exclude, save_selection

    store = Store(tmp_path / "providers.duckdb")
    ingest_records(store, [{"instruction": f"q {i}", "output": "a"} for i in range(6)], name="d", shape="alpaca")
    ingest_records(store, [{"instruction": f"eval {i}", "output": "a"} for i in range(2)], name="ev",
                   shape="alpaca", is_eval=True)
    d = store.dataset("d").dataset_id
    ids = store.query_df("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id", [d])["id"].tolist()
    ev = store.query_df("SELECT id, source_id FROM samples WHERE dataset_id <> ? ORDER BY id", [d])
    noise, running = store.start_run("noise", dataset_id=d), store.start_run("noise", dataset_id=d)
    dup = store.start_run("dedup", params={"dataset_ids": [d]})
    contam = store.start_run("contamination", dataset_id=d)
    with store.connect() as con:
        for run, flag in ((noise, "id % 2 = 0"), (running, "true")):
            con.execute("INSERT INTO noise_runs VALUES (?, ?, 'meta:x', 0, ['a'], ['cleanlab', 'aum'], 6, 0, 0, '{}')",
                        [run, d])
            con.execute(f"INSERT INTO noise_scores (run_id, sample_id, given_label, cleanlab_score, cleanlab_flag, aum) "
                        f"SELECT ?, id, 'a', id / 10, {flag}, -id FROM samples WHERE dataset_id = ?", [run, d])
        con.execute("INSERT INTO dup_groups VALUES (?, 7, ?, true, 1.0), (?, 7, ?, false, 1.0)",
                    [dup, ids[0], dup, ids[1]])
        con.execute("INSERT INTO contamination_results (run_id, sample_id, eval_dataset_id, ngram13_eval_id, "
                    "contaminated) VALUES (?, ?, ?, ?, true)", [contam, ids[2], store.dataset("ev").dataset_id,
                                                                 int(ev["id"][1])])
    for run in (noise, dup, contam):
        store.finish_run(run)
    schema = labels.save_schema(store, labels.parse_schema({"name": "t", "fields": [
        {"name": "cat", "type": "single_choice", "options": ["x", "y"]}]}))
    labels.record_label(store, schema, ids[0], {"cat": "x"}, annotator="a")
    labels.record_label(store, schema, ids[0], {"cat": "y"}, annotator="b")
    labels.record_label(store, schema, ids[1], {"cat": "y"}, annotator="a")
    save_selection(store, "picked", ids[3:5], origin="manual")
    exclude(store, [ids[5]], reason="off topic", origin="manual")

    def vals(name: str) -> dict[int, object]:
        df = signals.values(store, name, dataset="d")
        return dict(zip(df["sample_id"].astype(int), df["value"], strict=True))

    names = {s.name: s.kind for s in signals.available(store, "d")}
    assert {"noise.cleanlab.flag": "bool", "noise.cleanlab.score": "number", "noise.aum.score": "number",
            "dup.status": "category", "dup.group": "number", "contamination": "category",
            "contamination.item": "text", "label.t.cat": "category", "label.disagreement": "number",
            "selection.picked": "bool", "exclusion.any": "bool"}.items() <= names.items()
    assert "noise.rescaler.weight" not in names  # a method that did not run offers nothing
    assert vals("noise.cleanlab.flag") == {i: i % 2 == 0 for i in ids}  # not the running run's all-true
    assert vals("noise.aum.score") == {i: -i for i in ids}
    assert vals("dup.status") == {ids[0]: "representative (kept)", ids[1]: "duplicate (to drop)",
                                  **{i: "not duplicated" for i in ids[2:]}}
    assert vals("dup.group") == {ids[0]: 7, ids[1]: 7}
    assert vals("contamination") == {i: "contaminated" if i == ids[2] else "clean" for i in ids}
    assert vals("contamination.item") == {ids[2]: f"ev #{ev['source_id'][1]}"}
    assert vals("label.t.cat") == {ids[0]: labels.TIE, ids[1]: "y"}
    assert vals("label.disagreement") == {ids[0]: 0.5}
    assert vals("selection.picked") == {i: i in ids[3:5] for i in ids}
    assert vals("exclusion.reason")[ids[5]] == "off topic"
    assert signals.values(store, "noise.cleanlab.flag", dataset="d", run=running)["value"].all()
    page = browse.query_samples(store, "d", filters=[signals.parse_filter("contamination:eq:clean"),
                                                     signals.parse_filter("noise.cleanlab.flag:is_true"),
                                                     signals.parse_filter("dup.status:ne:duplicate (to drop)")])
    assert page.ids == [i for i in ids if i != ids[2] and i % 2 == 0 and i != ids[1]]
