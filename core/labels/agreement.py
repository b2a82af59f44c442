"""Agreement between annotators (and with machine tags), and the disagreements to adjudicate.

Cohen's kappa (scikit-learn) for each pair of annotators on the samples both labelled; Krippendorff's
alpha (the `krippendorff` package) over all annotators, which copes with missing labels: nominal for
choices and keep/drop, ordinal for ratings. Multiple-choice values are compared as whole sets.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.labels.labelling import (
    LabelSchema,
    annotator_labels,
    dump_value,
    get_schema,
    load_value,
    suggestions,
)
from core.store.database import Store


def _key(value: Any) -> str:
    return dump_value(value)


def cohen_kappa(a: list[Any], b: list[Any]) -> float:
    """Cohen's kappa of two annotators' labels on the same items (NaN when undefined)."""
    if len(a) == 0:
        return float("nan")
    ka, kb = [_key(v) for v in a], [_key(v) for v in b]
    if len(set(ka) | set(kb)) < 2:
        return 1.0 if ka == kb else float("nan")  # one category only: kappa is 0/0; identical is agreement
    from sklearn.metrics import cohen_kappa_score  # imported here: the CLI starts faster

    return float(cohen_kappa_score(ka, kb))


def reliability_matrix(labels: pd.DataFrame, order: list[Any] | None = None) -> tuple[np.ndarray, list[str], list[int]]:
    """Annotators x samples matrix of value codes (NaN where missing) from long-form labels.

    With `order` (ratings), codes are the values themselves so that ordinal distances are right."""
    annotators = sorted(labels["annotator"].unique())
    samples = sorted(labels["sample_id"].unique())
    keyed = labels.assign(k=labels["value"].map(_key))
    table = keyed.pivot(index="annotator", columns="sample_id", values="k").reindex(index=annotators, columns=samples)
    if order is not None:
        codes = {_key(v): float(i) for i, v in enumerate(order)}
    else:
        # Codes from the labels themselves: the pivoted table holds NaN for missing labels (kept by
        # pandas 3's stack), which cannot be sorted with the string keys.
        codes = {k: float(i) for i, k in enumerate(sorted(set(keyed["k"])))}
    matrix = table.apply(lambda col: col.map(lambda k: codes.get(k, np.nan) if isinstance(k, str) else np.nan))
    return matrix.to_numpy(dtype=float), annotators, [int(s) for s in samples]


def krippendorff_alpha(matrix: np.ndarray, level: str = "nominal") -> float:
    """Krippendorff's alpha of an annotators x units matrix (NaN = missing); NaN when undefined."""
    pairable = (np.sum(~np.isnan(matrix), axis=0) >= 2).sum() if matrix.size else 0
    values = set(matrix[~np.isnan(matrix)].tolist()) if matrix.size else set()
    if pairable == 0 or len(values) < 2:
        return float("nan")
    import krippendorff  # imported here: the CLI starts faster

    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


@dataclass
class FieldAgreement:
    field: str
    level: str
    n_samples: int              # samples with at least two annotators
    alpha: float
    pairs: pd.DataFrame         # annotator_a, annotator_b, n_common, kappa, percent_agreement
    machine: pd.DataFrame       # annotator, n_common, kappa, percent_agreement (vs machine suggestions)
    disagreements: pd.DataFrame  # sample_id, values (annotator -> value), n_annotators
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field, "level": self.level, "n_samples": self.n_samples,
            "alpha": None if np.isnan(self.alpha) else round(self.alpha, 6),
            "pairs": json.loads(self.pairs.to_json(orient="records")),
            "machine": json.loads(self.machine.to_json(orient="records")),
            "n_disagreements": int(len(self.disagreements)),
        }


