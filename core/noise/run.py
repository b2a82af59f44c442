"""One entry point for noisy-label inspection, its stored results, and what the page and the mixture
exporter read back.

`run_noise(store, dataset, label_field, methods)` loads the labels and the embeddings, runs the chosen
methods, records a `noise` run and writes one row per sample (a score and a flag per method, plus a
combined score) in `noise_scores`, per-epoch trajectories in `noise_trajectories` and annotator quality
in `noise_annotators`. The results come back as a DataFrame indexed by sample id.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import InputError
from core.noise import cleanlab_methods, dynamics, multi_annotator, parallel, rescaling
from core.noise.config import (
    DEFAULT_METHODS,
    FLAG_COLUMNS,
    METHODS,
    RESCALER_VARIANTS,
    SCORE_COLUMNS,
    NoiseConfig,
)
from core.noise.features import LabelData, embedding_matrix, load_labels, parse_label_source
from core.noise.parallel import resolve_workers, run_jobs
from core.store.database import Store
from core.store.runs import Run

Progress = Callable[[float, str], None]
RESCALER_FLAG_RATIO = 0.5
# Below this many samples the methods run one after another in this process: starting worker processes
# (seconds each, importing torch) and sharing the cores cost more than the second core saves (measured:
# 1,400 samples, all four methods, warm workers, light load: 5 s one after another, 7-10 s on two workers).
PARALLEL_MIN_SAMPLES = 5000  # flagged when the weight is below this share of the median weight
# Relative cost of each method, for the progress bar (measured on 25k samples, 2 cores).
_COST = {"labels": 0.02, "embed": 0.1, "cleanlab": 0.25, "cartography": 0.1, "aum": 0.2, "rescaler": 0.3,
         "multiannotator": 0.05, "write": 0.03}


class _Stages:
    """Overall progress: the sum over stages of each stage's cost share times its own 0..1 progress
    (stages may run at the same time in worker processes)."""

    def __init__(self, progress: Progress | None, stages: list[str]) -> None:
        self.progress, self.total = progress, sum(_COST[s] for s in stages)
        self.done: dict[str, float] = {}

    def stage(self, name: str, part: int | None = None, of: int = 1) -> Progress | None:
        if not self.progress:
            return None
        key, share = f"{name}:{part}", _COST[name] / self.total / of

        def report(f: float, msg: str) -> None:
            self.done[key] = share * min(max(f, 0.0), 1.0)
            self.progress(min(1.0, sum(self.done.values())), f"{name}: {msg}")

        return report


def _predicted_probs(parts: dict[str, Any]) -> np.ndarray | None:
    for key in ("pred_probs", "aum_probs", "cartography_probs", "rescaler_probs"):
        if parts.get(key) is not None:
            return parts[key]
    return None


def _cleanlab_job(X: np.ndarray, y: np.ndarray, c: int, *, folds: int, seed: int, knn_k: int | None,
                  progress: Progress | None = None) -> tuple[np.ndarray, pd.DataFrame | None, pd.DataFrame | None]:
    """Out-of-fold probabilities; with knn_k, also confident learning and Datalab's outliers/near duplicates."""
    if progress:
        progress(0.0, "out-of-fold probabilities")
    probs = cleanlab_methods.out_of_fold_probs(X, y, c, folds=folds, seed=seed)
    if knn_k is None:
        return probs, None, None
    cl = cleanlab_methods.confident_learning(y, probs)
    if progress:
        progress(0.8, "outliers and near duplicates")
    return probs, cl, cleanlab_methods.datalab_issues(X, y, probs, k=knn_k)


def _cartography_job(X: np.ndarray, y: np.ndarray, c: int, *, progress: Progress | None = None,
                     **train: Any) -> dynamics.Trajectories:
    return dynamics.train_dynamics(X, y, c, progress=progress, **train)


