"""Confident learning (cleanlab) on embeddings: out-of-fold probabilities from a logistic regression,
label issues and label-quality scores, and Datalab's outlier and near-duplicate issues on the same
features (sharing one k-NN graph, computed blockwise, so 100k samples stay in minutes on a CPU)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

EXACT_KNN_LIMIT = 50_000  # above this, pynndescent builds the graph


def out_of_fold_probs(X: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int = 5, C: float = 10.0,
                      seed: int = 0, max_iter: int = 300) -> np.ndarray:
    """Predicted probabilities for each sample from a model that never saw it (k-fold).

    C=10: the embeddings are L2-normalised (small norms), so the default C=1 underfits them.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_classes)
    folds = int(max(2, min(folds, counts[counts > 0].min())))
    probs = np.zeros((len(y), n_classes), dtype=np.float64)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        model = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings: the probabilities are good enough
            model.fit(X[train], y[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(X[test])
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)


def confident_learning(y: np.ndarray, pred_probs: np.ndarray) -> pd.DataFrame:
    """cleanlab_score (label quality: low = suspicious), cleanlab_flag (find_label_issues), predicted."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # n_jobs=1: cleanlab would otherwise start its own pool of one process per core (a pool nested in
        # ours, see core/noise/parallel.py), sharing data through fork-only globals that a spawned worker
        # lacks (NameError: pred_probs_by_class). The pruning per class takes milliseconds.
        flags = find_label_issues(labels=y, pred_probs=pred_probs, filter_by="prune_by_noise_rate", n_jobs=1)
    scores = get_label_quality_scores(y, pred_probs, method="self_confidence")
    return pd.DataFrame({"cleanlab_score": scores, "cleanlab_flag": flags.astype(bool),
                         "predicted": pred_probs.argmax(axis=1)})


def knn_csr(X: np.ndarray, k: int = 10) -> csr_matrix:
    """The k-NN graph (self excluded, cosine distances, sorted) in the CSR form Datalab accepts."""
    from core.maps.neighbours import approximate_knn, exact_knn

    k = min(k, len(X) - 1)
    idx, dist = (exact_knn if len(X) <= EXACT_KNN_LIMIT else approximate_knn)(X, k + 1)
    rows = np.arange(len(X))
    keep = idx != rows[:, None]
    # Exact duplicates can displace the point itself from column 0: keep k others per row.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    idx, dist = np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)
    dist = np.maximum(dist, 0.0)
    return csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, len(X) * k + 1, k)), shape=(len(X), len(X)))


def datalab_issues(X: np.ndarray, y: np.ndarray, pred_probs: np.ndarray, *, k: int = 10) -> pd.DataFrame:
    """Datalab outlier and near-duplicate issues: scores (low = more of an issue) and flags."""
    from cleanlab import Datalab

    lab = Datalab(data={"label": y}, label_name="label", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.find_issues(features=X, pred_probs=pred_probs, knn_graph=knn_csr(X, k),
                        issue_types={"outlier": {"k": k}, "near_duplicate": {"k": k}})
    out = lab.get_issues("outlier")[["outlier_score", "is_outlier_issue"]]
    dup = lab.get_issues("near_duplicate")[["near_duplicate_score", "is_near_duplicate_issue"]]
    return pd.DataFrame({
        "outlier_score": out["outlier_score"].to_numpy(), "outlier_flag": out["is_outlier_issue"].to_numpy(bool),
        "near_duplicate_score": dup["near_duplicate_score"].to_numpy(),
        "near_duplicate_flag": dup["is_near_duplicate_issue"].to_numpy(bool),
    })
