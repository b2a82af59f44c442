"""What the noise methods learn from: the embedding matrix of a dataset and one labelled column.

A label source is a short string, the same in the page, the CLI and notebooks:

- ``class`` or ``meta:class``: a per-sample metadata field (a category, a class);
- ``votes:hate_speech,offensive_language,neither``: per-class crowd vote counts; the label is the
  majority vote and the votes become a (pseudo-)annotator matrix for the multi-annotator method;
- ``annotators:LABELS[:WHO]``: a metadata list of several labels per sample (optionally a parallel
  list naming who gave each); the label is the majority vote;
- ``labels:SCHEMA/FIELD``: the hand-label consensus of a labelling schema (core.labels.labelling).

Hand relabels made from the noise page (schema ``relabel_schema_name(dataset, source)``) override
the source's label, so a rerun sees the corrected labels.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.store.database import Store

Progress = Callable[[float, str], None]
MIN_CLASS_SIZE = 5  # fewer samples than cross-validation folds breaks out-of-fold probabilities
MAX_CLASSES = 100


@dataclass(frozen=True)
class LabelSource:
    kind: str              # meta, votes, annotators, labels
    fields: tuple[str, ...]
    spec: str

    @property
    def has_annotators(self) -> bool:
        return self.kind in ("votes", "annotators")


def parse_label_source(spec: str) -> LabelSource:
    """`class`, `meta:class`, `votes:a,b,c`, `annotators:labels[:who]`, `labels:schema/field`."""
    spec = (spec or "").strip()
    if not spec:
        raise ValueError("name a label column, e.g. 'class' or 'votes:hate_speech,offensive_language,neither'")
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("meta", "votes", "annotators", "labels"):
        return LabelSource("meta", (spec,), f"meta:{spec}")
    if kind == "meta":
        fields = (rest,)
    elif kind == "votes":
        fields = tuple(f.strip() for f in rest.split(",") if f.strip())
        if len(fields) < 2:
            raise ValueError("votes: needs at least two vote-count fields, e.g. votes:yes,no")
    elif kind == "annotators":
        fields = tuple(f for f in rest.split(":") if f)
        if not 1 <= len(fields) <= 2:
            raise ValueError("annotators: takes LABELS_FIELD or LABELS_FIELD:ANNOTATORS_FIELD")
    else:
        schema, slash, field = rest.rpartition("/")
        if not slash or not schema or not field:
            raise ValueError("labels: takes SCHEMA/FIELD, e.g. labels:quality/task_category")
        fields = (schema, field)
    if not all(fields):
        raise ValueError(f"label source {spec!r} names an empty field")
    return LabelSource(kind, fields, spec)


def relabel_schema_name(dataset: str, source: str) -> str:
    """The labelling schema that holds hand corrections made from the noise page."""
    return f"noise-relabel:{dataset}:{parse_label_source(source).spec}"


@dataclass
class LabelData:
    """Labels of the samples of one dataset that have a usable label, in ascending sample id order."""

    sample_ids: np.ndarray            # int64
    y: np.ndarray                     # int64 index into classes
    classes: list[str]
    annotations: pd.DataFrame | None  # n x annotators, class index or NaN (votes/annotators sources)
    n_dropped: int                    # samples without a label or in a class too small to learn
    n_relabelled: int = 0

    @property
    def given(self) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.y]


def _label_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if text.strip() else None


def _meta_values(store: Store, dataset: str, keys: list[str]) -> pd.DataFrame:
    """Sample id plus the JSON value of each metadata key (as text); keys go through bind parameters."""
    dataset_id = store.dataset(dataset).dataset_id
    cols = ", ".join(f"json_extract(s.meta, ?) AS f{i}" for i in range(len(keys)))
    pointers = ["$." + json.dumps(k) if not k.isidentifier() else f"$.{k}" for k in keys]
    df = store.query_df(f"SELECT s.id AS sample_id, {cols} FROM samples s WHERE s.dataset_id = ? ORDER BY s.id",
                        [*pointers, dataset_id])
    for i in range(len(keys)):
        df[f"f{i}"] = df[f"f{i}"].map(lambda v: None if v is None else json.loads(v))
    return df


def _from_meta(store: Store, dataset: str, field: str) -> tuple[pd.Series, None]:
    df = _meta_values(store, dataset, [field])
    return pd.Series(df["f0"].map(_label_text).to_numpy(), index=df.sample_id.to_numpy()), None


def _vote_slots(counts: np.ndarray, rng: np.random.Generator) -> list[list[float]]:
    """Per sample, its votes as a shuffled list of class indices (pseudo-annotators: no identities)."""
    rows = []
    for row in counts:
        votes = np.repeat(np.arange(len(row)), row.astype(int))
        rng.shuffle(votes)
        rows.append(votes.astype(float).tolist())
    return rows


def _annotation_frame(rows: list[list[float]], index: np.ndarray, names: list[list[str]] | None = None) -> pd.DataFrame:
    if names is None:
        width = max((len(r) for r in rows), default=0)
        data = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            data[i, :len(r)] = r
        return pd.DataFrame(data, index=index, columns=[f"vote_{j + 1}" for j in range(width)])
    records = [dict(zip(n, r, strict=False)) for n, r in zip(names, rows, strict=False)]
    return pd.DataFrame.from_records(records, index=index).astype(float)


def _from_votes(store: Store, dataset: str, fields: tuple[str, ...]) -> tuple[pd.Series, pd.DataFrame]:
    df = _meta_values(store, dataset, list(fields))
    counts = df[[f"f{i}" for i in range(len(fields))]].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
    has_votes = counts.sum(axis=1) > 0
    labels = np.where(has_votes, np.asarray(fields, dtype=object)[counts.argmax(axis=1)], None)
    slots = _vote_slots(counts, np.random.default_rng(0))
    ann = _annotation_frame(slots, df.sample_id.to_numpy())
    # Annotation values index `fields`; remapped to the final class order in load_labels.
    ann.attrs["value_names"] = list(fields)
    return pd.Series(labels, index=df.sample_id.to_numpy()), ann


def _majority(values: list[str]) -> str | None:
    """The most frequent label; a tie goes to the first in sort order (stable, if arbitrary)."""
    if not values:
        return None
    counts = Counter(values)
    best = max(counts.values())
    return sorted(v for v, c in counts.items() if c == best)[0]


def _from_annotators(store: Store, dataset: str, fields: tuple[str, ...]) -> tuple[pd.Series, pd.DataFrame]:
    df = _meta_values(store, dataset, list(fields))
    labels_col = df["f0"].map(lambda v: [t for t in map(_label_text, v if isinstance(v, list) else [v]) if t])
    names = sorted({t for ts in labels_col for t in ts})
    index = {n: i for i, n in enumerate(names)}
    rows = [[float(index[t]) for t in ts] for ts in labels_col]
    who = None
    if len(fields) == 2:
        who = [[str(w) for w in (v if isinstance(v, list) else [])][:len(r)] for v, r in zip(df["f1"], rows, strict=False)]
        if any(len(w) != len(r) for w, r in zip(who, rows, strict=False)):
            raise ValueError(f"{fields[1]!r} must list who gave each label in {fields[0]!r}")
    ann = _annotation_frame(rows, df.sample_id.to_numpy(), who)
    ann.attrs["value_names"] = names
    return pd.Series([_majority(ts) for ts in labels_col], index=df.sample_id.to_numpy()), ann


def _from_hand_labels(store: Store, dataset: str, fields: tuple[str, ...]) -> tuple[pd.Series, None]:
    from core.labels.labelling import current_labels

    schema, field = fields
    current = current_labels(store, schema, dataset)
    if field not in current.columns:
        raise ValueError(f"schema {schema!r} has no labels in field {field!r} on {dataset!r}")
    return current[field].map(_label_text), None


def _relabels(store: Store, dataset: str, source: str) -> pd.Series:
    try:
        from core.labels.labelling import current_labels

        current = current_labels(store, relabel_schema_name(dataset, source), dataset)
    except (ImportError, KeyError):
        return pd.Series(dtype=object)
    if "label" not in current.columns:
        return pd.Series(dtype=object)
    return current["label"].dropna().map(_label_text)


def load_labels(store: Store, dataset: str, source: str, *, relabels: bool = True,
                min_class_size: int = MIN_CLASS_SIZE) -> LabelData:
    """The label of every sample that has one (hand relabels applied), classes sorted by name."""
    src = parse_label_source(source)
    readers = {"meta": lambda: _from_meta(store, dataset, src.fields[0]),
               "votes": lambda: _from_votes(store, dataset, src.fields),
               "annotators": lambda: _from_annotators(store, dataset, src.fields),
               "labels": lambda: _from_hand_labels(store, dataset, src.fields)}
    labels, ann = readers[src.kind]()
    n_total = len(labels)
    n_relabelled = 0
    if relabels:
        fixes = _relabels(store, dataset, src.spec).reindex(labels.index).dropna()
        n_relabelled = int((fixes != labels.reindex(fixes.index)).sum())
        labels.loc[fixes.index] = fixes
    labels = labels.dropna()
    sizes = labels.value_counts()
    keep = sizes[sizes >= min_class_size].index
    if len(keep) < 2:
        raise ValueError(f"{src.spec!r} on {dataset!r} has fewer than two classes with {min_class_size}+ samples "
                         f"(found {dict(sizes.head(10))})")
    if len(keep) > MAX_CLASSES:
        raise ValueError(f"{src.spec!r} has {len(keep)} classes; the noise methods take at most {MAX_CLASSES}")
    labels = labels[labels.isin(keep)].sort_index()
    classes = sorted(keep, key=lambda c: (not _is_int(c), int(c) if _is_int(c) else 0, c))
    y = pd.Categorical(labels.to_numpy(), categories=classes).codes.astype(np.int64)
    if ann is not None:
        ann = _remap_annotations(ann.loc[labels.index], classes)
    return LabelData(labels.index.to_numpy(np.int64), y, list(classes), ann, n_total - len(labels), n_relabelled)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _remap_annotations(ann: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Annotation values -> indices into the final classes; labels of dropped classes become NaN."""
    names = ann.attrs.get("value_names", [])
    lookup = {float(i): float(classes.index(n)) for i, n in enumerate(names) if n in classes}
    out = ann.apply(lambda col: col.map(lambda v: lookup.get(v, np.nan)))
    return out.loc[:, out.notna().any(axis=0)]


