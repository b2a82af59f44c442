"""Any tag from labelled data: a logistic-regression classifier on sentence embeddings (Lilac-style
concepts), trained from hand labels (core.labels.labelling.current_labels) or any labelled metadata column.

Training is a recorded run (kind 'tag_model') whose coefficients live in `tag_models` with the
stratified k-fold cross-validated accuracy, so a tag it makes says how good it measured. Applying it
is the offline backend's job (`ClassifierTagger`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.store.database import Store
from core.tags.taggers import vectors
from core.tags.taggers.base import INSTRUCTION_CHARS, Tagger, load_samples, row
from core.tags.vocabulary import VOCABULARY

MIN_PER_CLASS = 2


@dataclass
class TagModel:
    run_id: int
    kind: str
    tag: str
    embed_model: str
    text_field: str
    classes: list[str]
    coef: np.ndarray       # n_rows x n_features
    intercept: np.ndarray  # n_rows
    metrics: dict[str, Any]

    def predict(self, vecs: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(class per row, probability of that class)."""
        logits = vecs @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # binary: sklearn keeps one row for the second class
            p1 = 1 / (1 + np.exp(-logits[:, 0]))
            prob = np.stack([1 - p1, p1], axis=1)
        else:
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob = z / z.sum(axis=1, keepdims=True)
        best = prob.argmax(axis=1)
        return [self.classes[i] for i in best], prob[np.arange(len(best)), best]


def labels_from_meta(store: Store, dataset: str, column: str) -> pd.Series:
    """A labelled metadata column as labels, indexed by sample id (empty values dropped)."""
    df = store.query_df(
        "SELECT s.id AS sample_id, json_extract_string(s.meta, ?) AS label FROM samples s "
        "JOIN datasets d USING (dataset_id) WHERE d.name = ?", ["$." + column.replace('"', ""), dataset])
    df = df[df["label"].notna() & (df["label"] != "")]
    return df.set_index("sample_id")["label"].astype(str)


def labels_from_hand(store: Store, schema: str, field: str, dataset: str | None = None) -> pd.Series:
    """Consensus hand labels (core.labels.labelling), indexed by sample id; ties and missing values dropped."""
    from core.labels.labelling import current_labels

    df = current_labels(store, schema, dataset)
    if df.empty or field not in df.columns:
        return pd.Series(dtype=str)
    return df[field].dropna().map(lambda v: v if isinstance(v, str) else json.dumps(v)).astype(str)


