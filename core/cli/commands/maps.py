"""`assay embed`, `assay map`, `assay search`: embedding maps from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli.commands import add_command
from core.cli.commands.scale import add_engine_options, run_on_ray
from core.maps.embed import BACKENDS, DEFAULT_BACKEND, TEXT_FIELDS, backend_help
from core.store.database import Store


def _tqdm_progress(desc: str):  # noqa: ANN202 - returns (callback, bar)
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="text", leave=False)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar


def _embed(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from core.maps.embed import embed

    if args.engine == "ray":
        from core.scale import EmbedStep

        step = EmbedStep(model=args.model, text=args.text, backend=args.backend, device=args.device,
                         model_batch_size=args.batch_size)
        results = [run_on_ray(store, step, name, args) for name in args.dataset]
        return [r for r, _ in results], "\n".join(t for _, t in results)

    update, bar = _tqdm_progress("embedding")
    try:
        report = embed(store, args.dataset, model=args.model, text=args.text, backend=args.backend,
                       device=args.device, batch_size=args.batch_size, progress=update)
    finally:
        bar.close()
    result = report.as_dict()
    verb = "resumed" if report.resumed else "finished"
    return result, (f"embedding run {report.run_id} {verb}: {report.n_items} samples of {', '.join(report.datasets)} "
                    f"({report.model_key}, text={report.text_field}); {report.n_cached} from cache, "
                    f"{report.n_computed} computed in {report.seconds:.1f}s"
                    + (f" with {report.computed_with}" if report.computed_with else "")
                    + (f"\n{report.fallback_reason}" if report.fallback_reason else ""))


def _latest_embedding(store: Store, datasets: list[str]) -> int:
    from core.maps.embed import embedding_runs

    runs = embedding_runs(store, datasets[0])
    runs = runs[runs.status == "finished"]
    if runs.empty:
        raise ValueError(f"no finished embedding run for {datasets[0]}: run `assay embed --dataset {datasets[0]}` first")
    return int(runs.run_id.iloc[0])


def _map(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from tqdm import tqdm

    from core.maps.cluster import cluster_table
    from core.maps.points import make_map

    run = args.embedding_run or _latest_embedding(store, args.dataset)
    bar = tqdm(total=100, desc="map", leave=False)

    def update(fraction: float, what: str) -> None:
        bar.n = int(fraction * 100)
        bar.set_postfix_str(what)

    try:
        info = make_map(store, args.dataset, embedding_run_id=run, method=args.method,
                        clusters=None if args.clusters == "none" else args.clusters, k=args.k, name=args.name,
                        progress=update)
    finally:
        bar.close()
    result = info.as_dict()
    lines = [f"map {info.map_id} ({info.name}): embedding run {info.embedding_run_id}, projection run "
             f"{info.projection_run_id} ({args.method}), cluster run {info.cluster_run_id}"]
    if info.cluster_run_id is not None:
        table = cluster_table(store, info.cluster_run_id)
        result["clusters"] = table[["cluster", "size", "title"]].to_dict("records")
        lines += [f"  {r.cluster:>4}  {r.size:>7}  {r.title}" for r in table.head(30).itertuples()]
    return result, "\n".join(lines)


def _search(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from core.maps.neighbours import search

    run = args.embedding_run or _latest_embedding(store, args.dataset)
    hits = search(store, run, args.text, k=args.k)
    rows = hits[["rank", "id", "score", "dataset", "text"]].to_dict("records")
    lines = [f"{r['rank']:>3}  {r['score']:.3f}  #{r['id']}  {' '.join(str(r['text']).split())[:100]}" for r in rows]
    return {"embedding_run_id": run, "hits": rows}, "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "embed", _embed, "embed the samples of one or more datasets (cached, resumable)")
    p.add_argument("--dataset", action="append", required=True, help="dataset name (repeat for several)")
    p.add_argument("--model", default=None, help="sentence-transformers name or path (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--text", choices=TEXT_FIELDS, default="instruction", help="what to embed")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help=backend_help().replace("%", "%%"))
    add_engine_options(p)

    p = add_command(subparsers, "map", _map, "project an embedding run to 2-D and cluster it (a map)")
    p.add_argument("--dataset", action="append", required=True)
    p.add_argument("--embedding-run", "--embedding-run-id", dest="embedding_run", type=int, default=None,
                   help="embedding run to map (default: the latest finished one of the dataset)")
    p.add_argument("--method", choices=("umap", "pca"), default="umap")
    p.add_argument("--clusters", choices=("hdbscan", "kmeans", "none"), default="hdbscan")
    p.add_argument("--k", type=int, default=None, help="number of k-means clusters")
    p.add_argument("--name", default=None)

    p = add_command(subparsers, "search", _search, "semantic search over a dataset's embeddings")
    p.add_argument("--dataset", action="append", required=True)
    p.add_argument("text")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--embedding-run", dest="embedding_run", type=int, default=None)
