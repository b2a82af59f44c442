"""Hand labelling: label schemas, the append-only event log, current/consensus labels, queues.

Every label, skip and undo is one row of `label_events`, written by `append_events` in a short
transaction and never updated or deleted; the current label per annotator and the consensus are SQL
views over that log (core/store/schema/0004_labels.sql). Writes carry a client-made key, so a write retried
after a busy store or a write conflict lands exactly once, and the retries go on for
`WRITE_TIMEOUT` seconds (longer than the store's own busy wait) so that an acknowledged label is never
lost and an unacknowledged one is never silently dropped (the caller gets an exception).

Machine suggestions and "most uncertain first" orderings come from pluggable providers (`SUGGESTERS`,
`UNCERTAINTY_SOURCES`): functions that return nothing when their tables do not exist, so labelling
works before any tagger has run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from core import safe_yaml
from core.errors import UserError
from core.store.database import Store, StoreBusy, now_utc
from core.tags.vocabulary import DIFFICULTY, INPUT_QUALITY, SAFETY, SCORE_TAGS, TASK_CATEGORIES

FIELD_TYPES = ("single_choice", "multi_choice", "rating", "keep_drop", "free_text")
ORIGINS = ("focus", "bulk", "cli", "noise", "adjudication", "import", "api")
WRITE_TIMEOUT = 120.0  # seconds a label write keeps retrying before it raises
SKIP_FIELD = "*"

MAGPIE_TASK_CATEGORIES = TASK_CATEGORIES
VOCABULARIES: dict[str, list[str]] = {
    "magpie_task_category": MAGPIE_TASK_CATEGORIES,
    "magpie_difficulty": DIFFICULTY,
    "magpie_input_quality": INPUT_QUALITY,
    "magpie_safety": SAFETY,
}
KEEP_DROP = ["keep", "drop"]


class LabelError(UserError):
    """A label or schema that does not fit its schema."""


def _query(store: Store, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    with store.connect() as con:
        return con.execute(sql, params or []).df()


# ---- schemas -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelField:
    name: str
    type: str
    options: tuple[str, ...] = ()
    vocabulary: str | None = None     # name in VOCABULARIES the options came from
    required: bool = True
    suggest_from: str | None = None   # machine tag whose values pre-fill this field
    description: str = ""

    @property
    def choices(self) -> list[str]:
        """What a number key picks: options, keep/drop, or the ratings 1..5 as strings."""
        if self.type == "rating":
            return [str(i) for i in range(1, 6)]
        if self.type == "keep_drop":
            return list(KEEP_DROP)
        return list(self.options)


@dataclass(frozen=True)
class LabelSchema:
    name: str
    fields: tuple[LabelField, ...]
    title: str = ""
    guidelines: str = ""  # the user's own markdown
    version: int = 0      # 0 until saved

    @property
    def primary(self) -> LabelField:
        """The field number keys act on: the first one with choices."""
        return next((f for f in self.fields if f.type != "free_text"), self.fields[0])

    def field(self, name: str) -> LabelField:
        for f in self.fields:
            if f.name == name:
                return f
        raise LabelError(f"Schema {self.name!r} has no field {name!r}; fields: {[f.name for f in self.fields]}")

    def to_spec(self) -> dict[str, Any]:
        spec = asdict(self)
        spec.pop("version")
        for f in spec["fields"]:
            f["options"] = list(f["options"])
        return spec


def _parse_field(raw: dict[str, Any], index: int) -> LabelField:
    ftype = str(raw.get("type", "single_choice")).replace("-", "_")
    if ftype not in FIELD_TYPES:
        raise LabelError(f"field {index}: type {ftype!r} is not one of {', '.join(FIELD_TYPES)}")
    vocabulary = raw.get("vocabulary")
    options = [str(o) for o in raw.get("options") or []]
    if vocabulary:
        if vocabulary not in VOCABULARIES:
            raise LabelError(f"field {index}: unknown vocabulary {vocabulary!r}; known: {', '.join(VOCABULARIES)}")
        options = options or list(VOCABULARIES[vocabulary])
    if ftype in ("single_choice", "multi_choice"):
        if not options:
            raise LabelError(f"field {index}: a {ftype} field needs options or a vocabulary")
        if len(set(options)) != len(options):
            raise LabelError(f"field {index}: options repeat")
    name = str(raw.get("name") or "label")
    return LabelField(name=name, type=ftype, options=tuple(options), vocabulary=vocabulary,
                      required=bool(raw.get("required", ftype != "free_text")),
                      suggest_from=raw.get("suggest_from"), description=str(raw.get("description") or ""))


def parse_schema(spec: dict[str, Any]) -> LabelSchema:
    """A schema from a dict (YAML): `fields: [...]`, or one field's keys at the top level."""
    if not isinstance(spec, dict) or not spec.get("name"):
        raise LabelError("a label schema needs a name")
    raw_fields = spec.get("fields") or [{k: v for k, v in spec.items() if k not in ("name", "title", "guidelines")}]
    fields = tuple(_parse_field(raw, i) for i, raw in enumerate(raw_fields))
    names = [f.name for f in fields]
    if len(set(names)) != len(names) or SKIP_FIELD in names:
        raise LabelError(f"field names must be unique and not {SKIP_FIELD!r}: {names}")
    return LabelSchema(name=str(spec["name"]), fields=fields, title=str(spec.get("title") or spec["name"]),
                       guidelines=str(spec.get("guidelines") or ""), version=int(spec.get("version") or 0))