def _fit(x: np.ndarray, y: np.ndarray, c: float, folds: int, seed: int) -> tuple[Any, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    counts = pd.Series(y).value_counts()
    k = int(min(folds, counts.min()))
    clf = LogisticRegression(C=c, max_iter=2000)
    metrics: dict[str, Any] = {"n_train": int(len(y)), "class_counts": {str(a): int(b) for a, b in counts.items()},
                               "majority_baseline": float(counts.max() / len(y))}
    if k >= 2:
        scores = cross_val_score(clf, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
        metrics |= {"cv_accuracy": float(scores.mean()), "cv_std": float(scores.std()), "cv_folds": k}
    else:
        metrics |= {"cv_accuracy": None, "cv_note": "too few examples per class to cross-validate"}
    clf.fit(x, y)
    return clf, metrics


def train_classifier(store: Store, labels: pd.Series, *, tag: str, source: str, embed_model: str | None = None,
                     c: float = 1.0, folds: int = 5, seed: int = 0) -> TagModel:
    """Train a classifier of `tag` on the first-user-turn embeddings of the labelled samples.

    `labels`: values indexed by sample id; `source` says where they came from (kept in the run)."""
    labels = labels.dropna()
    counts = labels.value_counts()
    labels = labels[labels.isin(counts[counts >= MIN_PER_CLASS].index)]
    if labels.nunique() < 2:
        raise ValueError(f"need at least two classes with {MIN_PER_CLASS}+ examples each to train {tag!r}")
    vocab = VOCABULARY.get(tag)
    if vocab is not None and not set(labels.unique()) <= set(vocab):
        raise ValueError(f"labels for {tag!r} must come from its vocabulary {vocab}; got "
                         f"{sorted(set(labels.unique()) - set(vocab))}")
    params = {"tag": tag, "source": source, "embed_model": vectors.model_name(embed_model), "C": c,
              "folds": folds, "seed": seed, "n_labels": int(len(labels))}
    with store.run("tag_model", params, model=vectors.model_name(embed_model), sample_filter=source) as run:
        samples = load_samples(store, labels.index.tolist())
        x = vectors.encode([t[:INSTRUCTION_CHARS] for t in samples["instruction"]], embed_model, store)
        y = labels.loc[samples["sample_id"]].to_numpy()
        clf, metrics = _fit(x, y, c, folds, seed)
        metrics["measured_on"] = f"{metrics.get('cv_folds', 0)}-fold stratified cross-validation on {source}"
        model = TagModel(run.run_id, "classifier", tag, vectors.model_name(embed_model), "instruction",
                         [str(k) for k in clf.classes_], clf.coef_, clf.intercept_, metrics)
        save_model(store, model)
        run.set_metrics(metrics)
        run.finish(len(y))
    return model


def save_model(store: Store, model: TagModel) -> None:
    with store.transaction() as con:
        con.execute("INSERT INTO tag_models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [model.run_id, model.kind, model.tag, model.embed_model, model.text_field, model.classes,
                     model.coef.reshape(-1).astype(float).tolist(), model.intercept.astype(float).tolist(),
                     int(model.coef.shape[1]), json.dumps(model.metrics, default=float)])


def load_model(store: Store, run_id: int) -> TagModel:
    df = store.query_df("SELECT * FROM tag_models WHERE run_id = ?", [int(run_id)])
    if df.empty:
        raise KeyError(f"no trained tag model with run id {run_id}")
    r = df.iloc[0]
    coef = np.asarray(r["coef"], dtype=np.float32).reshape(-1, int(r["n_features"]))
    classes = [] if r["classes"] is None else list(r["classes"])
    intercept = np.zeros(len(coef)) if r["intercept"] is None else np.asarray(r["intercept"], dtype=np.float32)
    return TagModel(int(r["run_id"]), r["kind"], r["tag"], r["embed_model"], r["text_field"], classes, coef,
                    intercept, json.loads(r["metrics"]) if r["metrics"] else {})


def list_models(store: Store, kind: str | None = None) -> pd.DataFrame:
    """Trained tag models, newest first (run id, kind, tag, embedding model, metrics, status)."""
    where = "WHERE m.kind = ?" if kind else ""
    df = store.query_df(f"SELECT m.run_id, m.kind, m.tag, m.embed_model, m.classes, m.metrics, r.status, "
                        f"r.sample_filter AS source, r.started_at FROM tag_models m JOIN runs r USING (run_id) {where} "
                        "ORDER BY m.run_id DESC", [kind] if kind else [])
    df["metrics"] = df["metrics"].map(lambda v: json.loads(v) if v else {})
    return df


class ClassifierTagger(Tagger):
    """Applies a trained classifier: value = predicted class, score = its probability."""

    def __init__(self, model: TagModel) -> None:
        self.model = model
        self.tags = [model.tag]
        cv = model.metrics.get("cv_accuracy")
        self.method = (f"logistic regression on {model.embed_model} embeddings (tag model run {model.run_id}, "
                       f"cv accuracy {cv:.3f})" if cv is not None else
                       f"logistic regression on {model.embed_model} embeddings (tag model run {model.run_id})")
        self.store: Store | None = None

    def prepare(self, store: Store, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        self.store = store
        return {self.model.tag: {"method": self.method, "accuracy": self.model.metrics.get("cv_accuracy"),
                                 **self.model.metrics}}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        vecs = vectors.encode([t[:INSTRUCTION_CHARS] for t in batch["instruction"]], self.model.embed_model,
                              self.store)
        labels, prob = self.model.predict(vecs)
        return [row(sid, self.model.tag, value=lab, score=p, method=self.method)
                for sid, lab, p in zip(batch["sample_id"], labels, prob, strict=True)]
