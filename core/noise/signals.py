"""Signal provider for the noise methods (core/signals): per method its score and flag (and the rescaler's
weight, cleanlab's outlier and near-duplicate checks, cartography's region), plus the combined score and flag
and the given and predicted labels, from the newest finished noise run of each dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.noise.config import FLAG_COLUMNS, SCORE_COLUMNS
from core.signals.registry import Bound, Signal

_READ_SCORE = "low = probably mislabelled"
_COMBINED = {  # name -> (noise_scores column, kind, description, how to read)
    "noise.combined.score": ("label_score", "number", "the combined label-quality score of every method run",
                             _READ_SCORE),
    "noise.combined.flag": ("is_label_issue", "bool", "flagged as a label issue by the combined rule",
                            "true = probably mislabelled"),
    "noise.n_flags": ("n_flags", "number", "how many noise methods flag the sample", "higher = more suspect"),
    "noise.given_label": ("given_label", "category", "the label the noise run checked", "the class as given"),
    "noise.predicted_label": ("predicted_label", "category", "the class the out-of-fold classifier predicts",
                              "differs from the given label where the model disagrees"),
}
# Columns a method writes beside its score and flag: Datalab's outlier and near-duplicate checks run with
# cleanlab (on the same k-NN graph), cartography names a region.
_WITH_METHOD = {
    "cleanlab": {
        "noise.outlier.score": ("outlier_score", "number", "Datalab's outlier score on the embedding's k-NN graph",
                                "low = atypical of its neighbourhood"),
        "noise.outlier.flag": ("outlier_flag", "bool", "flagged as an outlier by Datalab", "true = an outlier"),
        "noise.near_duplicate.score": ("near_duplicate_score", "number",
                                       "Datalab's near-duplicate score on the embedding's k-NN graph",
                                       "low = a near duplicate of another sample"),
        "noise.near_duplicate.flag": ("near_duplicate_flag", "bool", "flagged as a near duplicate by Datalab",
                                      "true = a near duplicate"),
    },
    "cartography": {
        "noise.cartography.region": ("cartography_region", "category",
                                     "dataset cartography region from confidence and variability over training",
                                     "easy, ambiguous or hard (hard = probably mislabelled)"),
    },
}


def _runs(con: Any, dataset_ids: Sequence[int], run: int | None) -> list[int]:
    if run is not None:
        return [run]
    rows = con.execute("SELECT max(n.run_id) FROM noise_runs n JOIN runs r USING (run_id) WHERE r.status = 'finished' "
                       "AND list_contains(?::INTEGER[], n.dataset_id) GROUP BY n.dataset_id ORDER BY 1",
                       [list(dataset_ids)]).fetchall()
    return [int(r[0]) for r in rows]


def _signal(name: str, column: str, kind: str, description: str, read: str) -> Signal:
    def build(con: Any, dataset_ids: Sequence[int], run: int | None) -> Bound:
        runs = _runs(con, dataset_ids, run)
        # `column` comes from the fixed tables in core/noise/config.py, never from a user.
        return Bound(f'SELECT sample_id, "{column}" AS value FROM noise_scores '
                     "WHERE list_contains(?::INTEGER[], run_id)", [runs], tuple(runs))

    return Signal(name, kind, f"{description} (core/noise, assay noise; newest finished noise run of the dataset)",
                  read, build, family="noise")


def signals(con: Any, dataset_ids: Sequence[int] | None) -> list[Signal]:
    """One score and one flag per method run on these datasets (the rescaler's score is its weight)."""
    where = "" if dataset_ids is None else " AND list_contains(?::INTEGER[], n.dataset_id)"
    params = [] if dataset_ids is None else [list(dataset_ids)]
    rows = con.execute("SELECT DISTINCT unnest(n.methods) FROM noise_runs n JOIN runs r USING (run_id) "
                       f"WHERE r.status = 'finished'{where} ORDER BY 1", params).fetchall()
    if not rows:
        return []
    out = [_signal(name, *spec) for name, spec in _COMBINED.items()]
    for (method,) in rows:
        if method in SCORE_COLUMNS:
            out.append(_signal(f"noise.{method}.score", SCORE_COLUMNS[method], "number",
                               f"{method}: its per-sample label-quality score", _READ_SCORE))
        if method in FLAG_COLUMNS:
            out.append(_signal(f"noise.{method}.flag", FLAG_COLUMNS[method], "bool",
                               f"{method}: flagged as a likely label error", "true = probably mislabelled"))
        out += [_signal(name, *spec) for name, spec in _WITH_METHOD.get(method, {}).items()]
    if any(m == "rescaler" for (m,) in rows):
        out.append(_signal("noise.rescaler.weight", "rescaler_weight", "number",
                           "meta loss rescaling: the sample's learned loss weight (mean over the second half of "
                           "training)", "in (0, 1); low = down-weighted as noisy"))
    return out