# Rough cost of each job (minutes on 25k samples), so the longest start first.
_JOB_COST = {"rescaler": 4.0, "cleanlab": 2.5, "oof": 1.5, "aum:0": 1.0, "aum:1": 1.0, "cartography": 1.0}


def method_jobs(X: np.ndarray, y: np.ndarray, c: int, methods: Sequence[str], cfg: NoiseConfig,
                stages: _Stages | None = None) -> tuple[dict[str, Any], dict[str, Progress | None]]:
    """The independent pieces of work of a run, longest first, for parallel.run_jobs (functions that take
    progress=), and their progress callbacks. Job names: cleanlab (or oof), cartography, aum:0, aum:1, rescaler."""
    stages = stages or _Stages(None, [])
    train = {"hidden": cfg.hidden, "seed": cfg.seed, "epochs": cfg.epochs}
    jobs: dict[str, Any] = {}
    bars: dict[str, Progress | None] = {}
    for method in methods:
        report = stages.stage(method) if method != "aum" else None
        if method == "cleanlab":
            jobs["cleanlab"] = (_cleanlab_job, (X, y, c), {"folds": cfg.folds, "seed": cfg.seed, "knn_k": cfg.knn_k})
            bars["cleanlab"] = report
        elif method == "multiannotator" and "cleanlab" not in methods:
            jobs["oof"] = (_cleanlab_job, (X, y, c), {"folds": cfg.folds, "seed": cfg.seed, "knn_k": None})
            bars["oof"] = report
        elif method == "multiannotator":
            bars["multiannotator"] = report  # runs here after the jobs, on cleanlab's probabilities
        elif method == "cartography":
            jobs["cartography"], bars["cartography"] = (_cartography_job, (X, y, c), train), report
        elif method == "aum":
            for k, subset in enumerate(dynamics.aum_subsets(len(y), c, cfg.seed)):
                jobs[f"aum:{k}"] = (dynamics.aum_pass, (X, y, c, subset, k), train)
                part = stages.stage("aum", part=k, of=2)
                bars[f"aum:{k}"] = (lambda f, m, k=k, r=part: r(f, f"pass {k + 1}/2, {m}")) if part else None
        elif method == "rescaler":
            jobs["rescaler"] = (rescaling.rescale_train, (X, y, c), {
                "variant": cfg.rescaler_variant, "epochs": cfg.rescaler_epochs, "passes": cfg.passes,
                "hidden": cfg.hidden, "seed": cfg.seed})
            bars["rescaler"] = report
    order = sorted(jobs, key=lambda name: -_JOB_COST.get(name, 1.0))
    return {name: jobs[name] for name in order}, bars


