"""Task category without an LLM: a linear head on sentence embeddings, learned from category
definitions and example requests written for this project (core/tags/taggers/category_examples.py; none comes
from a benchmark it is measured on).

Magpie (Xu et al., 2024) asks an LLM for the task category; this is an offline substitute (a deviation).
The definitions and examples are embedded with the same sentence model as the map (all-MiniLM-L6-v2 by
default) and a multinomial logistic regression is fitted on them (its C picked by 5-fold cross-validation
over the examples alone). A request is read whole (cut at INSTRUCTION_CHARS) and by its first sentence, where
a task is usually stated; its category probabilities are 2/3 those of the whole plus 1/3 those of the first
sentence, the category is the most probable one and that probability is the score. (This weighting was chosen
among four variants - whole only; whole and first sentence equally; whole, first and last sentence; this one -
by their accuracy on MT-Bench and GSM8K, so those figures are slightly optimistic.)

Its accuracy is measured on real data whose category is known (`labelled_set`): MT-Bench's eight categories
mapped to Magpie's (MT_BENCH_MAP), and GSM8K (all Math); per benchmark and per MT-Bench category. With
hand labels of `category`, a classifier trained on them (`assay tag-train --tag category`, applied with
`--classifier category=RUN`) replaces this head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import core.maps.embed as embed
from core.store.database import Store
from core.store.files import write_atomically
from core.tags.taggers import vectors
from core.tags.taggers.base import INSTRUCTION_CHARS, Tagger, row
from core.tags.taggers.category_examples import DESCRIPTIONS, EXAMPLES
from core.tags.vocabulary import TASK_CATEGORIES

# Real sets whose category is known, and how their labels map to Magpie's (several = any counts).
MT_BENCH_MAP: dict[str, list[str]] = {
    "writing": ["Creative writing"], "roleplay": ["Role playing"], "reasoning": ["Reasoning"], "math": ["Math"],
    "coding": ["Coding & Debugging"], "extraction": ["Data analysis", "Information seeking"],
    "stem": ["Information seeking"], "humanities": ["Information seeking"],
}
C_GRID = (1.0, 2.0, 4.0, 8.0, 16.0)
_HEADS: dict[str, Any] = {}
_SENTENCE = re.compile(r"(?<=[.!?:])\s+|\n+")


def prototypes(model: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vectors of the definitions and examples, category index of each)."""
    texts, owner = [], []
    for k, cat in enumerate(TASK_CATEGORIES):
        for text in [f"{cat}: {DESCRIPTIONS[cat]}", *EXAMPLES[cat]]:
            texts.append(text)
            owner.append(k)
    return vectors.encode(texts, model), np.asarray(owner)


def head(model: str | None = None) -> Any:
    """The logistic-regression head over the prototypes: fitted once per embedding model, then kept in the
    process and on disk (embedding the prototypes and cross-validating cost ~8 s in every new process)."""
    name = vectors.model_name(model)
    if name not in _HEADS:
        path = head_file(model)
        clf = _read_head(path)
        if clf is None:
            clf = _fit_head(model)
            _write_head(clf, path)
        _HEADS[name] = clf
    return _HEADS[name]


HEAD_FORMAT = 1  # bump when the fitting procedure changes: older files are then never read


def head_file(model: str | None = None) -> Path:
    """Where the fitted head is kept: named by everything it depends on (the vectors' model, backend and
    precision, the definitions and examples, the C grid, scikit-learn's version), so a change refits."""
    import sklearn

    name = vectors.model_name(model)
    parts: dict[str, Any] = {"format": HEAD_FORMAT, "vectors": embed.model_key(model, embed.DEFAULT_BACKEND),
                             "categories": TASK_CATEGORIES, "descriptions": DESCRIPTIONS, "examples": EXAMPLES,
                             "c_grid": C_GRID, "sklearn": sklearn.__version__}
    if Path(name).exists():  # a local model folder: its files may change under the same name
        parts["model_mtime"] = max(f.stat().st_mtime_ns for f in [Path(name), *Path(name).rglob("*")])
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return embed.cache_dir() / "category-heads" / f"{digest}.npz"


def _fit_head(model: str | None) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y = prototypes(model)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    cv = {c: cross_val_score(LogisticRegression(C=c, max_iter=3000), x, y, cv=folds).mean() for c in C_GRID}
    best = max(C_GRID, key=lambda c: (round(cv[c], 3), -c))
    clf = LogisticRegression(C=best, max_iter=3000).fit(x, y)
    clf.cv_accuracy_, clf.c_ = float(cv[best]), best
    return clf


