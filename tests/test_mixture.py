"""Mixture recipes, arithmetic, filters, warnings and reproducible export, on real shared datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.ingest.demo import load_demo
from core.mixture.build import MixturePlanError, preview
from core.mixture.export import export_mixture, sha256_file, zip_export
from core.mixture.plan import largest_remainder
from core.mixture.recipe import RecipeError, load_recipe
from core.store.database import Store

DEMO = ["gsm8k-train", "gsm8k-test", "alpaca-gpt4-demo-1k", "hh-rlhf-harmless-test", "oasst-sample",
        "self-instruct-user-oriented"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Store:
    store = Store(tmp_path_factory.mktemp("mix") / "demo.duckdb", busy_timeout=10)
    load_demo(store, shared, names=DEMO)
    return store


def recipe(text: str):
    return load_recipe(text.strip() + "\n")


# ---- recipe ------------------------------------------------------------------------------------


def test_recipe_roundtrip_and_errors_name_the_field() -> None:
    r = recipe("""
name: r
seed: 3
sources:
  - {dataset: a, count: 10, filters: [{field: meta.x, op: in, value: [1, 2]}, {flag: not_contaminated}]}
  - {dataset: b, weight: 2}
targets: {total: 100, proportions: {a: 0.25, b: 0.75}}
""")
    assert load_recipe(r.to_yaml()).to_dict() == r.to_dict()
    assert r.targets.by == "source"
    cases = {
        "sources[0].count": "sources: [{dataset: a, count: 10, weight: 1}]",
        "sources[0].filters[0].op": "sources: [{dataset: a, filters: [{field: n_tokens, op: bigger, value: 1}]}]",
        "sources[0].filters[0].field": "sources: [{dataset: a, filters: [{field: nope, op: eq, value: 1}]}]",
        "targets.proportions": "sources: [{dataset: a}]\ntargets: {total: 5, proportions: {a: 0.3}}",
        "selection.score": "sources: [{dataset: a}]\nselection: {method: top}",
        "export.formats[0]": "sources: [{dataset: a}]\nexport: {formats: [csv]}",
        "sources[1].dataset": "sources: [{dataset: a}, {dataset: a}]",
    }
    for where, text in cases.items():
        with pytest.raises(RecipeError) as err:
            recipe(text)
        assert err.value.where == where, (where, str(err.value))


def test_largest_remainder_adds_up_exactly() -> None:
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    for total in (0, 1, 7, 999, 1000):
        assert sum(largest_remainder(total, [0.5, 0.3, 0.2, 0.0001])) == total


# ---- arithmetic on real data -------------------------------------------------------------------


def test_proportions_and_counts_are_met_exactly(demo: Store) -> None:
    comp = preview(demo, recipe("""
name: p
seed: 1
sources:
  - {dataset: gsm8k-train, category: math}
  - {dataset: alpaca-gpt4-demo-1k, category: general}
  - {dataset: oasst-sample, category: general}
targets: {total: 1000, proportions: {math: 0.6, general: 0.4}}
"""))
    assert comp.plan.feasible and comp.n_selected == 1000
    per_cat = comp.composition.groupby("category")["n"].sum()
    assert per_cat["math"] == 600 and per_cat["general"] == 400
    per_src = comp.sources.set_index("dataset")["n_selected"]
    assert per_src["alpaca-gpt4-demo-1k"] == 200 and per_src["oasst-sample"] == 200  # equal weights
    assert any("largest remainder" in s for s in comp.plan.steps)


def test_token_budget_is_met_within_one_sample(demo: Store) -> None:
    comp = preview(demo, recipe("""
name: t
sources:
  - {dataset: gsm8k-train, tokens: 50000}
  - {dataset: self-instruct-user-oriented, count: 100}
