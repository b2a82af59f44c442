"""Magpie-style tags: the vocabulary, the `tags` table, reading current tags, comparing runs.

Tags are stored long (run_id, sample_id, tag, value, score, status, detail, method) by the tagging jobs
in core/taggers. Only rows with status 'ok' carry a value; a parse failure, an out-of-vocabulary answer,
a failed request or a tag a backend cannot make keeps what was received (or why) in `detail`, so nothing
made up or malformed ever reads as a real value. The vocabulary follows Magpie (Xu et al., 2024) and the
safety hazards follow Llama Guard 2's S1-S11.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.labels.agreement import cohen_kappa
from core.store.database import Store
from core.tags.vocabulary import COLUMNS, SCORE_TAGS, STATUSES


def rows_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Tag rows (dicts with COLUMNS' keys; missing ones None) as a typed frame."""
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    bad = set(df["status"]) - set(STATUSES)
    if bad:
        raise ValueError(f"unknown tag status {bad}")
    return df


def write_tags(store: Store, run_id: int, rows: pd.DataFrame, *, replace_failed: bool = True) -> int:
    """Append one batch of rows for `run_id` in one transaction (a batch lands whole or not at all).

    Rows of the same samples left by an earlier attempt as request errors are replaced, so a resumed
    run retries what failed on the network and keeps everything else."""
    if rows.empty:
        return 0
    table = pa.table({  # noqa: F841 - read by DuckDB through registration
        "sample_id": pa.array(rows["sample_id"].astype("int64")),
        "tag": pa.array(rows["tag"].astype(str)),
        "value": pa.array([None if pd.isna(v) else str(v) for v in rows["value"]], pa.string()),
        "score": pa.array([None if v is None or pd.isna(v) else float(v) for v in rows["score"]], pa.float64()),
        "status": pa.array(rows["status"].astype(str)),
        "detail": pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                            for v in rows["detail"]], pa.string()),
        "method": pa.array([None if v is None else str(v) for v in rows["method"]], pa.string()),
    })
    with store.transaction() as con:
        con.register("tag_batch", table)
        if replace_failed:
            con.execute("DELETE FROM tags WHERE run_id = ? AND status = 'request_error' AND sample_id IN "
                        "(SELECT DISTINCT sample_id FROM tag_batch)", [run_id])
        con.execute("INSERT INTO tags SELECT ?, sample_id, tag, value, score, status, detail, method FROM tag_batch",
                    [run_id])
        con.unregister("tag_batch")
    return len(rows)


def done_ids(store: Store, run_id: int) -> set[int]:
    """Samples a run has finished: they have rows and none of them is a request error (those are retried)."""
    df = store.query_df("SELECT sample_id FROM tags WHERE run_id = ? GROUP BY sample_id "
                        "HAVING bool_and(status <> 'request_error')", [run_id])
    return set(df["sample_id"].astype("int64"))


def set_metrics(store: Store, run_id: int, metrics: dict[str, Any]) -> None:
    """Merge measured quality figures into the run's tag_runs.metrics (per tag)."""
    with store.transaction() as con:
        row = con.execute("SELECT metrics FROM tag_runs WHERE run_id = ?", [run_id]).fetchone()
        merged = (json.loads(row[0]) if row and row[0] else {}) | metrics
        con.execute("UPDATE tag_runs SET metrics = ? WHERE run_id = ?", [json.dumps(merged, default=float), run_id])


# ---- reading --------------------------------------------------------------------------------------


def tag_runs_stamp(store: Store) -> int:
    """A number that changes whenever a tag run starts or finishes (a cache key for tag frames)."""
    row = store.query_df(
        "SELECT (SELECT count(*) FROM tag_runs) AS n, (SELECT coalesce(max(run_id), 0) FROM tag_runs) AS m, "
        "(SELECT count(*) FROM runs WHERE kind = 'tag' AND status = 'finished') AS done").iloc[0]
    return int(row.n) * 1_000_000 + int(row.m) * 1000 + int(row.done)


