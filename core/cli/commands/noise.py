"""`assay noise`: find probably-mislabelled samples and the loss weights a rescaler would give them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli.commands import add_command
from core.noise.config import DEFAULT_METHODS, METHODS, RESCALER_VARIANTS, NoiseConfig
from core.store.database import Store


def _bar():  # noqa: ANN202 - a progress callback
    """A progress bar on stderr (kept off stdout so --json stays clean)."""
    from tqdm import tqdm

    bar = tqdm(total=1000, desc="noise", file=sys.stderr, leave=False, bar_format="{desc} {bar} {percentage:3.0f}%")

    def update(fraction: float, message: str) -> None:
        bar.set_description_str(message[:60])
        bar.n = int(fraction * 1000)
        bar.refresh()

    return update


def _noise(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    from core.noise.features import label_sources
    from core.noise.label_names import display, label_names
    from core.noise.run import run_noise, suspicious  # torch and cleanlab: only when this command runs

    if args.list_sources:
        sources = label_sources(store, args.dataset)
        return {"dataset": args.dataset, "label_sources": sources}, "\n".join(sources)
    if not args.label_field:
        raise ValueError("name the label with --label-field (see --list-sources)")
    cfg = NoiseConfig(epochs=args.epochs, hidden=args.hidden, folds=args.folds, rescaler_epochs=args.rescaler_epochs,
                      rescaler_variant=args.rescaler_variant, seed=args.seed, threads=args.threads)
    table = run_noise(store, args.dataset, args.label_field, args.methods.split(","),
                      embedding_run_id=args.embedding_run, text=args.text, config=cfg, progress=_bar())
    run_id, summary = table.attrs["run_id"], table.attrs["summary"]
    top = suspicious(store, run_id, limit=args.top)
    names = label_names(store, args.dataset, args.label_field)
    lines = [f"run {run_id}: {args.dataset} labelled by {args.label_field}: {len(table)} samples, "
             f"classes {', '.join(display(c, names) for c in table.attrs['classes'])}",
             "flagged: " + ", ".join(f"{m} {n}" for m, n in summary["flagged"].items())
             + f"; by at least half the methods: {summary['n_label_issues']}"]
    if summary.get("other_issues"):
        lines.append("other issues: " + ", ".join(f"{k} {v}" for k, v in summary["other_issues"].items()))
    lines.append("most suspicious (given -> predicted, flags):")
    for r in top.head(args.top).itertuples():
        predicted = getattr(r, "predicted_label", "?")
        preview = " ".join(str(r.text).split())[:80]
        lines.append(f"  {r.sample_id}: {display(r.given_label, names)} -> {display(predicted, names)} "
                     f"({r.n_flags}) {preview!r}")
    result = {"run_id": run_id, "summary": summary, "classes": table.attrs["classes"],
              "top": top.drop(columns=["text"]).to_dict("records")}
    return result, "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "noise", _noise, "find probably-mislabelled samples (cleanlab, cartography, AUM, "
                    "meta loss rescaling, multi-annotator)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--label-field", help="class | meta:FIELD | votes:F1,F2,.. | annotators:LABELS[:WHO] | "
                   "labels:SCHEMA/FIELD")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated among {','.join(METHODS)}")
    p.add_argument("--list-sources", action="store_true", help="list the label sources this dataset offers")
    p.add_argument("--embedding-run", type=int, help="embedding run to use (default: newest covering the dataset)")
    p.add_argument("--text", default="instruction", help="text to embed when no embedding run exists")
    p.add_argument("--epochs", type=int, default=NoiseConfig.epochs, help="cartography/AUM training epochs")
    p.add_argument("--rescaler-epochs", type=int, default=NoiseConfig.rescaler_epochs)
    p.add_argument("--rescaler-variant", choices=RESCALER_VARIANTS, default=NoiseConfig.rescaler_variant,
                   help="storm: meta loss rescaling as Heck et al. 2025 define it; detached-cubed: this project's "
                        "earlier tuning (uniform validation draw, detached weights cubed)")
    p.add_argument("--threads", type=int, default=NoiseConfig.threads,
                   help="methods run at once, one thread each (0: one per core)")
    p.add_argument("--hidden", type=int, default=NoiseConfig.hidden, help="hidden units of the head (0: linear)")
    p.add_argument("--folds", type=int, default=NoiseConfig.folds)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=10, help="how many suspicious samples to list")
