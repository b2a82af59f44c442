"""`assay datasets` and `assay show NAME`: the browser on the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

import pandas as pd

from core.browse import Filter, get_sample, query_samples
from core.commands import add_command
from core.store import Store

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
        help="e.g. n_chars:between:100,500  category:in:math,code  text:contains:apple  label:is_null",
    )
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
    """`COL:OP[:VALUE]`; lists (in, not_in, between) are comma-separated. The column may hold no colon."""
    column, sep, rest = text.partition(":")
    if not sep or not column:
        raise ValueError(f"--filter {text!r}: expected COL:OP[:VALUE], e.g. n_chars:between:100,500")
    op, _, value = rest.partition(":")
    if op in ("between", "in", "not_in"):
        parts = [p.strip() for p in value.split(",")]
        parsed: Any = [p if p else None for p in parts] if op == "between" else parts
        return Filter(column, op, parsed)
    return Filter(column, op, value if value != "" else None)


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
        descending=args.desc, offset=args.offset, limit=args.limit,
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