# ---- embeddings -------------------------------------------------------------------------------


def _covering_run(store: Store, dataset: str, ids: np.ndarray, text: str | None) -> int | None:
    from core.maps.embed import embedding_runs, model_key

    runs = embedding_runs(store, dataset)
    if runs.empty:
        return None
    # Only runs of the vectors embed() would make now: never int8 (approximate) ones for this request.
    runs = runs[(runs.status == "finished") & (runs.model_key == model_key(None, "auto"))]
    if text:
        runs = runs[runs.text_field == text]
    for run_id in runs.run_id:
        covered = store.query_df(
            "SELECT count(*) AS n FROM embedding_items WHERE run_id = ? AND sample_id IN (SELECT unnest(?::BIGINT[]))",
            [int(run_id), ids.tolist()]).n[0]
        if covered == len(ids):
            return int(run_id)
    return None


def embedding_matrix(store: Store, dataset: str, ids: np.ndarray, *, embedding_run_id: int | None = None,
                     text: str = "instruction", progress: Progress | None = None) -> tuple[int, np.ndarray]:
    """(embedding run id, float32 matrix with one row per id in `ids`' order).

    Uses the given embedding run, else the newest finished one of this text field that covers every
    id, else embeds the dataset now (a recorded, cached embed run).
    """
    from core.maps.embed import embed, load_vectors

    run_id = embedding_run_id or _covering_run(store, dataset, ids, text)
    if run_id is None:
        report = embed(store, dataset, text=text,
                       progress=(lambda d, t: progress(d / max(t, 1), f"embedding {d}/{t}")) if progress else None)
        run_id = report.run_id
    run_ids, vectors = load_vectors(store, run_id)
    pos = pd.Series(np.arange(len(run_ids)), index=run_ids).reindex(ids)
    if pos.isna().any():
        raise ValueError(f"embedding run {run_id} lacks {int(pos.isna().sum())} of the labelled samples")
    return int(run_id), vectors[pos.to_numpy(np.int64)]


