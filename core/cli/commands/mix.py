"""`assay mix RECIPE.yaml --out DIR` and `assay mix-preview RECIPE.yaml`: mixtures from a recipe."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli.commands import add_command
from core.mixture.build import preview
from core.mixture.export import export_mixture
from core.mixture.recipe import FORMATS, load_recipe
from core.store.database import Store


def _progress():  # noqa: ANN202 - a progress callback
    from tqdm import tqdm

    bar = tqdm(total=100, desc="mix", file=sys.stderr, leave=False)

    def update(stage: str, frac: float) -> None:
        bar.set_description(stage)
        bar.n = int(frac * 100)
        bar.refresh()

    return update


def _lines(comp: Any) -> list[str]:
    lines = [f"{comp.recipe.name}: {comp.n_selected:,} samples, {comp.n_tokens:,} tokens"]
    lines += [f"  {r.dataset}: {r.n_selected:,} of {r.n_after_filters:,} after filters ({r.n_total:,} in store), "
              f"{r.tokens_selected:,} tokens, licence {r.license}" for r in comp.sources.itertuples()]
    lines += ["arithmetic:"] + [f"  {s}" for s in comp.plan.steps]
    if len(comp.filter_counts):
        lines += ["filters:"] + [f"  {r.source} | {r.filter}: removed {r.removed:,} ({r.before:,} -> {r.after:,})"
                                 for r in comp.filter_counts.itertuples()]
    if comp.plan.issues:
        lines += ["targets not met:"] + [f"  {s}" for s in comp.plan.issues]
    lines += [f"{w.severity}: {w.message}" for w in comp.warnings]
    return lines


def _preview(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    comp = preview(store, load_recipe(args.recipe), with_examples=False)
    return comp.summary(), "\n".join(_lines(comp))


def _mix(store: Store, args: argparse.Namespace) -> tuple[Any, str]:
    recipe = load_recipe(args.recipe)
    formats = [f.strip() for f in args.format.split(",")] if args.format else None
    if formats:
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise ValueError(f"--format: unknown {', '.join(bad)}; choose among {', '.join(FORMATS)}")
    result = export_mixture(store, recipe, args.out, formats=formats, overwrite=args.overwrite,
                            allow_shortfall=True if args.allow_shortfall else None, progress=_progress())
    lines = _lines(result.composition) + [f"wrote {len(result.files)} files to {result.out_dir} (run {result.run_id})"]
    return result.as_dict(), "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "mix", _mix, "export a training mixture from a recipe (YAML)")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--format", help=f"comma-separated among {','.join(FORMATS)} (default: the recipe's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--allow-shortfall", action="store_true", help="export even when a target cannot be met")
    q = add_command(subparsers, "mix-preview", _preview, "show what a recipe would export, without writing")
    q.add_argument("recipe", help="recipe YAML file")