def _run_methods(X: np.ndarray, labels: LabelData, methods: Sequence[str], cfg: NoiseConfig,
                 stages: _Stages) -> tuple[pd.DataFrame, dict[str, Any]]:
    y, c = labels.y, len(labels.classes)
    table = pd.DataFrame(index=pd.Index(labels.sample_ids, name="sample_id"))
    parts: dict[str, Any] = {"series": {}, "summary": {}, "seconds": {}}
    if "multiannotator" in methods and labels.annotations is None:
        raise ValueError("multiannotator needs several labels per sample: use a votes: or annotators: label source")
    jobs, bars = method_jobs(X, y, c, methods, cfg, stages)
    workers = resolve_workers(cfg.threads) if len(y) >= PARALLEL_MIN_SAMPLES else 1
    t0 = time.monotonic()
    timed = run_jobs(jobs, workers, bars)
    results = {name: result for name, (result, _) in timed.items()}
    parts["seconds"].update({name: secs for name, (_, secs) in timed.items()})
    parts["seconds"]["all_methods_wall"] = round(time.monotonic() - t0, 2)
    parts["summary"]["workers"] = min(workers, len(jobs))
    if "cleanlab" in results or "oof" in results:
        parts["pred_probs"], cl, dl = results.get("cleanlab") or results["oof"]
    if "cleanlab" in results:
        table[["cleanlab_score", "cleanlab_flag"]] = cl[["cleanlab_score", "cleanlab_flag"]].to_numpy()
        for col in dl.columns:
            table[col] = dl[col].to_numpy()
    if "cartography" in results:
        traj = results["cartography"]
        carto = dynamics.cartography(traj)
        for col in carto.columns:
            table[col] = carto[col].to_numpy()
        parts["series"]["p_given"], parts["cartography_probs"] = traj.p_given, traj.final_probs
    if "aum:0" in results:
        res = dynamics.aum_combine(dynamics.aum_subsets(len(y), c, cfg.seed), [results["aum:0"], results["aum:1"]], c)
        table["aum"], table["aum_flag"] = res.table["aum"].to_numpy(), res.table["aum_flag"].to_numpy()
        parts["series"]["margin"], parts["aum_probs"] = res.margins, res.final_probs
        parts["summary"]["aum_thresholds"] = res.thresholds
    if "rescaler" in results:
        res = results["rescaler"]
        cut = RESCALER_FLAG_RATIO * float(np.median(res.score))
        table["rescaler_weight"], table["rescaler_flag"] = res.score, res.score < cut
        parts["series"]["rescaler_weight"], parts["rescaler_probs"] = res.weights, res.final_probs
        parts["summary"]["rescaler_flag_below"] = cut
        parts["summary"]["rescaler_variant"] = cfg.rescaler_variant
    if "multiannotator" in methods:
        ma = multi_annotator.multiannotator(labels.annotations, parts["pred_probs"], y)
        classes = np.asarray(labels.classes + [None], dtype=object)
        table["multiannotator_score"] = ma.table["multiannotator_score"].to_numpy()
        table["multiannotator_flag"] = ma.table["multiannotator_flag"].to_numpy()
        table["consensus_label"] = classes[ma.table["consensus_label"].to_numpy()]
        table["annotator_agreement"] = ma.table["annotator_agreement"].to_numpy()
        parts["annotators"] = ma.annotators
        if bars.get("multiannotator"):
            bars["multiannotator"](1.0, "done")
    return table, parts


def _combine(table: pd.DataFrame, labels: LabelData, methods: Sequence[str], parts: dict[str, Any]) -> pd.DataFrame:
    classes = np.asarray(labels.classes, dtype=object)
    table.insert(0, "given_label", classes[labels.y])
    probs = _predicted_probs(parts)
    if probs is not None:
        table.insert(1, "predicted_label", classes[probs.argmax(axis=1)])
        table.insert(2, "predicted_prob", probs.max(axis=1))
    flags = [FLAG_COLUMNS[m] for m in methods if FLAG_COLUMNS[m] in table]
    for col in flags:
        table[col] = table[col].astype(bool)
    table["n_flags"] = table[flags].sum(axis=1).astype(int)
    # Percentile ranks put every method's score on one 0..1 scale (low = suspicious) before averaging.
    ranks = [table[SCORE_COLUMNS[m]].rank(pct=True) for m in methods if SCORE_COLUMNS[m] in table]
    table["label_score"] = pd.concat(ranks, axis=1).mean(axis=1)
    table["is_label_issue"] = table["n_flags"] >= max(1, math.ceil(len(flags) / 2))
    return table