def load_schema_file(path: str | Path) -> LabelSchema:
    """A schema from a YAML file (no aliases, bounded size); LabelError names the file and line."""
    try:
        return parse_schema(safe_yaml.load_file(path))
    except safe_yaml.YamlError as exc:
        raise LabelError(str(exc)) from None


def load_schema_text(text: str) -> LabelSchema:
    """A schema from YAML text, as typed in the Label page's editor; LabelError names the line."""
    try:
        return parse_schema(safe_yaml.load(text))
    except safe_yaml.YamlError as exc:
        raise LabelError(str(exc)) from None


def save_schema(store: Store, schema: LabelSchema, *, created_by: str = "") -> LabelSchema:
    """Store a schema; a changed spec becomes a new version, an unchanged one is left as it is."""
    spec = json.dumps(schema.to_spec(), sort_keys=True)
    with store.transaction() as con:
        row = con.execute(
            "SELECT version, spec FROM label_schemas WHERE name = ? ORDER BY version DESC LIMIT 1", [schema.name]
        ).fetchone()
        if row and json.loads(row[1]) == json.loads(spec):
            return _with_version(schema, row[0])
        version = (row[0] if row else 0) + 1
        con.execute("INSERT INTO label_schemas VALUES (?, ?, ?, ?, ?)",
                    [schema.name, version, spec, now_utc(), created_by])
    return _with_version(schema, version)


def _with_version(schema: LabelSchema, version: int) -> LabelSchema:
    return LabelSchema(schema.name, schema.fields, schema.title, schema.guidelines, version)


def get_schema(store: Store, name: str) -> LabelSchema:
    row = _query(store,
        "SELECT version, spec FROM label_schemas WHERE name = ? ORDER BY version DESC LIMIT 1", [name]
    )
    if row.empty:
        raise KeyError(f"No label schema named {name!r}; known: {', '.join(list_schemas(store)['name'])}")
    return parse_schema({**json.loads(row["spec"][0]), "version": int(row["version"][0])})


def list_schemas(store: Store) -> pd.DataFrame:
    """Latest version of each schema, with how many label events it has."""
    return _query(store,
        """
        SELECT s.name, s.version, json_extract_string(s.spec, '$.title') AS title,
               json_array_length(s.spec, '$.fields') AS n_fields, s.created_at, s.created_by,
               (SELECT count(*) FROM label_events e WHERE e.schema = s.name AND e.kind = 'label') AS n_label_events
        FROM label_schemas s
        WHERE s.version = (SELECT max(version) FROM label_schemas t WHERE t.name = s.name)
        ORDER BY s.name
        """
    )


# ---- values ------------------------------------------------------------------------------------


def canonical_value(f: LabelField, value: Any) -> Any:
    """Check a value against its field and give its canonical form (sets sorted in option order)."""
    if f.type == "single_choice":
        if value not in f.options:
            raise LabelError(f"{value!r} is not an option of {f.name!r}: {list(f.options)}")
        return value
    if f.type == "multi_choice":
        chosen = [value] if isinstance(value, str) else list(value)
        unknown = [v for v in chosen if v not in f.options]
        if unknown:
            raise LabelError(f"{unknown} are not options of {f.name!r}")
        return [o for o in f.options if o in set(chosen)]
    if f.type == "rating":
        try:
            rating = int(value)
        except (TypeError, ValueError) as exc:
            raise LabelError(f"a rating is a whole number 1-5, not {value!r}") from exc
        if not 1 <= rating <= 5 or rating != float(value):
            raise LabelError(f"a rating is a whole number 1-5, not {value!r}")
        return rating
    if f.type == "keep_drop":
        if value is True or value is False:
            return "keep" if value else "drop"
        if value not in KEEP_DROP:
            raise LabelError(f"keep/drop takes 'keep' or 'drop', not {value!r}")
        return value
    return str(value)


def dump_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def load_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# ---- the event log -----------------------------------------------------------------------------