def _pairs(labels: pd.DataFrame) -> pd.DataFrame:
    wide = labels.assign(k=labels["value"].map(_key)).pivot(index="sample_id", columns="annotator", values="k")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if both.empty:
            continue
        rows.append({"annotator_a": a, "annotator_b": b, "n_common": len(both),
                     "kappa": cohen_kappa(list(both[a]), list(both[b])),
                     "percent_agreement": float((both[a] == both[b]).mean())})
    return pd.DataFrame(rows, columns=["annotator_a", "annotator_b", "n_common", "kappa", "percent_agreement"])


def _machine(labels: pd.DataFrame, machine: pd.DataFrame) -> pd.DataFrame:
    cols = ["annotator", "n_common", "kappa", "percent_agreement"]
    if machine.empty:
        return pd.DataFrame(columns=cols)
    merged = labels.merge(machine[["sample_id", "machine"]], on="sample_id")
    rows = []
    for annotator, group in merged.groupby("annotator"):
        human = [_key(v) for v in group["value"]]
        tagged = [_key(v) for v in group["machine"]]
        rows.append({"annotator": annotator, "n_common": len(group), "kappa": cohen_kappa(human, tagged),
                     "percent_agreement": float(np.mean([h == t for h, t in zip(human, tagged, strict=True)]))})
    return pd.DataFrame(rows, columns=cols)


def _disagreements(labels: pd.DataFrame) -> pd.DataFrame:
    keyed = labels.assign(k=labels["value"].map(_key))
    grouped = keyed.groupby("sample_id")
    split = grouped["k"].nunique()
    ids = split[split > 1].index
    rows = [{"sample_id": int(sid),
             "values": {r.annotator: r.value for r in keyed[keyed["sample_id"] == sid].itertuples()},
             "n_annotators": int(grouped.get_group(sid)["annotator"].nunique())} for sid in ids]
    return pd.DataFrame(rows, columns=["sample_id", "values", "n_annotators"])


def field_agreement(store: Store, schema: LabelSchema, field_name: str, *, dataset: str | None = None,
                    labels: pd.DataFrame | None = None) -> FieldAgreement:
    f = schema.field(field_name)
    if labels is None:
        labels = annotator_labels(store, schema.name, dataset)
    labels = labels[labels["field"] == field_name]
    level = "ordinal" if f.type == "rating" else "nominal"
    multi = labels.groupby("sample_id")["annotator"].nunique()
    shared = labels[labels["sample_id"].isin(multi[multi >= 2].index)]
    if shared.empty:
        alpha = float("nan")
    else:
        matrix, _, _ = reliability_matrix(shared, order=list(range(1, 6)) if level == "ordinal" else None)
        alpha = krippendorff_alpha(matrix, level)
    machine = pd.DataFrame()
    if f.suggest_from and not labels.empty:
        sugg = suggestions(store, schema, [int(i) for i in labels["sample_id"].unique()])
        sugg = sugg[sugg["field"] == field_name]
        if not sugg.empty:
            machine = sugg.drop_duplicates("sample_id").assign(machine=lambda d: d["value"].map(load_value))
    return FieldAgreement(field_name, level, int(shared["sample_id"].nunique()), alpha, _pairs(labels),
                          _machine(labels, machine), _disagreements(labels))


def agreement_report(store: Store, schema: str | LabelSchema, *, dataset: str | None = None,
                     record_run: bool = True) -> list[FieldAgreement]:
    """Agreement for every non-free-text field of a schema; recorded as an `agreement` run."""
    schema = get_schema(store, schema) if isinstance(schema, str) else schema
    labels = annotator_labels(store, schema.name, dataset)
    if not record_run:
        return _field_agreements(store, schema, dataset, labels)
    params = {"schema": schema.name, "version": schema.version, "dataset": dataset}
    with store.run("agreement", params) as run:
        report = _field_agreements(store, schema, dataset, labels)
        run.finish(int(labels["sample_id"].nunique()) if len(labels) else 0)
    return report


def _field_agreements(store: Store, schema: LabelSchema, dataset: str | None,
                      labels: pd.DataFrame) -> list[FieldAgreement]:
    return [field_agreement(store, schema, f.name, dataset=dataset, labels=labels)
            for f in schema.fields if f.type != "free_text"]
