"""Several labels per sample (crowd votes, several annotators): cleanlab's multi-annotator consensus
(CROWDLAB: annotators' labels weighed with a classifier's out-of-fold probabilities) and per-annotator
quality."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

QUALITY_FLAG = 0.5  # a consensus quality below this is flagged even where it agrees with the given label


@dataclass
class MultiAnnotatorResult:
    table: pd.DataFrame       # per sample: consensus_label, multiannotator_score, annotator_agreement, flag
    annotators: pd.DataFrame  # per annotator: annotator_quality, agreement_with_consensus, n_labels, ...


def multiannotator(annotations: pd.DataFrame, pred_probs: np.ndarray, given: np.ndarray) -> MultiAnnotatorResult:
    """CROWDLAB consensus per sample (rows aligned with `given`); samples without any annotation get NaN.

    The flag: the consensus disagrees with the given label, or its quality is below QUALITY_FLAG.
    """
    from cleanlab.multiannotator import get_label_quality_multiannotator

    n = len(given)
    has = annotations.notna().any(axis=1).to_numpy()
    labels = annotations.loc[has]
    labels = labels.loc[:, labels.notna().any(axis=0)]
    table = pd.DataFrame({"consensus_label": np.full(n, -1), "multiannotator_score": np.full(n, np.nan),
                          "annotator_agreement": np.full(n, np.nan), "multiannotator_flag": np.zeros(n, bool)})
    if labels.empty:
        return MultiAnnotatorResult(table, pd.DataFrame())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = get_label_quality_multiannotator(labels.reset_index(drop=True), pred_probs[has], verbose=False,
                                               return_detailed_quality=False)
    quality = out["label_quality"]
    consensus = quality["consensus_label"].to_numpy(int)
    score = quality["consensus_quality_score"].to_numpy(float)
    table.loc[has, "consensus_label"] = consensus
    table.loc[has, "multiannotator_score"] = score
    table.loc[has, "annotator_agreement"] = quality["annotator_agreement"].to_numpy(float)
    table.loc[has, "multiannotator_flag"] = (consensus != given[has]) | (score < QUALITY_FLAG)
    stats = out["annotator_stats"].copy()
    stats.index.name = "annotator"
    stats["n_labels"] = labels.notna().sum(axis=0).reindex(stats.index).to_numpy()
    return MultiAnnotatorResult(table, stats.reset_index())
