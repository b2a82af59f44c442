"""`assay label-schema add|list`, `assay labels export|agreement`."""

from __future__ import annotations

import argparse
from typing import Any

import core.labels.agreement as A
import core.labels.labelling as L
from core.cli.commands import add_command
from core.store.database import Store


def _schema_add(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    saved = L.save_schema(store, L.load_schema_file(args.file), created_by=args.who or "cli")
    fields = ", ".join(f"{f.name} ({f.type})" for f in saved.fields)
    return {"name": saved.name, "version": saved.version, "fields": [f.name for f in saved.fields]}, \
        f"label schema {saved.name} version {saved.version}: {fields}"


def _schema_list(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    df = L.list_schemas(store)
    rows = df.to_dict(orient="records")
    text = "\n".join(f"{r['name']}\tv{r['version']}\t{r['n_fields']} field(s)\t{r['n_label_events']} label events"
                     for r in rows) or "no label schemas yet (assay label-schema add FILE.yaml)"
    return rows, text


def _export(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    L.get_schema(store, args.schema)  # a clear error for an unknown schema
    n = L.export_labels(store, args.schema, args.out, fmt=args.format, what=args.what, dataset=args.dataset)
    return {"schema": args.schema, "rows": n, "out": str(args.out), "what": args.what}, \
        f"wrote {n} rows ({args.what}) of {args.schema} to {args.out}"


def _agreement(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    report = A.agreement_report(store, args.schema, dataset=args.dataset)
    result = [fa.as_dict() for fa in report]
    lines = []
    for fa in report:
        alpha = "n/a" if fa.alpha != fa.alpha else f"{fa.alpha:.3f}"
        lines.append(f"{fa.field} ({fa.level}): Krippendorff's alpha {alpha} over {fa.n_samples} samples; "
                     f"{len(fa.disagreements)} disagreements")
        for r in fa.pairs.itertuples():
            lines.append(f"  kappa {r.annotator_a} / {r.annotator_b}: {r.kappa:.3f} on {r.n_common}")
        for r in fa.machine.itertuples():
            lines.append(f"  vs machine {r.annotator}: kappa {r.kappa:.3f}, {r.percent_agreement:.0%} on {r.n_common}")
    return result, "\n".join(lines)


def _sub(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "label-schema", lambda s, a: a.schema_handler(s, a), "Hand-label schemas")
    sub = p.add_subparsers(dest="schema_command", required=True)
    add = _sub(sub, "add", "Add (or version) a label schema from a YAML file")
    add.add_argument("file")
    add.add_argument("--who", default="", help="recorded as the schema's author")
    add.set_defaults(schema_handler=_schema_add)
    _sub(sub, "list", "List label schemas").set_defaults(schema_handler=_schema_list)

    p = add_command(subparsers, "labels", lambda s, a: a.labels_handler(s, a), "Hand labels: export, agreement")
    sub = p.add_subparsers(dest="labels_command", required=True)
    ex = _sub(sub, "export", "Export labels as JSONL or Parquet")
    ex.add_argument("--schema", required=True)
    ex.add_argument("--format", choices=["jsonl", "parquet"], default=None, help="default: from --out's suffix")
    ex.add_argument("--out", required=True)
    ex.add_argument("--what", choices=["current", "consensus", "events"], default="current")
    ex.add_argument("--dataset", default=None)
    ex.set_defaults(labels_handler=_export)
    ag = _sub(sub, "agreement", "Cohen's kappa, Krippendorff's alpha, agreement with machine tags")
    ag.add_argument("--schema", required=True)
    ag.add_argument("--dataset", default=None)
    ag.set_defaults(labels_handler=_agreement)
