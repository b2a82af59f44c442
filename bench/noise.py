"""Noisy-label methods on real data with injected label flips: quality per method and noise rate, and run time.

On hate-offensive-crowd (24,783 tweets, `class`), with 10%, 20% and 40% of labels flipped to another
class at random: for each method, precision (= recall) when the top k = number of flips are taken,
precision and recall of the method's own flags, AUROC of its score, and seconds. Both variants of meta
loss rescaling are measured: `rescaler:storm` (Heck et al. 2025, the default) and
`rescaler:detached-cubed` (this project's earlier tuning; core/noise/rescaling.py). Writes
bench/results/noise.json and prints one table.

    .venv/bin/python -m bench.noise [--db STORE] [--n N] [--take K] [--rates 0.1,0.2,0.4] [--threads 2]

--n N takes a random N-row sample of the CSV as its own dataset (seed 0), so only those rows are
embedded (embedding all 24,783 tweets takes minutes on 2 idle cores, much longer on a busy machine;
it is not part of the methods' times). --threads W runs the methods as W single-threaded worker
processes at once (core/noise/parallel.py); 1 runs them one after another in this process, as before.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bench.common import shared_dir, write_results
from core.noise import dynamics
from core.noise.features import embedding_matrix, load_labels
from core.noise.parallel import run_jobs
from core.noise.run import RESCALER_FLAG_RATIO, NoiseConfig, method_jobs
from core.store.database import Store

DATASET = "hate-offensive-crowd"
METHODS = ["cleanlab", "cartography", "aum", "rescaler"]


def _flip(y: np.ndarray, n_classes: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < rate
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, int(flipped.sum()))) % n_classes
    return noisy, flipped


def _quality(flipped: np.ndarray, suspicion: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    k = int(flipped.sum())
    top = np.argsort(-suspicion, kind="stable")[:k]
    return {"precision_at_rate": float(flipped[top].mean()), "recall_at_rate": float(flipped[top].sum() / k),
            "auroc": float(roc_auc_score(flipped, suspicion)),
            "flag_precision": float(flipped[flags].mean()) if flags.any() else 0.0,
            "flag_recall": float(flags[flipped].mean()), "n_flagged": int(flags.sum())}


def _methods(X: np.ndarray, y: np.ndarray, c: int, cfg: NoiseConfig, workers: int) -> tuple[dict, dict, float]:
    """method -> (suspicion score: high = probably flipped, flags); seconds per job; wall seconds of all."""
    jobs, _ = method_jobs(X, y, c, METHODS, cfg)
    fn, args, kwargs = jobs.pop("rescaler")
    jobs = {"rescaler:storm": (fn, args, {**kwargs, "variant": "storm"}),
            "rescaler:detached-cubed": (fn, args, {**kwargs, "variant": "detached-cubed"}), **jobs}
    t = time.perf_counter()
    timed = run_jobs(jobs, workers)
    wall = time.perf_counter() - t
    res = {name: r for name, (r, _) in timed.items()}
    _, cl, _ = res["cleanlab"]
    carto = dynamics.cartography(res["cartography"])
    aum = dynamics.aum_combine(dynamics.aum_subsets(len(y), c, cfg.seed), [res["aum:0"], res["aum:1"]], c).table
    out = {"cleanlab": (-cl.cleanlab_score.to_numpy(), cl.cleanlab_flag.to_numpy()),
           "cartography": (-carto.cartography_confidence.to_numpy(), carto.cartography_flag.to_numpy()),
           "aum": (-aum.aum.to_numpy(), aum.aum_flag.to_numpy())}
    for name in ("rescaler:storm", "rescaler:detached-cubed"):
        score = res[name].score
        out[name] = (-score, score < RESCALER_FLAG_RATIO * np.median(score))
    seconds = {name: secs for name, (_, secs) in timed.items()}
    seconds["aum"] = seconds.pop("aum:0") + seconds.pop("aum:1")
    return out, seconds, wall


def _dataset(store: Store, n: int) -> str:
    """The dataset to measure: the whole demo set, or a random n-row sample of its CSV loaded on its own."""
    if not n:
        if DATASET not in store.dataset_names():
            from core.ingest.demo import load_demo

            load_demo(store, shared_dir(), if_empty=False, names=[DATASET])
        return DATASET
    name = f"{DATASET}-sample-{n}"
    if name not in store.dataset_names():
        from core.ingest.importer import ingest_records

        df = pd.read_csv(shared_dir() / DATASET / "labeled_data.csv", dtype=str).sample(n, random_state=0)
        ingest_records(store, df.drop(columns=df.columns[0]).to_dict("records"), name=name, shape="mapped",
                       mapping={"text": "tweet"}, license="MIT")
    return name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=os.environ.get("ASSAY_BENCH_DB", "/tmp/assay-bench-noise.duckdb"))
    parser.add_argument("--n", type=int, default=0, help="a random N-row sample of the dataset (0: all)")
    parser.add_argument("--take", type=int, default=0,
                        help="measure a random K of the embedded samples (seed 0), to keep a busy machine's run short")
    parser.add_argument("--rates", default="0.1,0.2,0.4")
    parser.add_argument("--threads", type=int, default=2, help="methods run at once (worker processes)")
    args = parser.parse_args()
    store = Store(Path(args.db))
    dataset = _dataset(store, args.n)
    labels = load_labels(store, dataset, "class")
    t = time.perf_counter()
    emb_run, X = embedding_matrix(store, dataset, labels.sample_ids)
    embed_seconds = time.perf_counter() - t
    y0, c = labels.y, len(labels.classes)
    if args.take and args.take < len(y0):
        keep = np.sort(np.random.default_rng(0).choice(len(y0), args.take, replace=False))
        X, y0 = X[keep], y0[keep]
    cfg = NoiseConfig()
    rows, timings, walls = [], {}, []
    for rate in [float(r) for r in args.rates.split(",")]:
        y, flipped = _flip(y0, c, rate, seed=int(rate * 100))
        results, seconds, wall = _methods(X, y, c, cfg, args.threads)
        walls.append(round(wall, 1))
        for method, secs in seconds.items():
            timings.setdefault(method, []).append(round(secs, 1))
        for method, (suspicion, flags) in results.items():
            rows.append({"method": method, "noise_rate": rate, **_quality(flipped, suspicion, flags),
                         "seconds": round(seconds[method], 1)})
            print(f"{method:24s} {rate:.0%}: " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()
                if k not in ("method", "noise_rate")), flush=True)
        print(f"all methods at {rate:.0%}: {wall:.1f} s wall with {args.threads} worker(s)", flush=True)
        write_results("noise" if args.threads != 1 else "noise-workers1", {"dataset": dataset, "n_samples": len(y0), "classes": labels.classes,
                                "workers": args.threads, "config": {k: v for k, v in cfg.__dict__.items()
                                                                    if k != "extra"},
                                "embedding_run_id": emb_run, "embedding_load_seconds": round(embed_seconds, 1),
                                "rows": rows, "seconds_per_job": timings, "wall_seconds_per_rate": walls,
                                "load_average": os.getloadavg(),
                                "note": "flips injected on top of the dataset's own (crowd) label noise; "
                                        "precision_at_rate = recall_at_rate (top k = number of flips); "
                                        "seconds per job are measured inside each job"})
    print(f"\n{'method':24s} {'rate':>5s} {'P@rate':>7s} {'AUROC':>6s} {'flagP':>6s} {'flagR':>6s} {'s':>6s}")
    for r in rows:
        print(f"{r['method']:24s} {r['noise_rate']:5.0%} {r['precision_at_rate']:7.3f} {r['auroc']:6.3f} "
              f"{r['flag_precision']:6.3f} {r['flag_recall']:6.3f} {r['seconds']:6.1f}")
    print(f"samples {len(y0):,}; wall seconds per rate (all methods, {args.threads} worker(s)): {walls}; "
          f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