def label_sources(store: Store, dataset: str, *, max_classes: int = MAX_CLASSES) -> list[str]:
    """Label sources that make sense for a dataset: categorical metadata fields, vote-count groups,
    lists of annotator labels, and hand-label schemas with labels on it (for the page's picker)."""
    info = store.dataset(dataset)
    out: list[str] = []
    numeric = [f["name"] for f in info.fields if f["name"]]
    stats = _field_stats(store, info.dataset_id, numeric)
    for name, (n_distinct, kind, _) in stats.items():
        if kind == "scalar" and 2 <= n_distinct <= max_classes:
            out.append(name)
        elif kind == "list":
            out.append(f"annotators:{name}")
    votes = [n for n in ("hate_speech", "offensive_language", "neither") if n in stats]
    if len(votes) == 3:
        out.append("votes:" + ",".join(votes))
    from core.labels.labelling import list_schemas

    for schema in list_schemas(store)["name"]:
        if not str(schema).startswith("noise-relabel:"):
            out.extend(f"labels:{schema}/{f}" for f in _schema_fields(store, schema, dataset))
    return out


# The default label source, so the page does not open on a count of annotators (hate-offensive-crowd's
# first categorical field is `count`, the number of annotators, 3-9): the first categorical field with
# few values (2-20) whose name reads like a label (a word of LABEL_WORDS: class, label, category, ...),
# else the first such field holding text, else a hand-label or crowd source; a field named like a count
# (a word of COUNT_WORDS: count, n, num, votes, total, ...) only when there is nothing else.
LABEL_WORDS = frozenset({"label", "labels", "class", "classes", "category", "categories", "target", "gold", "y",
                         "sentiment", "topic", "intent", "stance", "emotion", "tag", "genre", "verdict", "rating"})