@dataclass
class LabelEvent:
    """One row to append. `client_key` makes a retried write idempotent."""

    sample_id: int
    schema: str
    field: str
    annotator: str
    origin: str
    kind: str = "label"
    value: Any = None
    undoes_event_id: int | None = None
    session: str | None = None
    client_key: str = field(default_factory=lambda: uuid.uuid4().hex)


_COLUMNS = ["client_key", "sample_id", "schema", "field", "value", "annotator", "created_at", "origin", "kind",
            "undoes_event_id", "session"]
_INSERT = (
    "INSERT INTO label_events (client_key, sample_id, schema, field, value, annotator, created_at, origin, kind, "
    "undoes_event_id, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_key) DO NOTHING"
)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StoreBusy):
        return True
    return isinstance(exc, duckdb.TransactionException) or "conflict" in str(exc).lower()


def append_events(store: Store, events: Sequence[LabelEvent], *, timeout: float = WRITE_TIMEOUT) -> list[int]:
    """Append events in one short transaction and return their event ids (in order).

    Retries on a busy store or a write conflict until `timeout`; the client keys make a retry after an
    uncertain commit harmless. Returns only once the events are committed.
    """
    if not events:
        return []
    now = now_utc()
    rows = [[e.client_key, int(e.sample_id), e.schema, e.field,
             None if e.value is None else dump_value(e.value), e.annotator, now, e.origin, e.kind,
             e.undoes_event_id, e.session] for e in events]
    keys = [e.client_key for e in events]
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            with store.transaction() as con:
                if len(rows) > 20:  # a bulk write: one INSERT ... SELECT, far faster than executemany
                    con.register("new_label_events", pd.DataFrame(rows, columns=_COLUMNS))
                    con.execute(f"INSERT INTO label_events ({', '.join(_COLUMNS)}) SELECT * FROM new_label_events "
                                "ON CONFLICT (client_key) DO NOTHING")
                    con.unregister("new_label_events")
                else:
                    con.executemany(_INSERT, rows)
                found = dict(con.execute(
                    "SELECT client_key, event_id FROM label_events WHERE client_key IN (SELECT unnest(?))", [keys]
                ).fetchall())
            return [int(found[k]) for k in keys]
        except (duckdb.Error, StoreBusy) as exc:
            if not _is_transient(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _check_annotator(annotator: str) -> str:
    annotator = (annotator or "").strip()
    if not annotator:
        raise LabelError("an annotator name is needed")
    return annotator


def label_events_for(schema: LabelSchema, sample_ids: Iterable[int], values: dict[str, Any], *,
                     annotator: str, origin: str, session: str | None = None) -> list[LabelEvent]:
    """Events for `values` (field -> value) on each sample; empty free text is left out."""
    annotator = _check_annotator(annotator)
    checked = {}
    for name, value in values.items():
        f = schema.field(name)
        if value is None or (f.type in ("free_text", "multi_choice") and not value):
            continue
        checked[name] = canonical_value(f, value)
    if not checked:
        raise LabelError("nothing to record: every field is empty")
    return [LabelEvent(int(sid), schema.name, name, annotator, origin, value=v, session=session)
            for sid in sample_ids for name, v in checked.items()]


def missing_required(schema: LabelSchema, values: dict[str, Any]) -> list[str]:
    """The required fields that `values` (field -> value) leaves empty: what to ask for before submitting."""
    return [f.name for f in schema.fields if f.required and values.get(f.name) in (None, [], "")]


def record_label(store: Store, schema: LabelSchema, sample_id: int, values: dict[str, Any], *,
                 annotator: str, origin: str = "focus", session: str | None = None) -> list[int]:
    """Record one sample's labels (field -> value). The page, CLI and notebooks all write through here."""
    return append_events(store, label_events_for(schema, [sample_id], values, annotator=annotator,
                                                  origin=origin, session=session))


def record_bulk(store: Store, schema: LabelSchema, sample_ids: Sequence[int], values: dict[str, Any], *,
                annotator: str, origin: str = "bulk", session: str | None = None) -> list[int]:
    """The same labels on many samples, in one transaction."""
    return append_events(store, label_events_for(schema, sample_ids, values, annotator=annotator,
                                                  origin=origin, session=session))


def record_skip(store: Store, schema: LabelSchema | str, sample_id: int, *, annotator: str,
                origin: str = "focus", session: str | None = None) -> int:
    name = schema.name if isinstance(schema, LabelSchema) else schema
    event = LabelEvent(int(sample_id), name, SKIP_FIELD, _check_annotator(annotator), origin, kind="skip",
                       session=session)
    return append_events(store, [event])[0]


def adjudicate(store: Store, schema: LabelSchema, sample_id: int, field_name: str, value: Any, *,
               annotator: str, session: str | None = None) -> int:
    """Settle a disagreement: a label event with origin 'adjudication' that the consensus prefers."""
    events = label_events_for(schema, [sample_id], {field_name: value}, annotator=annotator,
                              origin="adjudication", session=session)
    return append_events(store, events)[0]


def undo_last(store: Store, schema: LabelSchema | str, *, annotator: str, origin: str = "focus",
              session: str | None = None) -> dict[str, Any] | None:
    """Take back the annotator's latest effective action in this schema (all the fields written with it).

    Returns {"sample_id", "undone": [event ids]} or None when there is nothing to undo.
    """
    name = schema.name if isinstance(schema, LabelSchema) else schema
    last = _query(store,
        "SELECT event_id, sample_id, created_at FROM label_events_effective WHERE schema = ? AND annotator = ? "
        "ORDER BY event_id DESC LIMIT 1", [name, annotator])
    if last.empty:
        return None
    sample_id, created_at = int(last["sample_id"][0]), last["created_at"][0]
    # Fields submitted together share their timestamp and sample: undo them together.
    batch = _query(store,
        "SELECT event_id FROM label_events_effective WHERE schema = ? AND annotator = ? AND sample_id = ? "
        "AND created_at = ?", [name, annotator, sample_id, created_at])
    undone = [int(i) for i in batch["event_id"]]
    append_events(store, [LabelEvent(sample_id, name, SKIP_FIELD, annotator, origin, kind="undo",
                                     undoes_event_id=i, session=session) for i in undone])
    return {"sample_id": sample_id, "undone": undone}


def events(store: Store, schema: str | None = None) -> pd.DataFrame:
    """The raw log, oldest first."""
    where = "WHERE schema = ? " if schema else ""
    return _query(store, f"SELECT * FROM label_events {where}ORDER BY event_id", [schema] if schema else [])


# ---- current and consensus labels --------------------------------------------------------------


def _dataset_clause(dataset: str | None) -> tuple[str, list[Any]]:
    if dataset is None:
        return "", []
    return (" AND sample_id IN (SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = ?)",
            [dataset])


def annotator_labels(store: Store, schema: str, dataset: str | None = None) -> pd.DataFrame:
    """Each annotator's current label: long form (sample_id, field, annotator, value, created_at, origin)."""
    clause, params = _dataset_clause(dataset)
    df = _query(store,
        "SELECT sample_id, field, annotator, value, created_at, origin, event_id FROM label_current "
        f"WHERE schema = ?{clause} ORDER BY sample_id, field, annotator", [schema, *params])
    df["value"] = df["value"].map(load_value)
    return df


def consensus_labels(store: Store, schema: str, dataset: str | None = None) -> pd.DataFrame:
    """Consensus per sample and field, long form: value, n_annotators, agreement, status."""
    clause, params = _dataset_clause(dataset)
    df = _query(store,
        "SELECT sample_id, field, value, n_annotators, agreement, status FROM label_consensus "
        f"WHERE schema = ?{clause} ORDER BY sample_id, field", [schema, *params])
    df["value"] = df["value"].map(load_value)
    return df


def current_labels(store: Store, schema: str, dataset: str | None = None) -> pd.DataFrame:
    """The labels other pages use: one row per labelled sample, indexed by sample id.

    Columns: one per field holding the consensus value (None on a tie), plus `<field>__n_annotators`,
    `<field>__agreement` and `<field>__status` (unanimous, majority, tie, adjudicated).
    """
    long = consensus_labels(store, schema, dataset)
    if long.empty:
        return pd.DataFrame(index=pd.Index([], name="sample_id", dtype="int64"))
    wide = long.pivot(index="sample_id", columns="field")
    out = pd.DataFrame(index=wide.index)
    for name in long["field"].unique():
        out[name] = wide[("value", name)]
        out[f"{name}__n_annotators"] = wide[("n_annotators", name)].astype("Int64")
        out[f"{name}__agreement"] = wide[("agreement", name)]
        out[f"{name}__status"] = wide[("status", name)]
    out.index = out.index.astype("int64")
    return out


# ---- suggestions and uncertainty (hooks for taggers and the noise page) ------------------------


@dataclass(frozen=True)
class Suggestion:
    field: str
    value: Any
    score: float | None
    source: str  # tagger name and run, e.g. "task_category (run 12)"


Suggester = Callable[[Store, LabelSchema, Sequence[int]], pd.DataFrame]
UncertaintySource = Callable[[Store, LabelSchema, Sequence[int]], list[int]]
SUGGESTERS: list[Suggester] = []          # each returns rows (sample_id, field, value, score, source)
UNCERTAINTY_SOURCES: list[UncertaintySource] = []  # each returns candidate ids, most uncertain first


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}


