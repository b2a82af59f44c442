"""Things a careful researcher would want to know about a mixture before training on it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

SYNTHETIC_WARN = 0.20   # the study saw stable performance up to about 20% synthetic data ...
SYNTHETIC_SEVERE = 0.30  # ... and degradation accelerating beyond 30%
DOMINANT_SHARE = 0.50
# What the thresholds come from, cited precisely: Pythia models (410M-12B) retrained for one to three
# iterations on their own generations mixed with external data at 0-50% synthetic; larger models
# (6.9B-12B) were more robust than smaller ones (410M-1.4B). A measurement on other models and tasks,
# so a warning the user may overrule, never a refusal.
SYNTHETIC_PAPER = ("Du et al. 2025, \"Characterizing Model Behavior Under Synthetic Data Training: An Empirical "
                   "Study Across Scales and Mixing Ratios\" (arXiv:2510.05133)")
_NON_COMMERCIAL = re.compile(r"(^|[-_ ])nc([-_ ]|$)|non[- ]?commercial|research[- ]only|cc-by-nc", re.IGNORECASE)
_UNKNOWN = {"", "unknown", "other", "none", "n/a", "unspecified"}
_UNSAFE_WORDS = re.compile(r"\b(offensive|harmful|unsafe|toxic|hateful)\b", re.IGNORECASE)


@dataclass(frozen=True)
class MixWarning:
    code: str      # non_commercial, unknown_licence, synthetic_share, eval_source, contaminated_kept, ...
    severity: str  # info, warning, error
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_non_commercial(licence: str | None) -> bool:
    return bool(licence) and bool(_NON_COMMERCIAL.search(licence))


def is_unknown_licence(licence: str | None) -> bool:
    return licence is None or licence.strip().lower() in _UNKNOWN


def _pct(x: float) -> str:
    return f"{x:.1%}"


def licence_warnings(sources: pd.DataFrame, total: int) -> list[MixWarning]:
    out = []
    for row in sources[sources.n_selected > 0].itertuples():
        share = row.n_selected / total if total else 0.0
        if is_non_commercial(row.license):
            out.append(MixWarning("non_commercial", "warning",
                                  f"{row.dataset} ({row.n_selected:,} samples, {_pct(share)}) is under {row.license}, a "
                                  "non-commercial licence: the mixture, and a model trained on it, inherit that limit."))
        elif is_unknown_licence(row.license):
            out.append(MixWarning("unknown_licence", "warning",
                                  f"{row.dataset} ({row.n_selected:,} samples) has no known licence: find out before "
                                  "you publish or train on it."))
    return out


def synthetic_warning(sources: pd.DataFrame, total: int) -> list[MixWarning]:
    synthetic = int(sources.loc[sources.synthetic.astype(bool), "n_selected"].sum())
    share = synthetic / total if total else 0.0
    if share <= SYNTHETIC_WARN:
        return []
    severe = share > SYNTHETIC_SEVERE
    return [MixWarning("synthetic_share", "warning",
                       f"Synthetic data is {_pct(share)} of the mixture ({synthetic:,} of {total:,} samples). "
                       f"{SYNTHETIC_PAPER} retrained Pythia models (410M-12B) on their own outputs for one to three "
                       "iterations: performance held up to about 20% synthetic data and degraded faster beyond 30%"
                       + (" (this mixture is past that)" if severe else "")
                       + "; the larger models (6.9B-12B) were more robust than the smaller (410M-1.4B). "
                       "A measurement on those models, not a rule for yours.")]


def eval_warnings(sources: pd.DataFrame) -> list[MixWarning]:
    return [MixWarning("eval_source", "error",
                       f"{row.dataset} is an evaluation benchmark and {row.n_selected:,} of its samples are in the "
                       "mixture: a model trained on it cannot be evaluated on it.")
            for row in sources[(sources.n_selected > 0) & sources.is_eval.astype(bool)].itertuples()]


def kept_flag_warnings(sources: pd.DataFrame, contamination_runs: list[int], unsafe_origins: list[str]) -> list[MixWarning]:
    out = []
    n_cont = int(sources.contaminated_kept.sum())
    if n_cont:
        detail = ", ".join(f"{r.dataset} {int(r.contaminated_kept):,}" for r in sources.itertuples() if r.contaminated_kept)
        out.append(MixWarning("contaminated_kept", "error",
                              f"{n_cont:,} samples flagged as contaminated with an evaluation set are kept ({detail}; "
                              f"contamination runs {', '.join(map(str, contamination_runs))}). "
                              "Add the filter {flag: not_contaminated}."))
    n_unsafe = int(sources.unsafe_kept.sum())
    if n_unsafe:
        out.append(MixWarning("unsafe_kept", "warning",
                              f"{n_unsafe:,} samples marked unsafe ({', '.join(unsafe_origins)}) are kept. "
                              "Add the filter {flag: not_unsafe} unless they are there on purpose."))
    for row in sources[sources.n_selected > 0].itertuples():
        if row.description and _UNSAFE_WORDS.search(str(row.description)) and not row.unsafe_kept:
            out.append(MixWarning("unsafe_source", "warning",
                                  f"{row.dataset} ({row.n_selected:,} samples) is described as holding offensive or "
                                  f"harmful content (\"{row.description}\"); tag or label its safety before training."))
    n_excl = int(sources.excluded_kept.sum())
    if n_excl:
        out.append(MixWarning("excluded_kept", "warning",
                              f"{n_excl:,} samples excluded by hand are kept; add the filter {{flag: not_excluded}}."))
    return out


def dominance_warning(composition: pd.DataFrame, by: str | None) -> list[MixWarning]:
    column = "category" if by else "source"
    shares = composition.groupby(column)["n"].sum()
    total = shares.sum()
    if len(shares) < 2 or not total:
        return []
    top = shares.idxmax()
    share = shares.max() / total
    if share <= DOMINANT_SHARE:
        return []
    label = f"category {top!r} (by {by})" if by else f"source {top!r}"
    return [MixWarning("dominant_category", "warning",
                       f"{label} is {_pct(share)} of the mixture: more than half. Check this is what you want.")]


def mixture_warnings(sources: pd.DataFrame, composition: pd.DataFrame, *, by: str | None,
                     contamination_runs: list[int], unsafe_origins: list[str],
                     plan_issues: list[str]) -> list[MixWarning]:
    """`sources`: one row per source with dataset, license, synthetic, is_eval, description, n_selected,
    contaminated_kept, unsafe_kept, excluded_kept. `composition`: source, category, n."""
    total = int(sources.n_selected.sum())
    out = [MixWarning("target_unmet", "error", issue) for issue in plan_issues]
    out += licence_warnings(sources, total) + synthetic_warning(sources, total) + eval_warnings(sources)
    out += kept_flag_warnings(sources, contamination_runs, unsafe_origins)
    out += dominance_warning(composition, by)
    return out