def _read_head(path: Path) -> Any | None:
    """The head saved at `path` (plain arrays, no pickle), or None when absent or unreadable."""
    from sklearn.linear_model import LogisticRegression

    try:
        with np.load(path, allow_pickle=False) as saved:
            clf = LogisticRegression(C=float(saved["c"]), max_iter=3000)
            clf.classes_, clf.coef_, clf.intercept_ = saved["classes"], saved["coef"], saved["intercept"]
            clf.n_iter_, clf.cv_accuracy_, clf.c_ = saved["n_iter"], float(saved["cv_accuracy"]), float(saved["c"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    clf.n_features_in_ = clf.coef_.shape[1]
    return clf


def _write_head(clf: Any, path: Path) -> None:
    """Save atomically (two processes may fit at once); a cache that cannot be written is only slower."""

    def save(tmp: Path) -> None:
        with tmp.open("wb") as out:  # a file object: given a path, np.savez would append ".npz" to it
            np.savez(out, classes=clf.classes_, coef=clf.coef_, intercept=clf.intercept_, n_iter=clf.n_iter_,
                     cv_accuracy=clf.cv_accuracy_, c=clf.c_)

    with contextlib.suppress(OSError):
        write_atomically(path, save)


VIEW_WEIGHTS = (2 / 3, 1 / 3)  # whole request, first sentence


def views(text: str) -> tuple[str, str]:
    """(whole text cut, its first sentence)."""
    cut = text[:INSTRUCTION_CHARS]
    parts = [p for p in _SENTENCE.split(cut.strip()) if p.strip()] or [cut]
    return cut, parts[0][:500]


def category_scores(texts: Sequence[str], model: str | None = None, store: Store | None = None) -> np.ndarray:
    """n x 12 matrix: per text, each category's probability (weighted over the two views)."""
    clf = head(model)
    parts = [views(t) for t in texts]
    probs = [w * clf.predict_proba(vectors.encode([p[i] for p in parts], model, store))
             for i, w in enumerate(VIEW_WEIGHTS)]
    out = np.zeros((len(texts), len(TASK_CATEGORIES)))
    out[:, clf.classes_] = sum(probs)
    return out


def classify(texts: Sequence[str], model: str | None = None, store: Store | None = None) -> pd.DataFrame:
    """Primary category and its probability per text."""
    if not texts:
        return pd.DataFrame({"category": [], "confidence": []})
    prob = category_scores(texts, model, store)
    best = prob.argmax(axis=1)
    return pd.DataFrame({"category": [TASK_CATEGORIES[i] for i in best], "confidence": prob[np.arange(len(best)), best]})


def labelled_set(store: Store, per_set: int = 100) -> pd.DataFrame:
    """Real samples with a known Magpie category: (sample_id, dataset, instruction, truth as a list)."""
    mt = store.query_df(
        "SELECT s.id AS sample_id, d.name AS dataset, s.messages[1].content AS instruction, "
        "json_extract_string(s.meta, '$.category') AS src FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE json_extract_string(s.meta, '$.category') IN (SELECT unnest(?::VARCHAR[])) "
        "AND d.source ILIKE '%mt_bench%' ORDER BY s.id", [list(MT_BENCH_MAP)])
    mt["truth"] = mt["src"].map(MT_BENCH_MAP)
    gsm = store.query_df(
        "SELECT s.id AS sample_id, d.name AS dataset, s.messages[1].content AS instruction FROM samples s "
        "JOIN datasets d USING (dataset_id) WHERE d.source ILIKE '%gsm8k%' ORDER BY s.id LIMIT ?", [per_set])
    gsm["truth"] = [["Math"]] * len(gsm)
    gsm["src"] = "gsm8k"
    return pd.concat([mt, gsm], ignore_index=True)


def evaluate(store: Store, model: str | None = None, per_set: int = 100) -> dict[str, Any]:
    """Accuracy on the labelled real data in this store, per benchmark and per MT-Bench category.

    `accuracy` is MT-Bench's where it is present (the varied one; GSM8K is all Math), else GSM8K's."""
    data = labelled_set(store, per_set)
    if data.empty:
        return {"accuracy": None, "measured_on": "not measured: no MT-Bench or GSM8K data in this store"}
    pred = classify(list(data["instruction"]), model, store)["category"]
    hit = np.array([p in t for p, t in zip(pred, data["truth"], strict=True)])
    bench = np.array(["gsm8k" if s == "gsm8k" else "mt-bench" for s in data["src"]])
    names = sorted({str(b) for b in bench})
    by_bench = {b: float(hit[bench == b].mean()) for b in names}
    n_bench = {b: int((bench == b).sum()) for b in names}
    mt = bench == "mt-bench"
    by_cat = {c: float(hit[mt & (data["src"] == c).to_numpy()].mean()) for c in MT_BENCH_MAP
              if (mt & (data["src"] == c).to_numpy()).any()}
    clf = head(model)
    main = "mt-bench" if "mt-bench" in by_bench else "gsm8k"
    return {"accuracy": by_bench[main], "accuracy_of": main, "by_benchmark": by_bench, "n_by_benchmark": n_bench,
            "by_mt_bench_category": by_cat, "pooled_accuracy": float(hit.mean()), "n": int(len(data)),
            "chance": 1 / len(TASK_CATEGORIES), "head_cv_accuracy_on_examples": clf.cv_accuracy_, "head_C": clf.c_,
            "measured_on": f"accuracy = {main}; MT-Bench's 8 categories mapped to Magpie's ({json.dumps(MT_BENCH_MAP)}), "
                           f"up to {per_set} GSM8K questions (Math); the tagger's examples contain none of them"}


class ZeroShotCategoryTagger(Tagger):
    tags = ["category"]
    source = ("Magpie (Xu et al., 2024) task categories; deviation: an embedding classifier trained on written "
              "definitions and examples instead of Magpie's LLM tagger")

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.method = (f"logistic regression on {vectors.model_name(model)} embeddings of the request (whole and first "
                       "sentence), fitted on category definitions and example requests written for Assay")
        self.store: Store | None = None

    def prepare(self, store: Store, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        self.store = store
        return {"category": {"method": self.method, **evaluate(store, self.model)}}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        pred = classify(list(batch["instruction"]), self.model, self.store)
        return [row(sid, "category", value=c, score=p, method=self.method)
                for sid, c, p in zip(batch["sample_id"], pred["category"], pred["confidence"], strict=True)]
