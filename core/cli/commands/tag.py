"""`assay tag` (Magpie-style tagging), `assay tag-train` (a classifier from labels or a labelled column),
`assay tag-train-proxy` (a Bradley-Terry reward proxy from preference pairs), `assay tag-compare`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import core.tags.results as T
import core.tags.vocabulary as vocab
from core.cli.commands import add_command
from core.cli.commands.scale import add_engine_options, run_on_ray
from core.store.database import Store


def _bar(label: str):  # noqa: ANN202 - a progress callback
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="samples", file=sys.stderr, leave=False)

    def update(done: int, total: int | None, what: str = "") -> None:
        if total and bar.total != total:
            bar.total = total
        if what:
            bar.set_description(f"{label}: {what}", refresh=False)
        bar.n = done
        bar.refresh()

    return update


def _classifiers(items: list[str] | None) -> dict[str, int]:
    out = {}
    for item in items or []:
        tag, _, run = item.partition("=")
        if not run.isdigit():
            raise ValueError(f"--classifier takes TAG=RUN_ID (a tag model run); got {item!r}")
        out[tag.strip()] = int(run)
    return out


def _tag_on_ray(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    """The offline taggers over Parquet shards on Ray: the same TagStep as `assay scale tag`."""
    from core.scale import TagStep

    if args.backend != "offline" or not args.dataset or args.limit:
        raise ValueError("--engine ray runs the offline backend on one whole --dataset (no --selection or "
                         "--limit); LLM-judge tags run with the local engine against your endpoint, reward "
                         "models on Ray with `assay scale reward`")
    tags = args.tags or ",".join(vocab.BACKEND_GROUPS["offline"])
    groups = [g.strip() for g in tags.split(",") if g.strip()]
    return run_on_ray(store, TagStep(groups=groups, language_mode=args.language_mode), args.dataset, args)


def _tag(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from core.tags.taggers.job import run_tagging

    if args.engine == "ray":
        return _tag_on_ray(store, args)

    report = run_tagging(
        store, dataset=args.dataset, selection=args.selection, limit=args.limit, tags=args.tags,
        backend=args.backend, model=args.model, base_url=args.base_url, reward_models=args.reward_model or [],
        aggregation=args.aggregation, lam=args.lam, guard_model=args.guard_model,
        classifiers=_classifiers(args.classifier),
        reward_proxy=args.reward_proxy, language_mode=args.language_mode, batch_size=args.batch_size,
        concurrency=args.concurrency, timeout=args.timeout, prefill=not args.no_prefill,
        api_key=os.environ.get(args.api_key_env) if args.api_key_env else None,
        progress=_bar(f"tag {args.dataset or args.selection}"))
    lines = [f"{report.summary()} ({report.backend} backend, {report.target})"]
    for tag in report.tags:
        counts = report.status_counts.get(tag, {})
        m = report.metrics.get(tag, {})
        acc = m.get("accuracy")
        quality = f"measured {acc:.3f}" if isinstance(acc, float) else "not measured"
        lines.append(f"  {tag:18} {', '.join(f'{k} {v}' for k, v in counts.items()):40} {m.get('method', '')} "
                     f"[{quality}]")
    return report.as_dict(), "\n".join(lines)


def _train(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from core.tags.taggers import learned

    if bool(args.from_meta) == bool(args.from_labels):
        raise ValueError("give exactly one of --from-meta COLUMN or --from-labels SCHEMA:FIELD")
    if args.from_meta:
        labels, source = learned.labels_from_meta(store, args.dataset, args.from_meta), f"{args.dataset} meta.{args.from_meta}"
    else:
        schema, _, field = args.from_labels.partition(":")
        labels, source = learned.labels_from_hand(store, schema, field, args.dataset), f"hand labels {args.from_labels}"
    if args.max_labels and len(labels) > args.max_labels:
        labels = labels.sample(args.max_labels, random_state=0)
    model = learned.train_classifier(store, labels, tag=args.tag, source=source, embed_model=args.embed_model)
    cv = model.metrics.get("cv_accuracy")
    text = (f"tag model run {model.run_id}: {args.tag} from {source}, {model.metrics['n_train']} labels, "
            f"classes {model.classes}; cross-validated accuracy "
            f"{'n/a' if cv is None else f'{cv:.3f}'} (majority baseline {model.metrics['majority_baseline']:.3f}). "
            f"Use it: assay tag --classifier {args.tag}={model.run_id}")
    return {"run_id": model.run_id, "classes": model.classes, "metrics": model.metrics}, text


def _train_proxy(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from core.tags.taggers import reward_proxy

    model = reward_proxy.train_reward_proxy(store, args.dataset, embed_model=args.embed_model,
                                            max_pairs=args.max_pairs, test_frac=args.test_frac)
    m = model.metrics
    return ({"run_id": model.run_id, "metrics": m},
            f"preference proxy run {model.run_id} (tag preference_proxy, trained on {args.dataset}): held-out pairwise accuracy {m['heldout_pairwise_accuracy']:.3f} "
            f"on {m['n_test_pairs']} pairs (train {m['train_pairwise_accuracy']:.3f} on {m['n_train_pairs']})")


def _compare(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    table = T.compare_runs(store, args.run_a, args.run_b)
    return table.to_dict("records"), table.to_string(index=False) if not table.empty else "no tags in common"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "tag", _tag, "Magpie-style tags: category, difficulty, quality, safety, language, ...")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--dataset", help="dataset name")
    target.add_argument("--selection", help="saved selection (name or id)")
    p.add_argument("--tags", default=None, help=f"comma-separated among {','.join(vocab.TAG_GROUPS)} (default: what the "
                   f"backend computes: offline {','.join(vocab.BACKEND_GROUPS['offline'])}; an LLM judge adds "
                   "difficulty,input_quality,safety; --reward-model adds response_quality; a trained proxy "
                   "preference_proxy)")
    p.add_argument("--backend", choices=("offline", "openai", "transformers"), default="offline")
    p.add_argument("--model", help="judge model: served model name (openai) or name/path (transformers)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--no-prefill", action="store_true", help="server does not support continuing an assistant prefix")
    p.add_argument("--reward-model", action="append", help="reward model name/path (repeat for an ensemble)")
    p.add_argument("--aggregation", choices=("min", "uwo"), default="min",
                   help="ensembles (Coste et al. 2023): min = worst case; uwo = mean - lambda * variance")
    p.add_argument("--lambda", "--k", dest="lam", type=float, default=0.5, help="UWO's lambda (default 0.5)")
    p.add_argument("--guard-model", help="a Llama Guard model (name or path) that makes safety and hazards itself")
    p.add_argument("--classifier", action="append", help="TAG=RUN: apply a trained tag model (assay tag-train)")
    p.add_argument("--reward-proxy", type=int, help="Bradley-Terry preference proxy run (default: newest)")
    p.add_argument("--language-mode", choices=("high", "low"), default="high")
    p.add_argument("--batch-size", type=int, default=64, help="samples per committed batch")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent requests (openai)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (openai)")
    p.add_argument("--limit", type=int, help="only the first N samples")
    add_engine_options(p)

    t = add_command(subparsers, "tag-train", _train, "train a tag classifier on embeddings from labels or a column")
    t.add_argument("--dataset", required=True)
    t.add_argument("--tag", required=True, help="tag it predicts (e.g. difficulty, or a concept name)")
    t.add_argument("--from-meta", help="a labelled metadata column")
    t.add_argument("--from-labels", help="SCHEMA:FIELD of hand labels")
    t.add_argument("--embed-model", help="sentence model (default: bundled all-MiniLM-L6-v2)")
    t.add_argument("--max-labels", type=int, help="train on at most N labels (random)")

    r = add_command(subparsers, "tag-train-proxy", _train_proxy, "train a Bradley-Terry preference proxy (tag preference_proxy) on preference pairs")
    r.add_argument("--dataset", required=True, help="a preference dataset (with rejected answers)")
    r.add_argument("--embed-model")
    r.add_argument("--max-pairs", type=int)
    r.add_argument("--test-frac", type=float, default=0.2)

    c = add_command(subparsers, "tag-compare", _compare, "agreement table of two tagging runs")
    c.add_argument("run_a", type=int)
    c.add_argument("run_b", type=int)