def run_noise(
    store: Store,
    dataset: str,
    label_field: str,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    embedding_run_id: int | None = None,
    text: str = "instruction",
    config: NoiseConfig | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Find probably-mislabelled samples of `dataset` under the label source `label_field`.

    Returns one row per labelled sample (index: sample id) with a score and a flag per method,
    given and predicted label, `n_flags`, `label_score` and `is_label_issue`; `df.attrs` holds
    run_id, classes and a summary. The run and its per-sample results are stored.
    """
    methods = _check_methods(methods)
    cfg = config or NoiseConfig()
    if cfg.rescaler_variant not in RESCALER_VARIANTS:
        raise InputError(f"rescaler_variant must be one of {', '.join(RESCALER_VARIANTS)}; got {cfg.rescaler_variant!r}")
    stages = _Stages(progress, ["labels", "embed", *methods, "write"])
    src = parse_label_source(label_field)
    workers = resolve_workers(cfg.threads)
    if workers > 1 and store.dataset(dataset).n_samples >= PARALLEL_MIN_SAMPLES:
        parallel.pool(workers)  # workers warm up (imports, torch) while the labels and embeddings load
    report = stages.stage("labels")
    labels = load_labels(store, dataset, src.spec)
    if report:
        report(1.0, f"{len(labels.sample_ids)} labelled samples, {len(labels.classes)} classes")
    emb_run, X = embedding_matrix(store, dataset, labels.sample_ids, embedding_run_id=embedding_run_id, text=text,
                                  progress=stages.stage("embed"))
    info = store.dataset(dataset)
    params = {"dataset": dataset, "label_source": src.spec, "methods": list(methods), "embedding_run_id": emb_run,
              **{k: v for k, v in cfg.__dict__.items() if k != "extra"}, **cfg.extra}
    with store.run("noise", params, dataset_id=info.dataset_id,
                   sample_filter=f"dataset {dataset}: samples labelled by {src.spec}") as run:
        table, parts = _run_methods(X, labels, methods, cfg, stages)
        table = _combine(table, labels, methods, parts)
        summary = _summary(table, methods, parts)
        report = stages.stage("write")
        _write(store, run, info.dataset_id, src.spec, emb_run, labels, methods, table, parts, summary)
        if report:
            report(1.0, "saved")
    table.attrs.update(run_id=run.run_id, classes=labels.classes, summary=summary, embedding_run_id=emb_run)
    return table


def _check_methods(methods: Sequence[str] | str) -> list[str]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be among {', '.join(METHODS)}; got {list(methods)}")
    return list(dict.fromkeys(methods))


def _summary(table: pd.DataFrame, methods: Sequence[str], parts: dict[str, Any]) -> dict[str, Any]:
    flags = {m: int(table[FLAG_COLUMNS[m]].sum()) for m in methods if FLAG_COLUMNS[m] in table}
    extra = {k: int(table[k].sum()) for k in ("outlier_flag", "near_duplicate_flag") if k in table}
    return {"n_samples": len(table), "flagged": flags, "other_issues": extra,
            "n_label_issues": int(table["is_label_issue"].sum()), "seconds": parts["seconds"], **parts["summary"]}


# ---- storage ----------------------------------------------------------------------------------

_SCORE_FIELDS = [
    "given_label", "predicted_label", "predicted_prob", "label_score", "is_label_issue", "n_flags",
    "cleanlab_score", "cleanlab_flag", "outlier_score", "outlier_flag", "near_duplicate_score",
    "near_duplicate_flag", "cartography_confidence", "cartography_variability", "cartography_correctness",
    "cartography_region", "cartography_flag", "aum", "aum_flag", "rescaler_weight", "rescaler_flag",
    "multiannotator_score", "multiannotator_flag", "consensus_label", "annotator_agreement",
]


def _trajectory_table(run_id: int, ids: np.ndarray, series: dict[str, np.ndarray]) -> pa.Table:
    frames = []
    for name, values in series.items():
        flat = pa.array(values.astype(np.float32).reshape(-1), pa.float32())
        lists = pa.FixedSizeListArray.from_arrays(flat, values.shape[1]).cast(pa.list_(pa.float32()))
        frames.append(pa.table({"run_id": pa.array(np.full(len(ids), run_id), pa.int32()),
                                "sample_id": pa.array(ids, pa.int64()),
                                "series": pa.array([name] * len(ids), pa.string()), "values": lists}))
    return pa.concat_tables(frames) if frames else None


def _write(store: Store, run: Run, dataset_id: int, source: str, emb_run: int, labels: LabelData,
           methods: Sequence[str], table: pd.DataFrame, parts: dict[str, Any], summary: dict[str, Any]) -> None:
    run_id = run.run_id
    scores = table.reindex(columns=_SCORE_FIELDS).reset_index()
    scores.insert(0, "run_id", run_id)
    scores_arrow = pa.Table.from_pandas(scores, preserve_index=False)  # noqa: F841 - read by DuckDB
    traj = _trajectory_table(run_id, labels.sample_ids, parts["series"])  # noqa: F841
    annotators = parts.get("annotators")
    with store.transaction() as con:
        con.execute("INSERT INTO noise_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, dataset_id, source, emb_run, labels.classes, list(methods), len(table),
                     labels.n_dropped, labels.n_relabelled, json.dumps(summary, default=float)])
        cols = ", ".join(f'"{c}"' for c in ["run_id", "sample_id", *_SCORE_FIELDS])
        con.register("scores_arrow", scores_arrow)
        con.execute(f"INSERT INTO noise_scores ({cols}) SELECT {cols} FROM scores_arrow")
        if traj is not None:
            con.register("traj", traj)
            con.execute('INSERT INTO noise_trajectories SELECT run_id, sample_id, series, "values" FROM traj')
        if annotators is not None and not annotators.empty:
            ann = annotators.reindex(columns=["annotator", "annotator_quality", "agreement_with_consensus",
                                              "n_labels", "worst_class"])
            ann["annotator"] = ann["annotator"].astype(str)
            ann["worst_class"] = ann["worst_class"].map(
                lambda v: labels.classes[int(v)] if pd.notna(v) and 0 <= int(v) < len(labels.classes) else None)
            con.register("ann", ann)
            con.execute("INSERT INTO noise_annotators SELECT ?, * FROM ann", [run_id])
        run.finish(len(table), con=con)


# ---- reading back -----------------------------------------------------------------------------


def noise_runs(store: Store, dataset: str | None = None) -> pd.DataFrame:
    """Finished noise runs, newest first, with dataset name and label source."""
    sql = ("SELECT n.run_id, d.name AS dataset, n.label_source, n.methods, n.n_samples, n.classes, "
           "n.embedding_run_id, r.started_at, n.summary FROM noise_runs n JOIN runs r USING (run_id) "
           "JOIN datasets d ON d.dataset_id = n.dataset_id WHERE r.status = 'finished'"
           + (" AND d.name = ?" if dataset else "") + " ORDER BY n.run_id DESC")
    return store.query_df(sql, [dataset] if dataset else [])


def run_info(store: Store, run_id: int) -> dict[str, Any]:
    df = store.query_df("SELECT n.*, d.name AS dataset FROM noise_runs n JOIN datasets d USING (dataset_id) "
                        "WHERE n.run_id = ?", [run_id])
    if df.empty:
        raise KeyError(f"No noise run {run_id}")
    info = df.iloc[0].to_dict()
    info["summary"] = json.loads(info["summary"]) if info["summary"] else {}
    info["classes"], info["methods"] = list(info["classes"]), list(info["methods"])
    return info


def load_scores(store: Store, run_id: int) -> pd.DataFrame:
    """The per-sample table of a run, indexed by sample id (only the methods that ran)."""
    df = store.query_df("SELECT * EXCLUDE (run_id) FROM noise_scores WHERE run_id = ? ORDER BY sample_id", [run_id])
    return df.set_index("sample_id").dropna(axis=1, how="all")


def noise_weights(store: Store, run_id: int) -> pd.DataFrame:
    """DataFrame(sample_id, weight) for a mixture export: loss weights with mean 1 over the run's samples.

    From the rescaler's weights where the run has them, else from the combined label score.
    """
    df = store.query_df("SELECT sample_id, rescaler_weight, label_score FROM noise_scores WHERE run_id = ? "
                        "ORDER BY sample_id", [run_id])
    if df.empty:
        raise KeyError(f"No noise run {run_id} (or it has no samples)")
    raw = df["rescaler_weight"] if df["rescaler_weight"].notna().all() else df["label_score"]
    raw = raw.astype(float).clip(lower=1e-6)
    return pd.DataFrame({"sample_id": df["sample_id"].astype("int64"), "weight": raw / raw.mean()})


def recorded_series(store: Store, run_id: int) -> set[str]:
    """The names of the training trajectories a noise run recorded (rescaler_weight, ...)."""
    rows = store.query_df("SELECT DISTINCT series FROM noise_trajectories WHERE run_id = ?", [run_id])
    return set(rows.series)


def trajectories(store: Store, run_id: int, sample_ids: Sequence[int], series: str = "rescaler_weight") -> pd.DataFrame:
    """Long form (sample_id, epoch, value) of one series for some samples."""
    df = store.query_df('SELECT sample_id, "values" FROM noise_trajectories WHERE run_id = ? AND series = ? '
                        "AND sample_id IN (SELECT unnest(?::BIGINT[]))", [run_id, series, list(map(int, sample_ids))])
    if df.empty:
        return pd.DataFrame(columns=["sample_id", "epoch", "value"])
    long = df.explode("values").rename(columns={"values": "value"})
    long["epoch"] = long.groupby("sample_id").cumcount() + 1
    long["value"] = long["value"].astype(float)
    return long[["sample_id", "epoch", "value"]].reset_index(drop=True)


def annotator_quality(store: Store, run_id: int) -> pd.DataFrame:
    return store.query_df("SELECT * EXCLUDE (run_id) FROM noise_annotators WHERE run_id = ? "
                          "ORDER BY annotator_quality", [run_id])


def suspicious(store: Store, run_id: int, *, limit: int = 200, min_flags: int = 1) -> pd.DataFrame:
    """Samples ranked most suspicious first (most flags, then lowest combined score), with a text preview."""
    return store.query_df(
        "SELECT n.* EXCLUDE (run_id), left(s.text, 300) AS text FROM noise_scores n JOIN samples s ON s.id = n.sample_id "
        "WHERE n.run_id = ? AND n.n_flags >= ? ORDER BY n.n_flags DESC, n.label_score ASC, n.sample_id LIMIT ?",
        [run_id, min_flags, limit]).dropna(axis=1, how="all")


def flagged_ids(store: Store, run_id: int, *, min_flags: int = 1) -> list[int]:
    """Every sample flagged by at least `min_flags` methods, most suspicious first (no limit)."""
    return store.query_df("SELECT sample_id FROM noise_scores WHERE run_id = ? AND n_flags >= ? "
                          "ORDER BY n_flags DESC, label_score ASC, sample_id", [run_id, min_flags]).sample_id.tolist()


def confusion(store: Store, run_id: int) -> pd.DataFrame:
    """Counts of given (rows) x predicted (columns) labels, in the run's class order."""
    classes = run_info(store, run_id)["classes"]
    df = store.query_df("SELECT given_label, predicted_label, count(*) AS n FROM noise_scores WHERE run_id = ? "
                        "AND predicted_label IS NOT NULL GROUP BY ALL", [run_id])
    table = df.pivot_table(index="given_label", columns="predicted_label", values="n", fill_value=0, aggfunc="sum")
    return table.reindex(index=classes, columns=classes, fill_value=0).astype(int)


def neighbour_evidence(store: Store, run_id: int, sample_id: int, k: int = 5) -> pd.DataFrame:
    """The sample's nearest neighbours in the run's embedding with their given labels (plain text)."""
    from core.maps.neighbours import neighbours

    info = run_info(store, run_id)
    near = neighbours(store, int(info["embedding_run_id"]), int(sample_id), k=k)
    labels = store.query_df("SELECT sample_id AS id, given_label, predicted_label FROM noise_scores "
                            "WHERE run_id = ? AND sample_id IN (SELECT unnest(?::BIGINT[]))",
                            [run_id, near["id"].tolist()])
    return near.merge(labels, on="id", how="left")[["rank", "id", "score", "given_label", "predicted_label", "text"]]
