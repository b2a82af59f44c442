"""The datasheet of an export: markdown with composition charts as PNG images (matplotlib, no browser).

In the spirit of "Towards Best Practices for Open Datasets for LLM Training": what is in it, where each
part came from and under which licence, how it was filtered and sampled, and what to watch out for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

TURN_ORDER = ["1", "2", "3-4", "5-8", "9+"]
TOKEN_ORDER = ["<128", "128-511", "512-1023", "1024-2047", "2048-4095", "4096+"]


def _bar(ax: Any, labels: list[str], values: list[float], title: str) -> None:
    ax.barh(labels[::-1], values[::-1], color="#4C78A8")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)


def write_charts(composition: pd.DataFrame, folder: Path) -> list[Path]:
    """One PNG per view of the composition; deterministic bytes (no timestamps in the metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    views = [("source", None, "Samples per source"), ("category", None, "Samples per category"),
             ("language", None, "Samples per language"), ("turns", TURN_ORDER, "Samples by number of turns"),
             ("tokens_bin", TOKEN_ORDER, "Samples by tokens")]
    written = []
    for column, order, title in views:
        counts = composition.groupby(column)["n"].sum()
        counts = counts.reindex([o for o in order if o in counts.index]) if order else counts.sort_values(ascending=False)
        counts = counts.head(25)
        fig, ax = plt.subplots(figsize=(6, max(1.5, 0.3 * len(counts) + 0.8)), dpi=80)
        _bar(ax, [str(x)[:40] for x in counts.index], [float(v) for v in counts.to_numpy()], title)
        fig.tight_layout()
        path = folder / f"{column}.png"
        fig.savefig(path, format="png", metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |")
    return "\n".join(lines)


def datasheet_markdown(manifest: dict[str, Any], charts: list[str]) -> str:
    recipe = manifest["recipe"]
    sources = pd.DataFrame(manifest["sources"])
    out = [f"# Datasheet: {recipe['name']}", ""]
    if recipe.get("description"):
        out += [recipe["description"], ""]
    totals = manifest["totals"]
    out += ["## Summary", "",
            f"- samples: {totals['samples']:,} (train {totals['train']:,}, validation {totals['validation']:,})",
            f"- tokens (Assay's estimate): {totals['tokens']:,}",
            f"- seed: {manifest['seed']}; recipe fingerprint {manifest['recipe_fingerprint'][:16]}",
            f"- store: {manifest['store']['path']} (schema {manifest['store']['schema_version']}); "
            f"code {manifest['code']['assay_version']} ({manifest['code'].get('git_commit') or 'no git commit'})", ""]
    out += ["## Sources, licences and provenance", "",
            _table(sources[["dataset", "license", "synthetic", "is_eval", "origin", "loaded_at", "ingest_run_id",
                            "n_total", "n_after_filters", "n_selected", "tokens_selected"]]), ""]
    licences = sorted({str(x) for x in sources.loc[sources.n_selected > 0, "license"]})
    out += [f"Licences in the mixture: {', '.join(licences)}. Each part keeps its own licence.", ""]
    if manifest["filters"]:
        out += ["## Filters (in order; what each removed)", "", _table(pd.DataFrame(manifest["filters"])), ""]
    out += ["## How counts were decided", ""] + [f"- {s}" for s in manifest["plan"]["steps"]] + [""]
    if manifest["plan"]["issues"]:
        out += ["Targets not met:", ""] + [f"- {s}" for s in manifest["plan"]["issues"]] + [""]
    if manifest.get("selection"):
        out += ["Selection: " + "; ".join(manifest["selection"]), ""]
    out += ["## Composition", ""] + [f"![{Path(c).stem}]({c})" for c in charts] + [""]
    out += ["## Warnings", ""]
    out += [f"- **{w['severity']}** ({w['code']}): {w['message']}" for w in manifest["warnings"]] or ["- none"]
    out += ["", "## Files", "", "SHA-256 of every file is in manifest.json.", ""]
    return "\n".join(out)
