"""`assay datasets` and `assay show NAME`: the browser on the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

import pandas as pd

from core import signals
from core.browse.samples import Filter, get_sample, query_samples
from core.cli.commands import add_command
from core.errors import InputError
from core.store.database import Store

_TEXT_WIDTH = 70


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(subparsers, "datasets", datasets_command, "list every dataset in the store")
    show = add_command(subparsers, "show", show_command, "show a dataset's facts and a page of its samples")
    show.add_argument("name", help="dataset name")
    show.add_argument("--limit", type=int, default=10, help="rows per page (default 10)")
    show.add_argument("--offset", type=int, default=0, help="rows to skip")
    show.add_argument("--search", help="case-insensitive substring of the sample text (answered from the "
                      "dataset's word index where it has one, with the same result)")
    show.add_argument("--sort", help="column to sort by (any column of the dataset)")
    show.add_argument("--desc", action="store_true", help="sort descending")
    show.add_argument(
        "--filter", action="append", default=[], metavar="COL:OP[:VALUE]",
        help="on a column or a signal, e.g. n_chars:between:100,500  category:in:math,code  text:contains:apple  "
             "tag.category:eq:Math  noise.cleanlab.flag:is_true  contamination:eq:clean",
    )
    show.add_argument("--signal", action="append", default=[], metavar="NAME",
                      help="show a signal as a column (repeatable; `assay signals NAME` lists them)")
    show.add_argument("--run", action="append", default=[], metavar="SIGNAL=RUN",
                      help="read a signal from this run instead of the newest finished one")
    sig = add_command(subparsers, "signals", signals_command, "list the signals (per-sample values runs made)")
    sig.add_argument("name", nargs="?", help="dataset name (default: every dataset)")
    show.add_argument("--sample", type=int, metavar="ID", help="print one sample in full instead of a page")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def datasets_command(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    frame = store.datasets()
    if frame.empty:
        return [], f"No datasets in {store.path}. Load one with: assay ingest PATH --name NAME"
    shown = frame[["name", "n_samples", "license", "synthetic", "is_eval", "shape", "loaded_at", "computed"]]
    return _records(frame), shown.to_string(index=False)


def parse_filter(text: str) -> Filter:
    """`COL:OP[:VALUE]` (core/signals/grammar.py); lists (in, not_in, between) are comma-separated."""
    return signals.parse_filter(text)


def _runs(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, run = item.rpartition("=")
        if not sep or not name or not run.isdigit():
            raise InputError(f"--run {item!r}: expected SIGNAL=RUN, e.g. tag.category=12")
        out[name] = int(run)
    return out


def signals_command(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    frame = signals.describe(store, args.name)
    if frame.empty:
        return [], "No signals yet: run a tagger, noise, dedup, contamination or a map first."
    return _records(frame), "\n".join(f"{r.name}  ({r.kind})  {r.description}. {r.read}" for r in frame.itertuples())


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _TEXT_WIDTH:
        return value[: _TEXT_WIDTH - 1] + "…"
    return value


def show_command(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    if args.sample is not None:
        sample = get_sample(store, args.sample)
        turns = "\n\n".join(f"[{t['role']}]\n{t['content']}" for t in sample["messages"])
        if sample["rejected"]:
            turns += "\n\n--- rejected ---\n\n" + "\n\n".join(f"[{t['role']}]\n{t['content']}" for t in sample["rejected"])
        return sample, f"sample {sample['id']} of {sample['dataset']} (source id {sample['source_id']})\n\n{turns}"
    info = store.dataset(args.name)
    page = query_samples(
        store, info, search=args.search, filters=[parse_filter(f) for f in args.filter], sort=args.sort,
        descending=args.desc, offset=args.offset, limit=args.limit, signals=args.signal, runs=_runs(args.run),
    )
    facts = asdict(info)
    result = {"dataset": facts, "total": page.total, "offset": page.offset, "limit": page.limit,
              "rows": _records(page.rows)}
    header = (
        f"{info.name}: {info.n_samples} samples from {info.source} (licence {info.license or 'unknown'}, "
        f"shape {info.shape}, {'synthetic' if info.synthetic else 'not synthetic'}"
        f"{', evaluation set' if info.is_eval else ''}; loaded {info.loaded_at:%Y-%m-%d %H:%M})\n"
        f"rows {page.first_row}-{page.last_row} of {page.total} matching"
    )
    table = page.rows.drop(columns=["has_rejected"]).map(_shorten)
    return result, header + ("\n\n" + table.to_string(index=False) if len(table) else "")