"""))
    src = comp.sources.set_index("dataset")
    assert src.loc["self-instruct-user-oriented", "n_selected"] == 100
    longest = int(demo.query_df("SELECT max(n_tokens) AS m FROM samples s JOIN datasets d USING (dataset_id) "
                                "WHERE d.name = 'gsm8k-train'").m[0])
    tokens = src.loc["gsm8k-train", "tokens_selected"]
    assert 50000 - longest < tokens <= 50000


def test_upsampling_and_impossible_target(demo: Store, tmp_path: Path) -> None:
    ok = preview(demo, recipe("sources: [{dataset: self-instruct-user-oriented, count: 600, replace: true}]"))
    src = ok.sources.iloc[0]
    assert src.n_selected == 600 and src.n_unique == 252 and ok.plan.feasible
    bad = recipe("sources: [{dataset: self-instruct-user-oriented, count: 600, filters: "
                 "[{field: n_tokens, op: le, value: 100}]}]")
    comp = preview(demo, bad)
    assert not comp.plan.feasible
    assert "600 samples asked" in comp.plan.issues[0] and "replace: true" in comp.plan.issues[0]
    out = tmp_path / "never"
    with pytest.raises(MixturePlanError, match="cannot be met"):
        export_mixture(demo, bad, out)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written is left behind
    runs = demo.query_df("SELECT status FROM runs WHERE kind = 'mix-export' ORDER BY run_id DESC LIMIT 1")
    assert runs.status[0] == "failed"


def test_filter_counts_examples_dedup_and_exclusions(demo: Store) -> None:
    from core.browse.selections import exclude

    ids = demo.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) "
                        "WHERE d.name = 'oasst-sample' ORDER BY s.id LIMIT 7").id.tolist()
    exclude(demo, ids, reason="test", origin="test")
    comp = preview(demo, recipe("""
sources:
  - dataset: oasst-sample
    filters:
      - {field: meta.oasst_lang, op: eq, value: en}
      - {field: n_tokens, op: percentile_ge, value: 50}
      - {flag: not_excluded}
  - {dataset: alpaca-gpt4-demo-1k}