_TAG_COLUMNS = {"sample_id", "tag", "value", "score", "run_id"}


def tag_table_suggester(store: Store, schema: LabelSchema, sample_ids: Sequence[int]) -> pd.DataFrame:
    """Suggestions from the `tags` table (core/tags/results.py: sample_id, tag, value, score, run_id, status) for
    fields with `suggest_from`, the latest run's 'ok' value; empty where there is none."""
    wanted = {f.suggest_from: f.name for f in schema.fields if f.suggest_from}
    if not wanted or not sample_ids:
        return pd.DataFrame()
    from core.tags.results import (
        newest_ok_sql,  # here: core.tags.results imports core.labels.agreement, which imports this module
    )

    with store.connect() as con:
        if "tags" not in _tables(con) or not _TAG_COLUMNS | {"status"} <= _columns(con, "tags"):
            return pd.DataFrame()
        current, params = newest_ok_sql("CAST(t.value AS VARCHAR)", list(wanted))
        df = con.execute(f"SELECT sample_id, tag, value, score, run_id FROM ({current}) "
                         "WHERE sample_id IN (SELECT unnest(?))", [*params, list(map(int, sample_ids))]).df()
    if df.empty:
        return df
    df["field"] = df["tag"].map(wanted)
    df["value"] = df["value"].map(dump_value)  # tags hold plain strings; label values are JSON
    df["source"] = df["tag"] + " (run " + df["run_id"].astype(str) + ")"
    return df[["sample_id", "field", "value", "score", "source"]]


