"""The arithmetic of a mixture: weights, counts, token budgets and proportions -> a quota per cell.

A cell is (source, category): without `targets.proportions` one cell per source (category "*": the whole
source); with proportions one cell per source and category. Each cell gets a target count or a target
token budget. Every step is written down in `Plan.steps` as plain sentences, and every target that cannot
be met goes into `Plan.issues` with the reason and what to change.

Rules:
- count: that many samples; tokens: samples until the budget is reached (never above it);
- weight with targets.total (or total_tokens): the rest of the total after fixed counts, shared by
  normalised weight, rounded by largest remainder (the rounded counts add up exactly to the total);
- weight without a total: a multiple of the source (1 = all of it, 0.5 = half, 2 = twice, upsampled);
- proportions: the total split by share per category (largest remainder), each category split across
  the sources that have samples in it by weight; a source short of samples passes its deficit to the
  others in the category;
- a cell asking for more than is available takes everything, and, with `replace: true` on the source,
  repeats the whole source as often as fits and samples the rest without replacement (fewer accidental
  duplicates than i.i.d. draws with replacement); without it, the shortfall is an issue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from core.mixture.recipe import Recipe, RecipeError

ALL = "*"


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Integers proportional to `weights` that add up to exactly `total` (Hamilton's method, ties by order)."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    wsum = float(sum(weights))
    if wsum <= 0:
        return [0] * len(weights)
    exact = [total * w / wsum for w in weights]
    base = [math.floor(x) for x in exact]
    left = total - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return base


@dataclass
class Plan:
    cells: pd.DataFrame  # src, source, category, available, available_tokens, target_count, target_tokens, replace
    steps: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return not self.issues


def _fmt(n: float) -> str:
    return f"{int(n):,}"


def _mean_tokens(avail: pd.DataFrame, src: int) -> float:
    rows = avail[avail.src == src]
    n = int(rows.n.sum())
    return float(rows.tokens.sum()) / n if n else 0.0


def _cell(recipe: Recipe, src: int, category: str, avail: pd.DataFrame, count: int | None,
          tokens: int | None) -> dict:
    rows = avail[(avail.src == src) & ((avail.category == category) if category != ALL else True)]
    return {"src": src, "source": recipe.sources[src].dataset, "category": category,
            "available": int(rows.n.sum()), "available_tokens": int(rows.tokens.sum()),
            "target_count": count, "target_tokens": tokens, "replace": recipe.sources[src].replace}


def _per_source(recipe: Recipe, avail: pd.DataFrame, plan: Plan) -> list[dict]:
    cells: list[dict] = []
    total, total_tokens = recipe.targets.total, recipe.targets.total_tokens
    weighted = [i for i, s in enumerate(recipe.sources) if s.mode == "weight"]
    fixed_count = sum(s.count for s in recipe.sources if s.count is not None)
    if total is not None:
        est_tok = sum(round(s.tokens / max(_mean_tokens(avail, i), 1.0)) for i, s in enumerate(recipe.sources)
                      if s.tokens is not None)
        rest = total - fixed_count - est_tok
        plan.steps.append(f"Total {_fmt(total)} samples; fixed counts take {_fmt(fixed_count)}"
                          + (f", token budgets about {_fmt(est_tok)}" if est_tok else "")
                          + f"; {_fmt(max(rest, 0))} are shared by weight.")
        if rest < 0:
            plan.issues.append(f"targets.total: the fixed counts and token budgets already need about "
                               f"{_fmt(fixed_count + est_tok)} samples, more than the total {_fmt(total)}.")
        shares = largest_remainder(max(rest, 0), [recipe.sources[i].weight or 1.0 for i in weighted])
    elif total_tokens is not None:
        fixed_tok = sum(round(s.count * _mean_tokens(avail, i)) for i, s in enumerate(recipe.sources)
                        if s.count is not None) + sum(s.tokens for s in recipe.sources if s.tokens is not None)
        rest = total_tokens - fixed_tok
        plan.steps.append(f"Total {_fmt(total_tokens)} tokens; fixed counts and budgets take about {_fmt(fixed_tok)}; "
                          f"{_fmt(max(rest, 0))} tokens are shared by weight.")
        if rest < 0:
            plan.issues.append(f"targets.total_tokens: the fixed counts and budgets already need about "
                               f"{_fmt(fixed_tok)} tokens, more than {_fmt(total_tokens)}.")
        shares = largest_remainder(max(rest, 0), [recipe.sources[i].weight or 1.0 for i in weighted])
    else:
        shares = []
    wsum = sum(recipe.sources[i].weight or 1.0 for i in weighted)
    for i, source in enumerate(recipe.sources):
        base = _cell(recipe, i, ALL, avail, None, None)
        if source.count is not None:
            base["target_count"] = source.count
            plan.steps.append(f"{source.dataset}: count {_fmt(source.count)}.")
        elif source.tokens is not None:
            base["target_tokens"] = source.tokens
            plan.steps.append(f"{source.dataset}: token budget {_fmt(source.tokens)}.")
        else:
            w = source.weight or 1.0
            share = shares[weighted.index(i)] if shares else None
            if total is not None:
                base["target_count"] = share
                plan.steps.append(f"{source.dataset}: weight {w:g} / {wsum:g} of {_fmt(rest)} = "
                                  f"{rest * w / wsum:,.2f} -> {_fmt(share)} (largest remainder).")
            elif total_tokens is not None:
                base["target_tokens"] = share
                plan.steps.append(f"{source.dataset}: weight {w:g} / {wsum:g} of {_fmt(rest)} tokens -> {_fmt(share)}.")
            else:
                base["target_count"] = round(w * base["available"])
                plan.steps.append(f"{source.dataset}: weight {w:g} x {_fmt(base['available'])} available = "
                                  f"{_fmt(base['target_count'])} (no total: a weight is a multiple of the source).")
        cells.append(base)
    return cells


def _split_category(recipe: Recipe, category: str, quota: int, avail: pd.DataFrame, unit: str,
                    plan: Plan) -> list[dict]:
    """Share one category's quota across the sources that have samples in it, by weight, with spill-over."""
    have = avail[(avail.category == category) & (avail.n > 0)]
    srcs = sorted(int(s) for s in have.src.unique())
    if not srcs:
        plan.issues.append(f"targets.proportions.{category}: no sample of any source is in category {category!r} "
                           f"after filters; {_fmt(quota)} {unit} cannot be met.")
        return []
    cap = {s: int(have[have.src == s]["n" if unit == "samples" else "tokens"].sum()) for s in srcs}
    weights = {s: recipe.sources[s].weight or 1.0 for s in srcs}
    target = dict.fromkeys(srcs, 0)
    remaining, open_srcs = quota, list(srcs)
    while remaining > 0 and open_srcs:
        shares = largest_remainder(remaining, [weights[s] for s in open_srcs])
        remaining = 0
        for s, share in zip(open_srcs, shares, strict=True):
            room = math.inf if recipe.sources[s].replace else cap[s] - target[s]
            take = min(share, room)
            target[s] += int(take)
            remaining += share - int(take)
        open_srcs = [s for s in open_srcs if recipe.sources[s].replace or target[s] < cap[s]]
    parts = ", ".join(f"{recipe.sources[s].dataset} {_fmt(target[s])}" for s in srcs)
    plan.steps.append(f"category {category}: {_fmt(quota)} {unit} -> {parts}.")
    if remaining > 0:
        plan.issues.append(
            f"targets.proportions.{category}: {_fmt(quota)} {unit} asked, only {_fmt(sum(cap.values()))} "
            f"available after filters in {', '.join(recipe.sources[s].dataset for s in srcs)}; {_fmt(remaining)} short. "
            "Lower the share or the total, loosen the filters, or set replace: true on a source to upsample.")
    cells = []
    for s in srcs:
        count, tokens = (target[s], None) if unit == "samples" else (None, target[s])
        cells.append(_cell(recipe, s, category, avail, count, tokens))
    return cells