def tag_runs(store: Store, dataset: str | None = None) -> pd.DataFrame:
    """Tagging runs, newest first, with backend, tags, methods, metrics and how far they got."""
    where = "WHERE d.name = ?" if dataset else ""
    df = store.query_df(
        "SELECT r.run_id, r.status, r.model, r.started_at, r.finished_at, r.n_samples, r.params, d.name AS dataset, "
        "t.backend, t.tags, t.target, t.n_target, t.methods, t.metrics, "
        "(SELECT count(DISTINCT sample_id) FROM tags x WHERE x.run_id = r.run_id) AS n_tagged "
        f"FROM runs r JOIN tag_runs t USING (run_id) LEFT JOIN datasets d USING (dataset_id) {where} "
        "ORDER BY r.run_id DESC", [dataset] if dataset else [])
    for col in ("methods", "metrics", "params"):
        df[col] = df[col].map(lambda v: json.loads(v) if isinstance(v, str) and v else {})
    return df


def tagged_datasets(store: Store) -> list[str]:
    """Names of the datasets with at least one tag (from dataset runs or selection runs)."""
    df = store.query_df("SELECT DISTINCT d.name FROM datasets d WHERE EXISTS (SELECT 1 FROM tags t JOIN samples s "
                        "ON s.id = t.sample_id WHERE s.dataset_id = d.dataset_id) ORDER BY 1")
    return df["name"].tolist()