def tag_confidence_uncertainty(store: Store, schema: LabelSchema, candidates: Sequence[int]) -> list[int]:
    """Candidates ordered by the lowest confidence of the tags their suggestions come from. Tags whose
    score is a reward or a quality score (core.tags.results.SCORE_TAGS), not a confidence, do not count."""
    rows = tag_table_suggester(store, schema, candidates)
    scored = {f.name for f in schema.fields if f.suggest_from in SCORE_TAGS}
    if not rows.empty:
        rows = rows[~rows["field"].isin(scored)]
    if rows.empty or rows["score"].isna().all():
        return []
    return [int(i) for i in rows.groupby("sample_id")["score"].min().sort_values().index]


def noise_flag_uncertainty(store: Store, schema: LabelSchema, candidates: Sequence[int]) -> list[int]:
    """Candidates flagged by the noise page first (a `noise_scores` table with sample_id,
    is_label_issue, label_score); empty where that table does not exist."""
    with store.connect() as con:
        if "noise_scores" not in _tables(con) or not {"sample_id", "label_score"} <= _columns(con, "noise_scores"):
            return []
        rows = con.execute(
            "SELECT sample_id, min(label_score) AS s FROM noise_scores WHERE sample_id IN (SELECT unnest(?)) "
            "GROUP BY sample_id ORDER BY s", [list(map(int, candidates))]).fetchall()
    return [int(r[0]) for r in rows]


def signal_suggester(store: Store, schema: LabelSchema, sample_ids: Sequence[int]) -> pd.DataFrame:
    """Suggestions from any signal (core/signals) a field names in `suggest_from` (e.g. map.cluster,
    label.other.category, a plug-in's signal); plain tag names are the tag suggester's."""
    from core import signals

    if not sample_ids:
        return pd.DataFrame()
    known = {s.name for s in signals.available(store)}
    rows = []
    for f in schema.fields:
        if not f.suggest_from or f.suggest_from not in known:
            continue
        df = signals.values(store, f.suggest_from, sample_ids=sample_ids)
        for r in df.itertuples():
            if r.value is not None and not pd.isna(r.value):
                text = str(int(r.value)) if isinstance(r.value, float) and r.value.is_integer() else str(r.value)
                rows.append({"sample_id": int(r.sample_id), "field": f.name, "value": dump_value(text),
                             "score": None, "source": f"signal {f.suggest_from}"})
    return pd.DataFrame(rows, columns=["sample_id", "field", "value", "score", "source"]) if rows else pd.DataFrame()


def signal_order(store: Store, candidates: Sequence[int], signal: str, *, descending: bool = False) -> list[int]:
    """Candidates ordered by a numeric signal's value (lowest first unless `descending`); those without a
    value last, in their own order. "Most uncertain first" by any score (noise.cleanlab.score, ...)."""
    from core import signals

    if signals.get(store, signal).kind != "number":
        raise LabelError(f"{signal} is not a numeric signal; order the queue by a number")
    df = signals.values(store, signal, sample_ids=candidates).dropna(subset=["value"])
    df = df.sort_values(["value", "sample_id"], ascending=[not descending, True])
    first = [int(i) for i in df["sample_id"]]
    seen = set(first)
    return first + [int(i) for i in candidates if int(i) not in seen]


