"""Duplicate detection on real GSM8K training data with planted exact and near copies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasketch import MinHash

import core.cli.main as cli
import core.dedup.groups as dedup
from core import textnorm
from core.ingest.importer import ingest_records
from core.store.database import Store

N_BASE = 300


def test_normalize_python_and_sql_agree(store: Store) -> None:
    texts = ["Héllo, WORLD — ß İ ǅ! ﬁne ＡＢＣ１２３", "ÅNGSTRÖM\u00a0x\u2028y_z", "日本語のテキスト、です。",
             "  Tabs\tand\nnewlines!!  ", ""]
    assert textnorm.normalize("  The QUICK, brown-fox!! ") == "the quick brown fox"
    assert textnorm.normalize("ＡＢＣ ﬁ") == "abc fi"  # NFKC folds full-width letters and ligatures
    with store.connect() as con:
        textnorm.register_sql(con)
        for text in texts:
            assert con.execute(f"SELECT {textnorm.normalize_sql('?')}", [text]).fetchone()[0] == textnorm.normalize(text)


def test_signatures_equal_datasketch() -> None:
    hasher = dedup.MinHasher(num_perm=64, shingle=3)
    text = "The quick brown fox jumps over the lazy dog, again and again."
    sigs = hasher.signatures([text, "", "two words"])
    shingles = hasher.shingle_hash32(textnorm.ngram_hashes(textnorm.tokens(text), 3))
    reference = MinHash(num_perm=64, seed=1, scheme="affine32", hashfunc=lambda x: x)
    reference.update_batch([int(x) for x in shingles])
    assert np.array_equal(reference.hashvalues, sigs[0])
    assert (sigs[1] == np.iinfo(np.uint32).max).all()  # empty text matches nothing
    assert (sigs[2] != np.iinfo(np.uint32).max).any()  # a text shorter than a shingle still gets one


@pytest.fixture(scope="module")
def planted(tmp_path_factory, shared: Path) -> tuple[Store, dict]:
    """Real GSM8K items + 10 exact copies (case/whitespace/punctuation changed) + 10 near copies (2 words changed)."""
    with (shared / "gsm8k" / "train.jsonl").open() as fh:
        rows = [json.loads(line) for _, line in zip(range(N_BASE), fh, strict=False)]
    records = [{"question": r["question"], "answer": r["answer"]} for r in rows]
    rng = random.Random(7)
    exact, near = [], []
    for i in range(10):
        r = dict(records[i])
        r["question"] = "  " + r["question"].upper().replace(" ", "   ") + " !!"
        records.append(r)
        exact.append((i, len(records) - 1))
    for i in range(10, 20):
        r = dict(records[i])
        words = r["question"].split()
        for k in rng.sample(range(len(words)), 2):
            words[k] = "zebra"
        r["question"] = " ".join(words)
        r["answer"] = r["answer"] + " (checked twice, with a much longer explanation)"
        records.append(r)
        near.append((i, len(records) - 1))
    store = Store(tmp_path_factory.mktemp("dedup") / "store.duckdb", busy_timeout=5)
    ingest_records(store, records, name="train", shape="qa")
    ingest_records(store, [records[30], records[31]], name="other", shape="qa")  # cross-dataset copies
    ids = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = 'train' "
                         "ORDER BY row_idx")["id"].tolist()
    return store, {"ids": ids, "exact": exact, "near": near}


def _grouped(store: Store, run_id: int) -> dict[int, int]:
    g = dedup.duplicate_groups(store, run_id)
    return dict(zip(g.sample_id, g.group_id, strict=True))


def _found(groups: dict[int, int], ids: list[int], pairs: list[tuple[int, int]]) -> int:
    return sum(ids[a] in groups and groups.get(ids[a]) == groups.get(ids[b]) for a, b in pairs)


def test_exact_duplicates(planted) -> None:
    store, p = planted
    res = dedup.find_duplicates(store, ["train"], method="exact")
    groups = _grouped(store, res.run_id)
    assert _found(groups, p["ids"], p["exact"]) == 10
    assert _found(groups, p["ids"], p["near"]) == 0
    drop = dedup.duplicate_ids_to_drop(store, res.run_id)
    assert drop == {p["ids"][b] for _, b in p["exact"]}  # "first" keeps the original
    assert res.n_to_drop == len(drop) == res.n_in_groups - res.n_groups


def test_near_duplicates_and_longest_rule(planted) -> None:
    store, p = planted
    res = dedup.find_duplicates(store, ["train"], method="near", threshold=0.6, num_perm=128, shingle=3,
                                keep="longest")
    groups = _grouped(store, res.run_id)
    assert _found(groups, p["ids"], p["near"]) == 10
    assert _found(groups, p["ids"], p["exact"]) == 10
    planted_ids = {p["ids"][i] for pair in p["exact"] + p["near"] for i in pair}
    stray = set(groups) - planted_ids
    assert len(stray) <= 4, f"unexpected groups among real GSM8K items: {stray}"
    members = dedup.duplicate_groups(store, res.run_id)
    reps = set(members[members.is_representative].sample_id)
    assert {p["ids"][b] for _, b in p["near"]} <= reps  # the near copies carry the longer answers
    assert members.groupby("group_id").is_representative.sum().eq(1).all()
    run = store.runs().set_index("run_id").loc[res.run_id]
    assert run.kind == "dedup" and json.loads(run.params)["num_perm"] == 128


def test_across_all_datasets(planted) -> None:
    store, p = planted
    res = dedup.find_duplicates(store, None, method="exact")
    g = dedup.duplicate_groups(store, res.run_id)
    cross = g.groupby("group_id").dataset.nunique()
    assert (cross == 2).sum() == 2
    within = dedup.find_duplicates(store, ["other"], method="exact")
    assert within.n_groups == 0


def test_quality_rule_uses_hook_or_falls_back(planted) -> None:
    store, p = planted
    res = dedup.find_duplicates(store, ["train"], method="exact", keep="quality")
    assert res.keep_used == "first"
    copies = {p["ids"][b] for _, b in p["exact"]}

    def prefer_copies(_store: Store, ids: list[int]) -> pd.Series:
        return pd.Series({i: (5.0 if i in copies else 1.0) for i in ids})

    dedup.QUALITY_SOURCES.append(prefer_copies)
    try:
        res = dedup.find_duplicates(store, ["train"], method="exact", keep="quality")
    finally:
        dedup.QUALITY_SOURCES.remove(prefer_copies)
    assert res.keep_used == "quality"
    assert dedup.duplicate_ids_to_drop(store, res.run_id) == {p["ids"][a] for a, _ in p["exact"]}


def test_semantic_pairs_on_vectors() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 32)).astype(np.float32)
    near = base[:5] + 0.01 * rng.normal(size=(5, 32)).astype(np.float32)
    ids = np.arange(1000, 1205)
    pairs = dedup.semantic_pairs(ids, np.vstack([base, near]), threshold=0.95, n_clusters=4)
    found = {(int(a), int(b)) for a, b in zip(pairs.a, pairs.b, strict=True)}
    assert {(1000 + i, 1200 + i) for i in range(5)} <= {tuple(sorted(x)) for x in found}
    assert len(found) == 5


def _angles(degrees: list[float]) -> np.ndarray:
    r = np.deg2rad(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


def test_semdedup_follows_the_paper_on_vectors_by_hand() -> None:
    """Abbas et al. 2023, Algorithm 1, by hand on 2-D unit vectors in one cluster (k = 1).

    Angles a 0, b 1, c 2, d 40, e -45 degrees. Centroid: mean of the unit vectors = (4.47239, -0.01197),
    at -0.153 degrees, so the distances to it are a 0.15, b 1.15, c 2.15, d 40.2, e 44.8 degrees and the
    order (farthest first) is e, d, c, b, a. eps = 0.0002: removed above cosine 0.9998; cos 1 deg = 0.99985
    (a duplicate), cos 2 deg = 0.99939 (not). e, d, c have no similar earlier point: kept. b ~ c: removed.
    a ~ b (b earlier, though removed; a !~ c): removed. Kept of {a, b, c}: c, the farthest from the centroid,
    though a has the lowest sample id."""
    ids = np.array([12, 13, 14, 11, 10])  # a, b, c, d, e
    vectors = _angles([0, 1, 2, 40, -45])
    x = vectors.sum(axis=0)
    assert np.degrees(np.arctan2(x[1], x[0])) == pytest.approx(-0.153, abs=1e-3)
    got = dedup.semdedup(ids, vectors, eps=0.0002, n_clusters=1)
    assert got.sample_id.tolist() == [12, 13, 14] and got.group_id.nunique() == 1
    assert got.set_index("sample_id").is_representative.to_dict() == {12: False, 13: False, 14: True}
    assert got.set_index("sample_id").similarity[12] == pytest.approx(np.cos(np.deg2rad(1)), abs=1e-6)
    # Compared across block boundaries: blocks of 2 give the same answer as one block.
    pd.testing.assert_frame_equal(dedup.semdedup(ids, vectors, eps=0.0002, n_clusters=1, chunk=2), got)
    # No chaining into groups: p -1, q 0, r 1, s 0.4 degrees; centroid near 0.1, so the order is p (1.1 from
    # it), r (0.9), s (0.3), q (0.1). Duplicates below 1.2 degrees: p !~ r (2) so both are kept; s ~ r: gone;
    # q ~ p: gone. Cosine groups chain p ~ q ~ r ~ s into one group and keep one of the four.
    vec = _angles([-1.0, 0.0, 1.0, 0.4])
    out = dedup.semdedup(np.array([1, 2, 3, 4]), vec, eps=1 - np.cos(np.deg2rad(1.2)), n_clusters=1)
    assert set(out.sample_id[~out.is_representative]) == {2, 4}
    groups = dedup.groups_from_pairs(dedup.semantic_pairs(np.array([1, 2, 3, 4]), vec,
                                                          threshold=np.cos(np.deg2rad(1.2)), n_clusters=1))
    assert groups.group_id.nunique() == 1 and len(groups) == 4


def test_cosine_groups_compare_across_blocks() -> None:
    vectors = _angles([0, 50, 100, 0.5])  # rows 0 and 3 are near, in different blocks of 2
    pairs = dedup.semantic_pairs(np.array([1, 2, 3, 4]), vectors, threshold=0.99, n_clusters=1, max_cluster=2)
    assert [(int(a), int(b)) for a, b in zip(pairs.a, pairs.b, strict=True)] == [(1, 4)]


def test_semantic_on_stored_embeddings(tmp_path, shared: Path) -> None:
    """SemDeDup end to end with the bundled model: a reworded question groups with its original."""
    with (shared / "gsm8k" / "test.jsonl").open() as fh:
        rows = [json.loads(line)["question"] for _, line in zip(range(40), fh, strict=False)]
    reworded = "A robe needs 2 bolts of blue fiber and half that amount of white fiber. How many bolts in total?"
    store = Store(tmp_path / "s.duckdb", busy_timeout=5)
    ingest_records(store, [{"text": t} for t in rows + [reworded]], name="q", shape="text")
    res = dedup.find_duplicates(store, ["q"], method="semantic", threshold=0.9, n_clusters=3)
    g = dedup.duplicate_groups(store, res.run_id)
    ids = store.query_df("SELECT id FROM samples ORDER BY row_idx")["id"].tolist()
    groups = dict(zip(g.sample_id, g.group_id, strict=True))
    assert ids[1] in groups and groups[ids[1]] == groups.get(ids[-1])
    assert json.loads(store.runs().set_index("run_id").loc[res.run_id].params)["embed_run_id"] is not None
    # SemDeDup on the same (cached) vectors: the reworded copy or its original goes, the other stays.
    sem = dedup.find_duplicates(store, ["q"], method="semdedup", threshold=0.9, n_clusters=3)
    g = dedup.duplicate_groups(store, sem.run_id).set_index("sample_id")
    assert {ids[1], ids[-1]} <= set(g.index) and g.group_id[ids[1]] == g.group_id[ids[-1]]
    assert g.is_representative[ids[1]] != g.is_representative[ids[-1]]
    params = json.loads(store.runs().set_index("run_id").loc[sem.run_id].params)
    assert params["eps"] == pytest.approx(0.1) and sem.keep_used == dedup.SEMDEDUP_KEEP
    assert "Abbas et al. 2023" in params["method_note"]
    with pytest.raises(ValueError, match="farthest from"):
        dedup.find_duplicates(store, ["q"], method="semdedup", keep="longest")


def test_diff_rendering_escapes_text() -> None:
    a, b = dedup.diff_markers("the cat sat", "the dog sat")
    assert a == "the [-cat-] sat" and b == "the {+dog+} sat"
    left, right = dedup.diff_html("<script>alert(1)</script> same", "<img src=x onerror=alert(1)> same")
    assert "<script>" not in left and "&lt;script&gt;" in left
    assert "<img" not in right and "&lt;img" in right


def test_cli_dedup(planted, capsys) -> None:
    store, _ = planted
    rc = cli.main(["--db", str(store.path), "dedup", "--dataset", "train", "--method", "near", "--num-perm", "64",
                   "--shingle", "2", "--threshold", "0.5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["method"] == "near" and out["n_groups"] >= 20
    rc = cli.main(["--db", str(store.path), "dedup", "--method", "exact"])
    assert rc == 2 and "--all" in capsys.readouterr().err
