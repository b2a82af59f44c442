"""`assay scale embed|tag|dedup|reward`: the heavy steps over Parquet shards, locally or on Ray.

    assay scale embed --dataset gsm8k-train --engine ray --workers 2
    assay scale tag --dataset oasst-sample --engine ray --ray-address ray://head:10001
    assay scale dedup --parquet 's3://bucket/shards/*.parquet' --engine ray   # results stay Parquet

A killed job resumes from its folder: run the same command again (or pass the same --job-dir).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli.commands import add_command
from core.store.database import Store


def _bar(label: str):  # noqa: ANN202 - a progress callback on stderr (stdout stays clean for --json)
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="samples", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update


def _step(args: argparse.Namespace) -> Any:
    from core.scale import EmbedStep, MinHashStep, RewardStep, TagStep

    if args.step == "embed":
        return EmbedStep(model=args.model, text=args.text, backend=args.backend, device=args.device,
                         model_batch_size=args.model_batch_size)
    if args.step == "tag":
        return TagStep(groups=[g.strip() for g in args.tags.split(",") if g.strip()],
                       language_mode=args.language_mode, model=args.model)
    if args.step == "dedup":
        return MinHashStep(threshold=args.threshold, num_perm=args.num_perm, shingle=args.shingle, keep=args.keep)
    if not args.model:
        raise ValueError("name a reward model with --model NAME_OR_PATH (repeat it for an ensemble)")
    return RewardStep(models=args.model, aggregation=args.aggregation, device=args.device)


def _run(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from core.scale import run_step

    if not args.dataset and not args.parquet:
        raise ValueError("name a dataset with --dataset NAME, or Parquet files with --parquet PATH")
    report = run_step(_step(args), store, args.dataset, engine=args.engine, ray_address=args.ray_address,
                      num_workers=args.workers, batch_size=args.batch_size, rows_per_shard=args.rows_per_shard,
                      job_dir=args.job_dir, source=args.parquet, gpus_per_worker=args.gpus_per_worker,
                      progress=_bar(f"scale {args.step} ({args.engine})"))
    rate = f", {report.rows_per_second:.1f} samples/s" if report.rows_per_second else ""
    text = (f"run {report.run_id}: {report.step} on {args.dataset or args.parquet} with the {report.engine} engine "
            f"({report.workers} worker(s), {report.gpus_per_worker:g} GPU each): {report.n_rows} rows in "
            f"{report.n_shards} shards; {report.shards_computed} computed now, {report.shards_skipped} already done; "
            f"{report.seconds:.1f}s{rate}\njob folder: {report.job_dir}")
    if report.result:
        text += "\n" + ", ".join(f"{k}: {v}" for k, v in report.result.items())
    return report.as_dict(), text


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser.add_argument("--dataset", help="dataset in the store")
    parser.add_argument("--parquet", help="your own Parquet file, folder or glob instead (results stay Parquet)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    parser.add_argument("--ray-address", help="join this Ray cluster (default: a local Ray on this machine)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (one model each)")
    parser.add_argument("--gpus-per-worker", type=float, help="default: 1 when the cluster has GPUs, else 0")
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per step call")
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--job-dir", help="job folder (default: <store folder>/jobs/...); reuse it to resume")


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.maps.embed import BACKENDS, TEXT_FIELDS

    parser = add_command(subparsers, "scale", _run, "run embed/tag/dedup/reward over shards, locally or on Ray")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    embed = steps.add_parser("embed", help="sentence embeddings into the store's embedding cache")
    embed.add_argument("--model", help="sentence-transformers name or path (default: bundled all-MiniLM-L6-v2)")
    embed.add_argument("--text", choices=TEXT_FIELDS, default="instruction")
    embed.add_argument("--backend", choices=BACKENDS, default="auto")
    embed.add_argument("--device", default="auto")
    embed.add_argument("--model-batch-size", type=int)
    tag = steps.add_parser("tag", help="offline tags: language, turns, lengths, zero-shot category")
    tag.add_argument("--tags", default="language,turns,lengths,category")
    tag.add_argument("--language-mode", choices=["high", "low"], default="high")
    tag.add_argument("--model", help="embedding model of the zero-shot category tagger")
    dedup = steps.add_parser("dedup", help="near duplicates: MinHash signatures on the workers, LSH on the driver")
    dedup.add_argument("--threshold", type=float, default=0.7)
    dedup.add_argument("--num-perm", type=int, default=128)
    dedup.add_argument("--shingle", type=int, default=3)
    dedup.add_argument("--keep", choices=["first", "longest", "quality"], default="first")
    reward = steps.add_parser("reward", help="reward-model scores (core/tags/taggers/reward_models.py)")
    reward.add_argument("--model", action="append", help="reward model name or path (repeat for an ensemble)")
    reward.add_argument("--aggregation", choices=["min", "uwo"], default="min")
    reward.add_argument("--device", default="auto")
    for sub in (embed, tag, dedup, reward):
        _common(sub)
        sub.set_defaults(handler=_run)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """`--engine local|ray` and friends, for the heavy commands (embed, tag, dedup)."""
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: in this process; ray: over Parquet shards on Ray (resumable by shard)")
    parser.add_argument("--ray-address", help="with --engine ray: join this cluster (default: a local Ray)")
    parser.add_argument("--workers", type=int, default=2, help="with --engine ray: actors, one model each")
    parser.add_argument("--job-dir", help="with --engine ray: job folder; reuse it to resume")


def run_on_ray(store: Store, step: Any, dataset: str, args: argparse.Namespace) -> tuple[Any, str]:
    """Run one step on Ray over one dataset, as `assay scale` does, and describe the result."""
    from core.scale import run_step

    report = run_step(step, store, dataset, engine="ray", ray_address=args.ray_address, num_workers=args.workers,
                      job_dir=args.job_dir, progress=_bar(f"{step.name} (ray)"))
    text = (f"run {report.run_id}: {report.step} on {dataset} with Ray ({report.workers} workers): "
            f"{report.n_rows} rows in {report.n_shards} shards, {report.shards_computed} computed now, "
            f"{report.shards_skipped} already done; {report.seconds:.1f}s\njob folder: {report.job_dir}")
    return report.as_dict(), text