def run_tags(store: Store, run_id: int, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """One run's rows, long form."""
    extra = " AND tag IN (SELECT unnest(?::VARCHAR[]))" if tags else ""
    return store.query_df(f"SELECT * FROM tags WHERE run_id = ?{extra} ORDER BY sample_id, tag",
                          [run_id, list(tags)] if tags else [run_id])


def current_tags(store: Store, dataset: str | None = None, *, run_ids: Sequence[int] | None = None,
                 sample_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """The current tags, one row per sample (indexed by sample id), one column per tag.

    Current = from the newest run that has that tag for that sample (or only from `run_ids`). Columns:
    `<tag>` (value; for score tags the score), `<tag>__score`, `<tag>__status`, `<tag>__run`; plus
    `dataset`. A value that is not 'ok' is None, its status says why."""
    clauses, params = ["TRUE"], []
    if dataset is not None:
        clauses.append("d.name = ?")
        params.append(dataset)
    if run_ids:
        clauses.append("t.run_id IN (SELECT unnest(?::INTEGER[]))")
        params.append([int(r) for r in run_ids])
    if sample_ids is not None:
        clauses.append("t.sample_id IN (SELECT unnest(?::BIGINT[]))")
        params.append([int(i) for i in sample_ids])
    long = store.query_df(
        "SELECT t.sample_id, d.name AS dataset, t.tag, t.value, t.score, t.status, t.run_id FROM tags t "
        "JOIN samples s ON s.id = t.sample_id JOIN datasets d ON d.dataset_id = s.dataset_id "
        f"WHERE {' AND '.join(clauses)} "
        "QUALIFY row_number() OVER (PARTITION BY t.sample_id, t.tag ORDER BY t.run_id DESC) = 1", params)
    return widen(long)


def widen(long: pd.DataFrame) -> pd.DataFrame:
    """Long tag rows (sample_id, dataset, tag, value, score, status, run_id) -> one row per sample."""
    if long.empty:
        return pd.DataFrame(index=pd.Index([], name="sample_id", dtype="int64"))
    long = long.copy()
    long["shown"] = np.where(long["tag"].isin(SCORE_TAGS), long["score"], long["value"])
    long.loc[long["status"] != "ok", "shown"] = None
    wide = long.pivot(index="sample_id", columns="tag")
    out = pd.DataFrame(index=wide.index)
    out["dataset"] = long.groupby("sample_id")["dataset"].first() if "dataset" in long else None
    for tag in long["tag"].unique():
        out[tag] = wide[("shown", tag)]
        out[f"{tag}__score"] = pd.to_numeric(wide[("score", tag)], errors="coerce")
        out[f"{tag}__status"] = wide[("status", tag)]
        out[f"{tag}__run"] = wide[("run_id", tag)].astype("Int64")
    for tag in SCORE_TAGS & set(long["tag"]):
        out[tag] = pd.to_numeric(out[tag], errors="coerce")
    out.index = out.index.astype("int64")
    return out


def status_counts(store: Store, run_id: int) -> pd.DataFrame:
    """Per tag: how many rows of each status (the honesty table the page shows)."""
    df = store.query_df("SELECT tag, status, count(*) AS n FROM tags WHERE run_id = ? GROUP BY ALL", [run_id])
    if df.empty:
        return df
    return df.pivot_table(index="tag", columns="status", values="n", fill_value=0).reset_index()


# ---- comparing --------------------------------------------------------------------------------------


def compare_runs(store: Store, run_a: int, run_b: int, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """Agreement table of two runs, one row per tag both made: samples in common, how many both made
    (status ok), exact agreement and Cohen's kappa for categorical tags, Spearman correlation for scores."""
    a = run_tags(store, run_a, tags)
    b = run_tags(store, run_b, tags)
    both = a.merge(b, on=["sample_id", "tag"], suffixes=("_a", "_b"))
    rows = []
    for tag, g in both.groupby("tag", sort=True):
        ok = g[(g["status_a"] == "ok") & (g["status_b"] == "ok")]
        row = {"tag": tag, "n_common": len(g), "n_both_ok": len(ok), "agreement": float("nan"),
               "kappa": float("nan"), "spearman": float("nan")}
        if tag in SCORE_TAGS:
            if len(ok) > 2:
                row["spearman"] = float(ok["score_a"].rank().corr(ok["score_b"].rank()))
        elif len(ok):
            row["agreement"] = float((ok["value_a"] == ok["value_b"]).mean())
            row["kappa"] = cohen_kappa(list(ok["value_a"]), list(ok["value_b"]))
        rows.append(row)
    return pd.DataFrame(rows, columns=["tag", "n_common", "n_both_ok", "agreement", "kappa", "spearman"])


def confusion(store: Store, run_a: int, run_b: int, tag: str) -> pd.DataFrame:
    """Cross-tab of one categorical tag between two runs (rows: run a, columns: run b; status shown
    in brackets where not ok)."""
    a, b = run_tags(store, run_a, [tag]), run_tags(store, run_b, [tag])
    both = a.merge(b, on="sample_id", suffixes=("_a", "_b"))
    if both.empty:
        return pd.DataFrame()
    va = both["value_a"].where(both["status_a"] == "ok", "[" + both["status_a"] + "]")
    vb = both["value_b"].where(both["status_b"] == "ok", "[" + both["status_b"] + "]")
    return pd.crosstab(va.rename(f"run {run_a}"), vb.rename(f"run {run_b}"))


def agreement_with_labels(store: Store, tags_df: pd.DataFrame, schema: str, field: str, tag: str) -> dict[str, Any] | None:
    """Machine tag vs hand labels (core.labels.labelling.current_labels, when that module and labels exist)."""
    from core.labels.labelling import current_labels

    try:
        labels = current_labels(store, schema)
    except Exception:  # noqa: BLE001 - no schema/labels yet: nothing to compare
        return None
    if labels.empty or field not in labels.columns or tag not in tags_df.columns:
        return None
    both = labels[[field]].join(tags_df[[tag]], how="inner").dropna()
    if both.empty:
        return None
    human, machine = both[field].astype(str).tolist(), both[tag].astype(str).tolist()
    return {"n": len(both), "agreement": float(np.mean([h == m for h, m in zip(human, machine, strict=True)])),
            "kappa": cohen_kappa(human, machine),
            "table": pd.crosstab(pd.Series(human, name="hand label"), pd.Series(machine, name="machine tag"))}


def samples_text(store: Store, sample_ids: Sequence[int], limit: int = 50) -> pd.DataFrame:
    """Id, dataset and the plain conversation text of some samples (for 'click a bar to see them')."""
    ids = [int(i) for i in list(sample_ids)[:limit]]
    return store.query_df(
        "SELECT s.id AS sample_id, d.name AS dataset, s.text FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE s.id IN (SELECT unnest(?::BIGINT[])) ORDER BY s.id", [ids])


def quality_scores(store: Store, ids: list[int]) -> pd.Series | None:
    """Current response_quality per sample id, or None: a hook for core.dedup.groups.QUALITY_SOURCES."""
    if not ids:
        return None
    current, params = newest_ok_sql("t.score", ["response_quality"])
    df = store.query_df(f"SELECT sample_id, score FROM ({current}) WHERE sample_id IN (SELECT unnest(?::BIGINT[]))",
                        [*params, list(map(int, ids))])
    return None if df.empty else df.set_index("sample_id")["score"]


# ---- what a page may chart ------------------------------------------------------------------------


def charted_and_missing(store: Store, df: pd.DataFrame, tags: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(tags of `tags` with at least one value in the current-tags frame `df`, {tag without any value: why,
    in full}): a tag with no value is never charted, the page says why instead."""
    charted, missing = [], {}
    for tag in tags:
        if tag not in df.columns:
            continue
        if (df.get(f"{tag}__status") == "ok").any():
            charted.append(tag)
        else:
            missing[tag] = _why_missing(store, df, tag)
    return charted, missing


def _why_missing(store: Store, df: pd.DataFrame, tag: str) -> str:
    runs = sorted({int(r) for r in df[f"{tag}__run"].dropna()})
    rows = store.query_df("SELECT status, any_value(detail) AS detail, count(*) AS n FROM tags WHERE tag = ? AND "
                          "run_id IN (SELECT unnest(?::INTEGER[])) AND status <> 'ok' GROUP BY status ORDER BY n DESC",
                          [tag, runs])
    parts = [f"{int(r.n)} {r.status.replace('_', ' ')}" + (f": {r.detail}" if isinstance(r.detail, str) else "")
             for r in rows.itertuples()]
    return (f"no sample has a {tag} value (run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))}): "
            + "; ".join(parts))


def method_lines(store: Store, datasets: Sequence[str]) -> list[tuple[str, str, str]]:
    """(dataset, tag, method with its paper and deviation) of every tag of each dataset's newest run."""
    out = []
    for d in datasets:
        runs = tag_runs(store, d)
        if runs.empty:
            continue
        r = runs.iloc[0]
        out += [(d, tag, f"run {int(r.run_id)}: {r.methods.get(tag, 'method not recorded')}") for tag in r.tags]
    return out


# ---- signals (core/signals): one per stored tag ------------------------------------------------------

# Tags whose values are free text rather than a small vocabulary; every other tag is a category.
TEXT_TAGS = {"intent", "knowledge", "other_categories"}
# A tag shown under another signal name than tag.<name>.
SIGNAL_NAMES = {"preference_proxy": "reward.proxy"}


def newest_ok_sql(value: str, tags: Sequence[str], *, finished: bool = False,
                  runs: Sequence[int] | None = None) -> tuple[str, list[Any]]:
    """The one definition of "the current tag": per sample and tag, the newest run's 'ok' row with a
    `value` (an expression over `t`, a fixed string from the caller). SQL and its parameters, yielding
    sample_id, tag, value, score, run_id. `finished`: only runs that finished; `runs`: only these runs.

    With `runs` known, each run's rows count where no newer run of them has a value for that sample and tag
    (anti-joins: on 1M samples and two runs about 10x faster than a window over every row); otherwise a
    window picks the newest row per sample and tag."""
    ok = f"t.status = 'ok' AND {value} IS NOT NULL AND list_contains(?::VARCHAR[], t.tag)"
    select = f"SELECT t.sample_id, t.tag, {value} AS value, t.score, t.run_id FROM tags t WHERE {ok}"
    if runs is None:
        done = " AND t.run_id IN (SELECT run_id FROM runs WHERE status = 'finished')" if finished else ""
        return (f"{select}{done} QUALIFY row_number() OVER (PARTITION BY t.sample_id, t.tag "
                "ORDER BY t.run_id DESC) = 1", [list(tags)])
    newest_first = sorted({int(r) for r in runs}, reverse=True)
    one = f"SELECT t.sample_id, t.tag, {value} AS value, t.score, t.run_id FROM tags t WHERE t.tag = ? AND t.run_id = ? " \
          f"AND t.status = 'ok' AND {value} IS NOT NULL"
    newer = f"SELECT n.sample_id FROM tags n WHERE n.tag = ? AND list_contains(?::INTEGER[], n.run_id) " \
            f"AND n.status = 'ok' AND {value.replace('t.', 'n.')} IS NOT NULL"
    parts, params = [], []
    for tag in tags:
        for k, run in enumerate(newest_first):
            parts.append(one + (f" AND t.sample_id NOT IN ({newer})" if k else ""))
            params += [tag, run] + ([tag, newest_first[:k]] if k else [])
    return " UNION ALL ".join(parts) or f"{select} AND false", params or [list(tags)]


def _tag_signal(tag: str) -> Any:
    from core.signals.registry import Bound, Signal

    kind = "number" if tag in SCORE_TAGS else "text" if tag in TEXT_TAGS else "category"
    value = "t.score" if kind == "number" else "t.value"

    def build(con: Any, dataset_ids: Sequence[int], run: int | None) -> Bound:
        runs = [run] if run is not None else _runs_with(con, tag) or [-1]
        sql, params = newest_ok_sql(value, [tag], runs=runs)
        return Bound(f"SELECT sample_id, value FROM ({sql})", params, tuple(r for r in runs if r >= 0))

    method = {"number": "its score", "text": "its free-text value", "category": "its vocabulary value"}[kind]
    read = ("higher = better (a reward or proxy score)" if tag in ("response_quality", "preference_proxy")
            else "a count" if kind == "number" else "one value per sample; missing where the tagger failed")
    return Signal(SIGNAL_NAMES.get(tag, f"tag.{tag}"), kind,
                  f"machine tag {tag} (core/tags/results.py, assay tag): {method}, from the newest finished tag run "
                  "with an ok value per sample", read, build, family="tags")


def signals(con: Any, dataset_ids: Sequence[int] | None) -> list[Any]:
    """Signal provider: one signal per tag stored by a finished run."""
    listed = con.execute("SELECT DISTINCT unnest(tags) FROM tag_runs JOIN runs USING (run_id) "
                         "WHERE status = 'finished'").fetchall()
    unlisted = _unlisted_runs(con)
    extra = con.execute("SELECT DISTINCT tag FROM tags WHERE list_contains(?::INTEGER[], run_id)",
                        [unlisted]).fetchall() if unlisted else []
    return [_tag_signal(name) for name in sorted({r[0] for r in listed + extra})]


def _unlisted_runs(con: Any) -> list[int]:
    """Finished runs with tag rows but no tag_runs row (tags written by scale steps or directly)."""
    runs = [int(r[0]) for r in con.execute("SELECT run_id FROM runs WHERE status = 'finished' "
                                           "AND run_id NOT IN (SELECT run_id FROM tag_runs)").fetchall()]
    if not runs:
        return []
    # Only the run_id column is read (tag runs write their rows together, so most row groups are skipped).
    return [int(r[0]) for r in con.execute("SELECT DISTINCT run_id FROM tags WHERE list_contains(?::INTEGER[], run_id)",
                                           [runs]).fetchall()]


def _runs_with(con: Any, tag: str) -> list[int]:
    """Finished runs that stored `tag`: tag_runs says so (a small table), or their rows do."""
    listed = con.execute("SELECT run_id FROM tag_runs JOIN runs USING (run_id) WHERE status = 'finished' "
                         "AND list_contains(tags, ?)", [tag]).fetchall()
    unlisted = _unlisted_runs(con)
    extra = con.execute("SELECT DISTINCT run_id FROM tags WHERE tag = ? AND list_contains(?::INTEGER[], run_id)",
                        [tag, unlisted]).fetchall() if unlisted else []
    return sorted({int(r[0]) for r in listed + extra})