COUNT_WORDS = frozenset({"count", "counts", "n", "num", "number", "total", "votes", "size", "length", "len", "id",
                         "idx", "index"})
MAX_DEFAULT_CLASSES = 20


def _words(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()))


def default_label_source(store: Store, dataset: str, sources: list[str] | None = None) -> str | None:
    """The label source the page starts on (rule above); None when the dataset offers none."""
    sources = label_sources(store, dataset) if sources is None else sources
    plain = [s for s in sources if ":" not in s]
    stats = _field_stats(store, store.dataset(dataset).dataset_id, plain)
    few = [s for s in plain if 2 <= stats[s][0] <= MAX_DEFAULT_CLASSES and not _words(s) & COUNT_WORDS]
    for candidates in ([s for s in few if _words(s) & LABEL_WORDS], [s for s in few if stats[s][2] == "VARCHAR"],
                       [s for s in sources if s.startswith("labels:")],
                       [s for s in sources if s.startswith(("votes:", "annotators:"))], few,
                       [s for s in plain if not _words(s) & COUNT_WORDS], sources):
        if candidates:
            return candidates[0]
    return None


def _field_stats(store: Store, dataset_id: int, names: list[str]) -> dict[str, tuple[int, str, str]]:
    """Per metadata field: distinct values (in the first 20,000 samples), scalar or list, JSON type."""
    stats: dict[str, tuple[int, str, str]] = {}
    for name in names:
        pointer = f"$.{name}" if name.isidentifier() else "$." + json.dumps(name)
        row = store.query_df(
            "SELECT count(DISTINCT v) AS n, any_value(json_type(v)) AS t FROM (SELECT json_extract(meta, ?) AS v "
            "FROM samples WHERE dataset_id = ? LIMIT 20000) WHERE v IS NOT NULL", [pointer, dataset_id])
        n, t = int(row.n[0]), row.t[0]
        stats[name] = (n, "list" if t == "ARRAY" else "scalar", str(t))
    return stats


def _schema_fields(store: Store, schema: str, dataset: str) -> list[str]:
    from core.labels.labelling import consensus_labels

    df = consensus_labels(store, schema, dataset)
    return sorted(df["field"].unique()) if not df.empty else []
