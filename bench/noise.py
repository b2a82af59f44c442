"""Noisy-label methods on real data with injected flips: quality per method and noise rate, and run time.

On hate-offensive-crowd (24,783 tweets, `class`), with 10%, 20% and 40% of labels flipped to another
class at random: for each method, precision (= recall) when the top k = number of flips are taken,
precision and recall of the method's own flags, AUROC of its score, and seconds. Writes
bench/results/noise.json and prints one table.

    .venv/bin/python -m bench.noise [--db STORE] [--n N] [--rates 0.1,0.2,0.4] [--threads 1]

The store needs the dataset (loaded with `assay demo` if absent) and embeds it if no embedding run
covers it (minutes on 2 cores; the embedding time is not part of the methods' times).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.common import shared_dir, write_results
from core.noise import cleanlab_methods, dynamics, rescaling
from core.noise.features import embedding_matrix, load_labels
from core.noise.run import RESCALER_FLAG_RATIO, NoiseConfig
from core.store import Store

DATASET = "hate-offensive-crowd"


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


def _methods(X: np.ndarray, y: np.ndarray, c: int, cfg: NoiseConfig) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """method -> (suspicion score: high = probably flipped, flags, seconds)."""
    out = {}
    t = time.perf_counter()
    probs = cleanlab_methods.out_of_fold_probs(X, y, c, folds=cfg.folds)
    cl = cleanlab_methods.confident_learning(y, probs)
    out["cleanlab"] = (-cl.cleanlab_score.to_numpy(), cl.cleanlab_flag.to_numpy(), time.perf_counter() - t)
    t = time.perf_counter()
    cleanlab_methods.datalab_issues(X, y, probs, k=cfg.knn_k)
    out["datalab_outlier_near_dup"] = (None, None, time.perf_counter() - t)
    t = time.perf_counter()
    carto = dynamics.cartography(dynamics.train_dynamics(X, y, c, epochs=cfg.epochs, hidden=cfg.hidden))
    out["cartography"] = (-carto.cartography_confidence.to_numpy(), carto.cartography_flag.to_numpy(),
                          time.perf_counter() - t)
    t = time.perf_counter()
    aum = dynamics.aum(X, y, c, epochs=cfg.epochs, hidden=cfg.hidden).table
    out["aum"] = (-aum.aum.to_numpy(), aum.aum_flag.to_numpy(), time.perf_counter() - t)
    t = time.perf_counter()
    res = rescaling.rescale_train(X, y, c, epochs=cfg.rescaler_epochs, hidden=cfg.hidden, passes=cfg.passes)
    out["rescaler"] = (-res.score, res.score < RESCALER_FLAG_RATIO * np.median(res.score), time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=os.environ.get("ASSAY_BENCH_DB", "/tmp/assay-bench-noise.duckdb"))
    parser.add_argument("--n", type=int, default=0, help="subsample to N samples (0: all)")
    parser.add_argument("--rates", default="0.1,0.2,0.4")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    store = Store(Path(args.db))
    if DATASET not in store.dataset_names():
        from core.demo import load_demo

        load_demo(store, shared_dir(), if_empty=False, names=[DATASET])
    labels = load_labels(store, DATASET, "class")
    t = time.perf_counter()
    emb_run, X = embedding_matrix(store, DATASET, labels.sample_ids)
    embed_seconds = time.perf_counter() - t
    y0, c = labels.y, len(labels.classes)
    if args.n and args.n < len(y0):
        keep = np.random.default_rng(0).choice(len(y0), args.n, replace=False)
        X, y0 = X[keep], y0[keep]
    cfg = NoiseConfig()
    rows, timings = [], {}
    with dynamics.limit_threads(args.threads):
        for rate in [float(r) for r in args.rates.split(",")]:
            y, flipped = _flip(y0, c, rate, seed=int(rate * 100))
            for method, (suspicion, flags, seconds) in _methods(X, y, c, cfg).items():
                timings.setdefault(method, []).append(round(seconds, 1))
                if suspicion is not None:
                    rows.append({"method": method, "noise_rate": rate, **_quality(flipped, suspicion, flags),
                                 "seconds": round(seconds, 1)})
                    print(f"{method:12s} {rate:.0%}: " + ", ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()
                        if k not in ("method", "noise_rate")), flush=True)
            write_results("noise", {"dataset": DATASET, "n_samples": len(y0), "classes": labels.classes,
                                    "threads": args.threads, "config": {k: v for k, v in cfg.__dict__.items()
                                                                        if k != "extra"},
                                    "embedding_run_id": emb_run, "embedding_load_seconds": round(embed_seconds, 1),
                                    "rows": rows, "seconds_per_method": timings,
                                    "note": "flips injected on top of the dataset's own (crowd) label noise; "
                                            "precision_at_rate = recall_at_rate (top k = number of flips)"})
    print(f"\n{'method':12s} {'rate':>5s} {'P@rate':>7s} {'R@rate':>7s} {'AUROC':>6s} {'flagP':>6s} {'flagR':>6s} {'s':>6s}")
    for r in rows:
        print(f"{r['method']:12s} {r['noise_rate']:5.0%} {r['precision_at_rate']:7.3f} {r['recall_at_rate']:7.3f} "
              f"{r['auroc']:6.3f} {r['flag_precision']:6.3f} {r['flag_recall']:6.3f} {r['seconds']:6.1f}")
    print(f"samples {len(y0):,}; seconds per method and rate: {timings}")


if __name__ == "__main__":
    main()