def signal_candidates(store: Store, dataset: str, filters: Sequence[str], *, search: str | None = None) -> list[int]:
    """A queue's candidates: the dataset's samples matching a search and filters in the signal grammar
    (`tag.category:eq:Math`, `noise.cleanlab.flag:is_true`), in dataset order."""
    from core.browse.samples import matching_ids
    from core.signals import parse_filter

    return matching_ids(store, dataset, search=search, filters=[parse_filter(f) for f in filters if f.strip()])


def numeric_signals(store: Store, dataset: str | None = None) -> list[str]:
    """Names of the numeric signals (for "order the queue by")."""
    from core import signals

    return [s.name for s in signals.available(store, dataset) if s.kind == "number"]


SUGGESTERS.extend([tag_table_suggester, signal_suggester])
UNCERTAINTY_SOURCES.extend([noise_flag_uncertainty, tag_confidence_uncertainty])


def suggestions(store: Store, schema: LabelSchema, sample_ids: Sequence[int]) -> pd.DataFrame:
    """Machine suggestions from every provider: (sample_id, field, value, score, source)."""
    frames = [df for fn in SUGGESTERS if not (df := fn(store, schema, sample_ids)).empty]
    if not frames:
        return pd.DataFrame(columns=["sample_id", "field", "value", "score", "source"])
    return pd.concat(frames, ignore_index=True)


def suggestion_for(store: Store, schema: LabelSchema, sample_id: int) -> dict[str, Suggestion] | None:
    """The best suggestion per field for one sample, or None when no machine tag exists."""
    df = suggestions(store, schema, [sample_id])
    if df.empty:
        return None
    df = df.sort_values("score", ascending=False, na_position="last").drop_duplicates("field")
    return {r.field: Suggestion(r.field, load_value(r.value), None if pd.isna(r.score) else float(r.score), r.source)
            for r in df.itertuples()}


def most_uncertain_first(store: Store, schema: LabelSchema, candidates: Sequence[int], *,
                         signal: str | None = None) -> list[int]:
    """Candidates ordered by the first uncertainty source that has anything; [] when none has. With
    `signal`, by that numeric signal instead, lowest first (signal_order)."""
    if signal:
        return signal_order(store, candidates, signal)
    for source in UNCERTAINTY_SOURCES:
        ordered = source(store, schema, candidates)
        if ordered:
            return ordered
    return []


# ---- queues and progress -----------------------------------------------------------------------


def annotation_counts(store: Store, schema: str, candidates: Sequence[int]) -> pd.DataFrame:
    """Per candidate: how many annotators labelled it, and who."""
    ids = pd.DataFrame({"sample_id": pd.Series(list(candidates), dtype="int64")})
    with store.connect() as con:
        con.register("queue_ids", ids)
        return con.execute(
            "SELECT q.sample_id, count(DISTINCT c.annotator) AS n, list(DISTINCT c.annotator) AS annotators "
            "FROM queue_ids q LEFT JOIN label_current c ON c.sample_id = q.sample_id AND c.schema = ? "
            "GROUP BY q.sample_id", [schema]).df()


def build_queue(store: Store, schema: str, candidates: Sequence[int], *, annotator: str,
                min_annotations: int = 1, include_complete: bool = False) -> list[int]:
    """The annotator's queue over `candidates` (kept in their order within each priority group):

    samples that others started but that have fewer than `min_annotations` come first (for overlap),
    then unlabelled ones, then (if `include_complete`) those that already have enough. Samples the
    annotator labelled or skipped are left out.
    """
    ids = pd.DataFrame({"sample_id": pd.Series(list(candidates), dtype="int64")})
    ids["pos"] = range(len(ids))
    with store.connect() as con:
        con.register("queue_ids", ids)
        rows = con.execute(
            """
            WITH mine AS (SELECT DISTINCT sample_id FROM label_events_effective WHERE schema = ? AND annotator = ?),
                 others AS (SELECT sample_id, count(DISTINCT annotator) AS n FROM label_current
                            WHERE schema = ? AND annotator <> ? GROUP BY sample_id)
            SELECT q.sample_id, coalesce(o.n, 0) AS n FROM queue_ids q
            LEFT JOIN others o USING (sample_id)
            WHERE q.sample_id NOT IN (SELECT sample_id FROM mine)
            ORDER BY CASE WHEN coalesce(o.n, 0) = 0 THEN 1 WHEN o.n < ? THEN 0 ELSE 2 END, q.pos
            """, [schema, annotator, schema, annotator, int(min_annotations)]).fetchall()
    return [int(sid) for sid, n in rows if include_complete or n < min_annotations]