def _by_proportions(recipe: Recipe, avail: pd.DataFrame, plan: Plan) -> list[dict]:
    targets = recipe.targets
    for i, source in enumerate(recipe.sources):
        if source.mode != "weight":
            raise RecipeError(f"sources[{i}].{source.mode}", "with targets.proportions, sources take weights only "
                              "(the proportions and the total decide the counts)")
    if targets.total is None and targets.total_tokens is None:
        raise RecipeError("targets.proportions", "proportions need targets.total or targets.total_tokens")
    total, unit = (targets.total, "samples") if targets.total is not None else (targets.total_tokens, "tokens")
    cats = list(targets.proportions)
    quotas = largest_remainder(total, [targets.proportions[c] for c in cats])
    plan.steps.append(f"Total {_fmt(total)} {unit} by {targets.by}: " + ", ".join(
        f"{c} {targets.proportions[c]:.1%} -> {_fmt(q)}" for c, q in zip(cats, quotas, strict=True))
        + " (largest remainder).")
    left_out = sorted(set(avail.category) - set(cats))
    if left_out:
        plan.steps.append(f"Categories without a share are left out: {', '.join(left_out[:20])}"
                          + (" ..." if len(left_out) > 20 else "") + ".")
    cells: list[dict] = []
    for cat, quota in zip(cats, quotas, strict=True):
        if quota:
            cells += _split_category(recipe, cat, quota, avail, unit, plan)
    return cells


def _check_cells(recipe: Recipe, cells: list[dict], plan: Plan) -> None:
    for cell in cells:
        src = recipe.sources[cell["src"]]
        where = f"sources[{cell['src']}] {src.dataset}" + (f" / {cell['category']}" if cell["category"] != ALL else "")
        want, have, unit = ((cell["target_count"], cell["available"], "samples") if cell["target_count"] is not None
                            else (cell["target_tokens"], cell["available_tokens"], "tokens"))
        if want is None or want <= have:
            continue
        if have == 0:
            plan.issues.append(f"{where}: {_fmt(want)} {unit} asked but no sample passes the filters.")
        elif src.replace:
            plan.steps.append(f"{where}: {_fmt(want)} {unit} from {_fmt(have)} available: upsampled "
                              f"({want / have:.2f}x: whole source repeated, the rest sampled without replacement).")
        elif cell["category"] == ALL:
            plan.issues.append(f"{where}: {_fmt(want)} {unit} asked, only {_fmt(have)} pass the filters; "
                               f"{_fmt(want - have)} short. Lower the target, loosen the filters, or set "
                               "replace: true to upsample.")


def make_plan(recipe: Recipe, avail: pd.DataFrame) -> Plan:
    """avail: src, category, n, tokens (samples left after filters and de-duplication)."""
    plan = Plan(cells=pd.DataFrame())
    if recipe.targets.proportions:
        cells = _by_proportions(recipe, avail, plan)
    else:
        cells = _per_source(recipe, avail, plan)
    _check_cells(recipe, cells, plan)
    columns = ["src", "source", "category", "available", "available_tokens", "target_count", "target_tokens",
               "replace"]
    plan.cells = pd.DataFrame(cells, columns=columns)
    return plan
