"""Selection within a quota: orders, prefixes, k-means round-robin, kMQ, and a real embedding run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.mixture import select as sel
from core.mixture.build import preview
from core.mixture.recipe import load_recipe
from core.store.database import Store


def test_take_counts_budgets_and_repeats() -> None:
    order = np.array([2, 0, 1])
    tokens = np.array([10, 20, 30])
    picks, copies = sel.take(order, tokens, 2, None, False)
    assert picks.tolist() == [2, 0] and copies.tolist() == [0, 0]
    picks, copies = sel.take(order, tokens, 7, None, True)
    assert picks.tolist() == [2, 0, 1, 2, 0, 1, 2] and copies.tolist() == [0, 0, 0, 1, 1, 1, 2]
    picks, _ = sel.take(order, tokens, None, 45, False)  # 30 + 10 fits, + 20 would not
    assert picks.tolist() == [2, 0]
    picks, copies = sel.take(order, tokens, None, 130, True)  # two full passes (120) + 10
    assert len(picks) == 6 and copies.max() == 1


def test_diverse_order_takes_an_equal_quota_per_cluster() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 10
    sizes = [100, 40, 15, 5]
    vectors = np.vstack([c + rng.normal(size=(n, 8)) for c, n in zip(centres, sizes, strict=True)])
    order, labels = sel.order_diverse(vectors, 4, sel.cell_rng(1, 0, "*"), 1)
    first = labels[order[:20]]
    assert sorted(np.bincount(first).tolist()) == [5, 5, 5, 5]
    # A cluster that runs out leaves its share to the others.
    assert np.bincount(labels[order[:40]]).min() == 5
    scores = np.concatenate([np.arange(n, dtype=float) for n in sizes])
    kmq, _ = sel.order_diverse(vectors, 4, sel.cell_rng(1, 0, "*"), 1, scores, temperature=1.0)
    assert scores[kmq[:4]].mean() > scores.mean()  # softmax of quality favours high scores


def test_top_order_and_determinism() -> None:
    scores = np.array([1.0, np.nan, 3.0, 3.0, 2.0])
    assert sel.order_top(scores).tolist() == [2, 3, 4, 0, 1]
    a = sel.order_random(100, sel.cell_rng(5, 1, "math"))
    b = sel.order_random(100, sel.cell_rng(5, 1, "math"))
    c = sel.order_random(100, sel.cell_rng(5, 1, "code"))
    assert a.tolist() == b.tolist() != c.tolist()


def test_diverse_selection_on_real_embeddings(store: Store, shared: Path) -> None:
    from core.ingest.demo import load_demo
    from core.maps.embed import embed

    load_demo(store, shared, names=["self-instruct-user-oriented"])
    r = load_recipe("name: d\nseed: 4\nsources: [{dataset: self-instruct-user-oriented, count: 40}]\n"
                    "selection: {method: kmq, score: n_tokens, clusters: 8}\n")
    with pytest.raises(ValueError, match="embed the dataset first"):
        preview(store, r)
    embed(store, "self-instruct-user-oriented")
    comp = preview(store, r)
    assert comp.n_selected == 40 and "k-means k=8" in comp.selection_notes[0]
    again = preview(store, r)
    assert again.composition.equals(comp.composition)
