"""`assay dedup` and `assay contamination`: duplicate groups and benchmark-contamination checks."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pandas as pd

import core.contamination.check as contamination
import core.dedup.groups as dedup
from core.cli.commands import add_command
from core.cli.commands.scale import add_engine_options, run_on_ray
from core.store.database import Store


def _keep_rule(text: str) -> str:
    if text in dedup.KEEP_RULES or (text.startswith(dedup.SIGNAL_KEEP) and len(text) > len(dedup.SIGNAL_KEEP)):
        return text
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(dedup.KEEP_RULES)} or signal:NAME, got {text!r}")


def _bar(label: str):  # noqa: ANN202 - a progress callback
    """A one-line progress bar on stderr (kept off stdout so --json stays clean)."""
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="samples", file=sys.stderr, leave=False)

    def update(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update


def _dedup(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    if not args.all and not args.dataset:
        raise ValueError("name a dataset with --dataset NAME (repeatable) or use --all")
    if args.engine == "ray":
        return _dedup_on_ray(store, args)
    result = dedup.find_duplicates(
        store, None if args.all else args.dataset, method=args.method, threshold=args.threshold,
        num_perm=args.num_perm, shingle=args.shingle, keep=args.keep, n_clusters=args.clusters,
        embed_model=args.model, progress=_bar(f"dedup ({args.method})"))
    groups = dedup.group_summary(store, result.run_id).head(10)
    lines = [f"run {result.run_id}: {result.method} duplicates in {result.n_samples} samples: {result.n_groups} groups, "
             f"{result.n_in_groups} samples in groups, {result.n_to_drop} to drop (keep: {result.keep_used})"]
    lines += [f"  group {r.group_id}: {r.size} samples ({r.datasets}), min similarity {r.min_similarity:.3f}"
              for r in groups.itertuples()]
    return result.as_dict() | {"largest_groups": groups.to_dict("records")}, "\n".join(lines)


def _dedup_on_ray(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    """MinHash signatures on Ray workers; LSH, groups and representatives on this machine."""
    from core.scale import MinHashStep

    if args.method != "near" or args.all or len(args.dataset) != 1:
        raise ValueError("--engine ray runs near-duplicate detection (--method near) on one --dataset at a time")
    step = MinHashStep(threshold=args.threshold or dedup.DEFAULTS["near_threshold"], num_perm=args.num_perm,
                       shingle=args.shingle, keep=args.keep)
    return run_on_ray(store, step, args.dataset[0], args)


def _contamination(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bar = _bar("contamination")
    report = contamination.check_contamination(
        store, args.dataset, args.against, methods=methods, max_train_df=args.max_train_df,
        palm_threshold=args.palm_threshold, embed_threshold=args.embed_threshold, embed_model=args.embed_model,
        mink_model=args.mink_model, mink_k=args.mink_k, mink_threshold=args.mink_threshold,
        minkpp_threshold=args.minkpp_threshold, mink_max_length=args.mink_max_length,
        progress=lambda stage, frac: bar(int(frac * 1000), 1000))
    lines = [f"run {report.run_id}: {report.dataset} ({report.n_samples} samples) against "
             f"{', '.join(report.against)} by {', '.join(report.methods)}"]
    for r in report.summary.itertuples():
        gpt3 = f"GPT-3 {r.gpt3_n}-gram" if r.gpt3_n is not pd.NA else "GPT-3 n-gram"
        lines.append(f"  {r.eval_set}: {r.n_contaminated} training samples flagged ({gpt3} {r.n_ngram13}, "
                     f"8-gram {r.n_ngram8}, embedding {r.n_embedding}); "
                     f"{r.n_eval_items_hit} of {r.n_eval_items} eval items hit")
        if r.n_capped_ngrams:
            lines.append(f"    {r.n_capped_ngrams} n-grams of {r.n_eval_items_capped} eval items ignored by GPT-3's "
                         f"cap (in more than {args.max_train_df} training samples): see the run record")
        if r.eval_mink_mean == r.eval_mink_mean or r.eval_minkpp_mean == r.eval_minkpp_mean:
            lines.append(f"    eval items under {args.mink_model}: mean Min-K% {r.eval_mink_mean:.3f}, "
                         f"mean Min-K%++ {r.eval_minkpp_mean:.3f} (higher: more likely in its pre-training data)")
    return report.as_dict(), "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "dedup", _dedup, "find exact, near (MinHash), SemDeDup or cosine-group duplicates")
    p.add_argument("--dataset", action="append", help="dataset name (repeat for several)")
    p.add_argument("--all", action="store_true", help="across every dataset in the store")
    p.add_argument("--method", choices=dedup.METHODS, default="exact")
    p.add_argument("--threshold", type=float, help="Jaccard (near, default 0.7) or cosine (semantic; semdedup: 1 - eps; default 0.95)")
    p.add_argument("--num-perm", type=int, default=dedup.DEFAULTS["num_perm"], help="MinHash permutations")
    p.add_argument("--shingle", type=int, default=dedup.DEFAULTS["shingle"], help="words per shingle")
    p.add_argument("--keep", type=_keep_rule, default="first", help="which member represents a group: first, longest, quality or signal:NAME (the highest value of a numeric signal; semdedup: always the paper's, farthest from the centroid)")
    p.add_argument("--clusters", type=int, help="k-means clusters for semdedup/semantic (default: about sqrt(n))")
    p.add_argument("--model", help="embedding model for semdedup/semantic (default: bundled all-MiniLM-L6-v2)")
    add_engine_options(p)

    c = add_command(subparsers, "contamination", _contamination, "check a dataset against evaluation sets")
    c.add_argument("--dataset", required=True, help="the training dataset to check")
    c.add_argument("--against", action="append", help="an eval dataset (repeatable; default: every is_eval dataset)")
    c.add_argument("--methods", default=",".join(contamination.DEFAULT_METHODS),
                   help=f"comma-separated among {','.join(contamination.METHODS)}")
    c.add_argument("--max-train-df", type=int, default=contamination.DEFAULTS["max_train_df"],
                   help="ignore GPT-3 n-grams found in more training samples than this (listed in the run record)")
    c.add_argument("--palm-threshold", type=float, default=contamination.DEFAULTS["palm_threshold"])
    c.add_argument("--embed-threshold", type=float, default=contamination.DEFAULTS["embed_threshold"])
    c.add_argument("--embed-model", help="sentence model (default: bundled all-MiniLM-L6-v2)")
    c.add_argument("--mink-model", help="causal LM name or path for Min-K%% Prob")
    c.add_argument("--mink-k", type=float, default=contamination.DEFAULTS["mink_k"], help="fraction, 0.05-0.6")
    c.add_argument("--mink-threshold", type=float,
                   help="count eval items whose Min-K%% score is at least this (likely seen by the model)")
    c.add_argument("--minkpp-threshold", type=float, help="the same for Min-K%%++")
    c.add_argument("--mink-max-length", type=int,
                   help="tokens per window (default: the model's context); longer texts are scored in windows")