def progress(store: Store, schema: str, candidates: Sequence[int], *, annotator: str) -> tuple[int, int]:
    """(done, total): candidates this annotator has labelled, out of all candidates."""
    ids = pd.DataFrame({"sample_id": pd.Series(list(candidates), dtype="int64")})
    with store.connect() as con:
        con.register("queue_ids", ids)
        done = con.execute(
            "SELECT count(DISTINCT c.sample_id) FROM label_current c JOIN queue_ids q USING (sample_id) "
            "WHERE c.schema = ? AND c.annotator = ?", [schema, annotator]).fetchone()[0]
    return int(done), len(ids)


@dataclass
class LabelQueue:
    """An annotator's place in a queue: the candidates it was built from, the order to visit, the position.

    Kept in the page's session (plain data); every change of position is a method here so that a notebook
    or another front end moves through a queue the same way the Label page does."""

    key: tuple
    candidates: list[int]
    queue: list[int]
    pos: int = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.queue)

    @property
    def current(self) -> int | None:
        return None if self.done else self.queue[self.pos]

    def page(self, size: int) -> list[int]:
        """The next `size` samples from the current position (the bulk view's page)."""
        return self.queue[self.pos:self.pos + size]

    def move(self, step: int) -> None:
        """Step back or forward, staying within [0, len(queue)] (len = past the end: the queue is done)."""
        self.pos = max(0, min(len(self.queue), self.pos + step))

    def advance(self) -> None:
        self.move(1)

    def remove(self, sample_ids: Iterable[int]) -> None:
        """Drop samples (labelled in bulk) from the queue; the position stays on the next unvisited one."""
        gone = {int(i) for i in sample_ids}
        self.queue = [i for i in self.queue if i not in gone]
        self.pos = min(self.pos, len(self.queue))

    def show(self, sample_id: int) -> None:
        """Make `sample_id` the current sample, putting it back at the current position if it left the queue."""
        if sample_id not in self.queue:
            self.queue.insert(self.pos, sample_id)
        self.pos = self.queue.index(sample_id)


def new_queue(store: Store, schema: str, candidates: Sequence[int], *, annotator: str, min_annotations: int = 1,
              key: tuple = ()) -> LabelQueue:
    """A fresh queue over `candidates` for this annotator (see `build_queue` for the order)."""
    ids = [int(i) for i in candidates]
    return LabelQueue(key=key, candidates=ids,
                      queue=build_queue(store, schema, ids, annotator=annotator, min_annotations=min_annotations))


def undo_in_queue(store: Store, schema: LabelSchema | str, queue: LabelQueue, *, annotator: str,
                  session: str | None = None) -> int | None:
    """Undo the annotator's latest action (`undo_last`) and go back to that sample in the queue.

    Returns the sample id, or None when there was nothing to undo."""
    undone = undo_last(store, schema, annotator=annotator, session=session)
    if undone is None:
        return None
    queue.show(int(undone["sample_id"]))
    return int(undone["sample_id"])


def bulk_rows(store: Store, sample_ids: Sequence[int], *, chars: int = 300) -> pd.DataFrame:
    """id and the first `chars` characters of each sample's text, in the order of `sample_ids`."""
    ids = [int(i) for i in sample_ids]
    if not ids:
        return pd.DataFrame({"id": pd.Series(dtype="int64"), "text": pd.Series(dtype="object")})
    rows = _query(store, "SELECT id, left(text, ?) AS text FROM samples WHERE id IN (SELECT unnest(?::BIGINT[]))",
                  [int(chars), ids])
    return rows.set_index("id").loc[[i for i in ids if i in set(rows["id"])]].reset_index()


def label_distribution(store: Store, schema: str, field_name: str) -> pd.DataFrame:
    """Per annotator and value of one field: how many samples carry that current label (most used first)."""
    labels = annotator_labels(store, schema)
    labels = labels[labels["field"] == field_name]
    if labels.empty:
        return pd.DataFrame(columns=["annotator", "value", "n"])
    keyed = labels.assign(value=labels["value"].map(lambda v: ", ".join(map(str, v)) if isinstance(v, list) else str(v)))
    out = keyed.groupby(["annotator", "value"]).size().reset_index(name="n")
    return out.sort_values(["annotator", "n", "value"], ascending=[True, False, True], ignore_index=True)


def n_shared_samples(store: Store, schema: str) -> int:
    """Samples of this schema labelled by at least two annotators (what agreement needs)."""
    df = _query(store, "SELECT count(*) AS n FROM (SELECT sample_id FROM label_current WHERE schema = ? "
                "GROUP BY sample_id HAVING count(DISTINCT annotator) >= 2)", [schema])
    return int(df["n"].iloc[0])