dedup: {method: exact}
"""))
    fc = comp.filter_counts.set_index(["source", "filter"])
    n = int(demo.dataset("oasst-sample").n_samples)
    first = fc.loc[("oasst-sample", 'meta.oasst_lang eq "en"')]
    assert first.before == n and first.removed == 0  # the sample is all English
    pct = fc.loc[("oasst-sample", 'n_tokens percentile_ge 50')]
    assert abs(pct.after - n / 2) <= n * 0.05  # about half survive the median
    assert fc.loc[("oasst-sample", "not excluded")].removed <= 7
    assert fc.loc[("alpaca-gpt4-demo-1k", "duplicates (one per group)")].removed > 0  # it has exact repeats
    ex = comp.examples[comp.examples["filter"] == "n_tokens percentile_ge 50"]
    assert len(ex) == 3 and ex.text.map(len).max() <= 300
    assert set(ids).isdisjoint(_selected_ids(demo, comp))


def _selected_ids(store: Store, comp) -> set[int]:  # noqa: ANN001
    out = Path(store.path).parent / f"sel-{comp.recipe.fingerprint()[:8]}"
    result = export_mixture(store, comp.recipe, out, formats=["parquet"], allow_shortfall=True, overwrite=True)
    return set(pd.read_parquet(result.out_dir / "provenance.parquet").sample_id)


# ---- warnings, each from a real case -----------------------------------------------------------


def codes(comp) -> set[str]:  # noqa: ANN001
    return {w.code for w in comp.warnings}


def test_licence_synthetic_and_dominance_warnings(demo: Store) -> None:
    comp = preview(demo, recipe("sources: [{dataset: alpaca-gpt4-demo-1k, count: 300}, {dataset: gsm8k-train, count: 700}]"))
    assert {"non_commercial", "dominant_category", "synthetic_share"} <= codes(comp)
    synth = next(w for w in comp.warnings if w.code == "synthetic_share")
    assert "30.0%" in synth.message and "Characterizing Model Behavior Under Synthetic Data Training" in synth.message
    assert synth.severity == "warning" and "Pythia" in synth.message and "arXiv:2510.05133" in synth.message
    small = preview(demo, recipe("sources: [{dataset: alpaca-gpt4-demo-1k, count: 100}, {dataset: gsm8k-train, count: 900}]"))
    assert "synthetic_share" not in codes(small) and "non_commercial" in codes(small)


def test_unsafe_and_eval_warnings(demo: Store) -> None:
    import core.labels.labelling as labels

    schema = labels.save_schema(demo, labels.parse_schema(
        {"name": "safety-check", "fields": [{"name": "safety", "type": "single_choice", "options": ["safe", "unsafe"]}]}))
    hh = demo.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) "
                       "WHERE d.name = 'hh-rlhf-harmless-test' ORDER BY s.id LIMIT 5").id.tolist()
    labels.record_bulk(demo, schema, hh, {"safety": "unsafe"}, annotator="tester")
    kept = preview(demo, recipe("sources: [{dataset: hh-rlhf-harmless-test}, {dataset: gsm8k-test, count: 10}]"))
    warn = next(w for w in kept.warnings if w.code == "unsafe_kept")
    assert warn.message.startswith("5 samples marked unsafe") and "safety-check.safety" in warn.message
    assert "eval_source" in codes(kept)
    clean = preview(demo, recipe("sources: [{dataset: hh-rlhf-harmless-test, filters: [{flag: not_unsafe}]}]"))
    assert "unsafe_kept" not in codes(clean)
    assert clean.filter_counts.removed.iloc[0] == 5


def test_contamination_warning_and_filter(demo: Store, shared: Path) -> None:
    from core.contamination.check import check_contamination
    from core.ingest.importer import ingest_records

    train = [json.loads(line) for line in (shared / "gsm8k/train.jsonl").read_text().splitlines()[:150]]
    test = [json.loads(line) for line in (shared / "gsm8k/test.jsonl").read_text().splitlines()[:10]]
    ingest_records(demo, train + test, name="planted", license="MIT")
    check_contamination(demo, "planted", ["gsm8k-test"], methods=["ngram13"])
    kept = preview(demo, recipe("sources: [{dataset: planted}]"))
    warn = next(w for w in kept.warnings if w.code == "contaminated_kept")
    n_flagged = int(kept.sources.contaminated_kept.sum())
    # The 10 planted test items, plus whatever the real train split shares with the test split.
    assert warn.severity == "error" and n_flagged >= 10 and warn.message.startswith(f"{n_flagged} samples")
    clean = preview(demo, recipe("sources: [{dataset: planted, filters: [{flag: not_contaminated}]}]"))
    assert "contaminated_kept" not in codes(clean) and clean.n_selected == 160 - n_flagged
    planted = demo.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = 'planted' "
                            "AND s.row_idx >= 150").id.tolist()
    assert set(planted).isdisjoint(_selected_ids(demo, clean))


# ---- export ------------------------------------------------------------------------------------

EXPORT = """
name: repro
seed: 11
sources:
  - {dataset: gsm8k-train, count: 300}
  - {dataset: oasst-sample, weight: 1, filters: [{field: n_turns, op: ge, value: 2}]}
  - {dataset: self-instruct-user-oriented, count: 300, replace: true}
