"""Words and numbers for people: one mapping from stored column names to the headers tables show, missing
values shown as a dash, and counted nouns with proper plurals. Used by every page (and any notebook)
at display time only; the data and their column names stay as stored."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MISSING = "—"

LABELS: dict[str, str] = {
    # samples and datasets
    "id": "sample id", "sample_id": "sample id", "row_idx": "row in source", "source_id": "source id",
    "n_turns": "turns", "n_chars": "characters", "n_tokens": "tokens", "n_samples": "samples",
    "dataset": "dataset", "datasets": "datasets", "license": "licence", "synthetic": "synthetic",
    "is_eval": "evaluation set", "loaded_at": "loaded", "n_skipped": "records skipped", "text": "text",
    # runs
    "run_id": "run", "kind": "kind", "status": "status", "model": "model", "started_at": "started",
    "finished_at": "finished", "error": "error", "params": "parameters",
    # contamination
    "eval_set": "evaluation set", "eval_dataset_id": "evaluation set id", "eval_sample_id": "evaluation item",
    "n_eval_items": "evaluation items", "n_contaminated": "flagged samples", "n_ngram13": "flagged by 13-gram",
    "n_ngram8": "flagged by 8-gram", "n_embedding": "flagged by embedding", "n_mink": "flagged by Min-K%",
    "n_eval_items_hit": "evaluation items hit", "n_eval_items_palm": "items ≥70% covered (8-gram)",
    "mean_ngram8_coverage": "mean 8-gram coverage", "eval_mink_mean": "Min-K% (evaluation, mean)",
    "train_mink_mean": "Min-K% (training, mean)", "n_train_hits": "training samples hitting it",
    "ngram8_coverage": "8-gram coverage", "flag_ngram13": "13-gram", "flag_ngram8": "8-gram",
    "flag_embedding": "embedding", "flag_mink": "Min-K%", "contaminated": "flagged",
    "ngram13_hits": "shared 13-grams", "ngram13_eval_id": "13-gram match", "ngram8_eval_id": "8-gram match",
    "ngram8_train_frac": "sample's 8-grams in eval set", "ngram8_eval_frac": "eval item's 8-grams in sample",
    "embed_eval_id": "nearest evaluation item", "embed_cosine": "embedding cosine", "mink_score": "Min-K% Prob",
    # duplicates
    "group_id": "group", "size": "samples", "min_similarity": "lowest similarity", "representative": "kept sample",
    "is_representative": "kept", "similarity": "similarity to kept",
    # mixture
    "source": "source", "step": "step", "filter": "filter", "before": "before", "removed": "removed",
    "after": "after", "n_total": "samples", "n_after_filters": "after filters", "n_selected": "selected",
    "tokens_selected": "tokens selected", "category": "category", "available": "available",
    "available_tokens": "tokens available", "target_count": "samples wanted", "target_tokens": "tokens wanted",
    "replace": "upsampled", "src": "source #",
    # labels
    "name": "name", "version": "version", "title": "title", "n_fields": "fields", "created_at": "created",
    "created_by": "created by", "n_label_events": "labels given", "annotator": "annotator",
    "labelled": "labelled", "skipped": "skipped", "last_active": "last active", "value": "value", "n": "samples",
    "annotator_a": "annotator A", "annotator_b": "annotator B", "n_common": "samples in common",
    "kappa": "Cohen's kappa", "percent_agreement": "agreement", "values": "values", "n_annotators": "annotators",
}


def label(name: str) -> str:
    """The header for a stored column name; an unknown name reads with spaces for underscores."""
    return LABELS.get(name, str(name).replace("_", " "))


def plural(n: int, noun: str, many: str | None = None) -> str:
    """'1 sample', '2 samples', '1,234 samples' (`many` for irregular plurals: plural(2, 'query', 'queries'))."""
    return f"{n:,} {noun if n == 1 else (many or noun + 's')}"


def column_labels(columns: Any) -> dict[str, str]:
    """{column: header} for st.dataframe's column_config (a plain string there is the column's label)."""
    return {str(c): label(str(c)) for c in columns}


def _cell(value: Any) -> str:
    """A present value in a column that has missing ones: numbers without float noise, the rest as text."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1e15 else f"{value:g}"
    return str(value)


def with_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with missing values (None, NaN, NA) shown as a dash instead of "None": the columns that
    have any become text (a data grid draws every null as "None" and offers no placeholder), the others
    keep their types."""
    if frame.empty or not frame.columns.is_unique:
        return frame
    gaps = [c for c in frame.columns if frame[c].isna().any()]
    if not gaps:
        return frame
    out = frame.copy()
    for c in gaps:
        out[c] = [MISSING if _missing(v) else _cell(v) for v in frame[c]]
    return out


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays: present
        return False


def table(frame: pd.DataFrame, column_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for st.dataframe: the data with missing values as a dash and
    every column's human header; `column_config` entries given here win (links, formats)."""
    config: dict[str, Any] = column_labels(frame.columns)
    config.update(column_config or {})
    return {"data": with_missing(frame), "column_config": config}


def computed_kinds(kinds: str) -> str:
    """'cluster, embed, map, project' (run kinds, as the store lists them) in words for the home page."""
    words = {"embed": "embeddings", "project": "projection", "cluster": "clusters", "map": "maps",
             "tag": "tags", "dedup": "duplicates", "contamination": "contamination", "noise": "noise",
             "agreement": "agreement", "export": "export", "mix": "mixture"}
    parts = [p.strip() for p in str(kinds or "").split(",") if p.strip()]
    return ", ".join(words.get(p, p) for p in parts)