def annotator_progress(store: Store, schema: str) -> pd.DataFrame:
    """Per annotator: samples labelled, skipped, undone events, last activity."""
    return _query(store,
        """
        SELECT annotator,
               count(DISTINCT sample_id) FILTER (WHERE kind = 'label') AS labelled,
               count(DISTINCT sample_id) FILTER (WHERE kind = 'skip') AS skipped,
               max(created_at) AS last_active
        FROM label_events_effective WHERE schema = ? AND origin <> 'adjudication'
        GROUP BY annotator ORDER BY labelled DESC, annotator
        """, [schema])


def my_current(store: Store, schema: str, sample_id: int, annotator: str) -> dict[str, Any]:
    """This annotator's current values on one sample (field -> value), to pre-fill the form."""
    df = _query(store,
        "SELECT field, value FROM label_current WHERE schema = ? AND sample_id = ? AND annotator = ?",
        [schema, int(sample_id), annotator])
    return {r.field: load_value(r.value) for r in df.itertuples()}


# ---- export ------------------------------------------------------------------------------------


def export_labels(store: Store, schema: str, path: str | Path, *, fmt: str | None = None,
                  what: str = "current", dataset: str | None = None) -> int:
    """Write labels to JSONL or Parquet: `current` (per annotator), `consensus`, or the raw `events`.
    Rows carry the dataset name and source id so that they can be joined back outside the store."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("jsonl", "parquet"):
        raise LabelError(f"export format must be jsonl or parquet, not {fmt!r}")
    if what == "current":
        df = annotator_labels(store, schema, dataset)
    elif what == "consensus":
        df = consensus_labels(store, schema, dataset)
    elif what == "events":
        df = events(store, schema)
        df["value"] = df["value"].map(load_value)
    else:
        raise LabelError(f"export what must be current, consensus or events, not {what!r}")
    ids = _query(store,
        "SELECT s.id AS sample_id, d.name AS dataset, s.source_id FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE s.id IN (SELECT unnest(?))", [[int(i) for i in df["sample_id"].unique()]]) if len(df) else None
    if ids is not None:
        df = df.merge(ids, on="sample_id", how="left")
    if "schema" not in df:
        df.insert(1, "schema", schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if fmt == "jsonl":
        df.to_json(tmp, orient="records", lines=True, date_format="iso", force_ascii=False)
    else:
        out = df.copy()
        out["value"] = out["value"].map(dump_value)  # mixed types (str, int, list) as JSON text
        out.to_parquet(tmp, index=False)
    tmp.replace(path)
    return len(df)


# ---- signals (core/signals): hand-label consensus per field, and disagreement ----------------------------

TIE = "(tie)"  # a labelled sample whose annotators disagree and nobody adjudicated
# A consensus value as text: strings as they are, lists joined, a tie as TIE.
_CONSENSUS_TEXT = ("CASE WHEN c.value IS NULL THEN ? WHEN json_type(c.value) = 'ARRAY' "
                   "THEN array_to_string(from_json(c.value, '[\"VARCHAR\"]'), ', ') ELSE c.value ->> '$' END")


def _label_signal(schema: str, field_name: str) -> Any:
    from core.signals.registry import Bound, Signal

    def build(con: Any, dataset_ids: Sequence[int], run: int | None) -> Bound:
        return Bound(f"SELECT c.sample_id, {_CONSENSUS_TEXT} AS value FROM label_consensus c "
                     "WHERE c.schema = ? AND c.field = ?", [TIE, schema, field_name])

    return Signal(f"label.{schema}.{field_name}", "category",
                  f"hand-label consensus of {schema}/{field_name}: the adjudicated value, else the majority of "
                  "annotators' current labels (core/labels/labelling.py)", f"{TIE} where annotators disagree", build,
                  family="labels")


def _disagreement(con: Any, dataset_ids: Sequence[int], run: int | None) -> Any:
    from core.signals.registry import Bound

    return Bound("SELECT sample_id, max(1 - agreement) AS value FROM label_consensus WHERE n_annotators > 1 "
                 "AND status <> 'adjudicated' GROUP BY sample_id")


def signals(con: Any, dataset_ids: Sequence[int] | None) -> list[Any]:
    """Signal provider: label.<schema>.<field> per labelled field, label.disagreement where some sample has
    two annotators."""
    from core.signals.registry import Signal

    pairs = con.execute("SELECT DISTINCT schema, field FROM label_events WHERE kind = 'label' AND field <> ? "
                        "ORDER BY 1, 2", [SKIP_FIELD]).fetchall()
    out = [_label_signal(schema, name) for schema, name in pairs]
    if pairs:
        out.append(Signal("label.disagreement", "number",
                          "hand-label disagreement: 1 - the share of annotators agreeing with the majority, the "
                          "largest over a sample's fields (samples with two or more annotators, not adjudicated)",
                          "0 = unanimous; higher = more disagreement", _disagreement, family="labels"))
    return out