weights: {field: meta.oasst_leaf_rank, default: 1.0}
dedup: {method: exact}
export: {formats: [openai, sharegpt, alpaca, parquet, hf], validation: 0.1}
"""


def test_export_is_byte_identical_and_loads(demo: Store, tmp_path: Path) -> None:
    from datasets import load_dataset, load_from_disk

    r = recipe(EXPORT)
    a = export_mixture(demo, r, tmp_path / "a")
    b = export_mixture(demo, r, tmp_path / "b")
    assert [f["sha256"] for f in a.files] == [f["sha256"] for f in b.files]
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    assert zip_export(tmp_path / "a") != b"" and a.run_id != b.run_id
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    for f in manifest["files"]:
        assert sha256_file(tmp_path / "a" / f["path"]) == f["sha256"]
    total = manifest["totals"]["samples"]
    assert total == manifest["totals"]["train"] + manifest["totals"]["validation"] == a.composition.n_selected
    lic = {s["dataset"]: s["license"] for s in manifest["sources"]}
    assert lic == {"gsm8k-train": "MIT", "oasst-sample": "Apache-2.0", "self-instruct-user-oriented": "Apache-2.0"}
    assert manifest["store"]["schema_version"] >= 8 and manifest["code"]["assay_version"]
    assert all(s["origin"] and s["ingest_run_id"] for s in manifest["sources"])
    for fmt, key in (("openai", "messages"), ("sharegpt", "conversations"), ("alpaca", "instruction")):
        files = {s: str(tmp_path / "a" / fmt / f"{s}.jsonl") for s in ("train", "validation")}
        ds = load_dataset("json", data_files=files)
        assert ds["train"].num_rows + ds["validation"].num_rows == total and key in ds["train"].column_names
        assert "weight" in ds["train"].column_names
        assert len(pd.read_json(files["train"], lines=True)) == ds["train"].num_rows
    first = pd.read_json(tmp_path / "a/openai/train.jsonl", lines=True).messages[0]
    assert first[0]["role"] in ("user", "system") and first[-1]["role"] == "assistant"
    hf = load_from_disk(str(tmp_path / "a/hf"))
    assert hf["train"].num_rows == manifest["totals"]["train"]
    prov = pd.read_parquet(tmp_path / "a/provenance.parquet")
    # Copies of an upsampled sample never straddle train and validation.
    assert prov.groupby("sample_id").split.nunique().max() == 1
    assert (prov.source == "self-instruct-user-oriented").sum() == 300
    assert "![source](charts/source.png)" in (tmp_path / "a/datasheet.md").read_text()
    exports = demo.query_df("SELECT * FROM mixture_exports WHERE run_id = ?", [a.run_id])
    assert exports.n_samples[0] == total


def test_other_seed_changes_selection(demo: Store) -> None:
    r1 = recipe("seed: 1\nsources: [{dataset: gsm8k-train, count: 50}]")
    r2 = recipe("seed: 2\nsources: [{dataset: gsm8k-train, count: 50}]")
    assert r1.fingerprint() != r2.fingerprint()
    assert _selected_ids(demo, preview(demo, r1)) != _selected_ids(demo, preview(demo, r2))


def test_cli_preview_and_mix(demo: Store, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from core.cli.main import main

    path = tmp_path / "r.yaml"
    path.write_text("name: cli\nsources: [{dataset: gsm8k-train, count: 20}]\nexport: {formats: [openai]}\n")
    assert main(["--db", str(demo.path), "mix-preview", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == 20
    assert main(["--db", str(demo.path), "mix", str(path), "--out", str(tmp_path / "o"), "--format", "openai,parquet"]) == 0
    assert (tmp_path / "o/parquet/train.parquet").exists() and (tmp_path / "o/openai/train.jsonl").exists()
    assert main(["--db", str(demo.path), "mix", str(path), "--out", str(tmp_path / "o")]) == 2  # exists
    assert "already exists" in capsys.readouterr().err


def test_synthetic_share_past_30_percent_stays_a_warning() -> None:
    """Du et al. 2025 measured Pythia 410M-12B: a warning citing it, never a refusal (no 'error')."""
    from core.mixture.warnings import synthetic_warning

    sources = pd.DataFrame({"synthetic": [True, False], "n_selected": [45, 55]})
    (warning,) = synthetic_warning(sources, 100)
    assert warning.severity == "warning" and "45.0%" in warning.message and "past that" in warning.message
    assert "410M-12B" in warning.message and "more robust" in warning.message
