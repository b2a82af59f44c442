"""Plotly figures of a mixture's composition, shared by the mixture page and notebooks.

Inputs are the frames of core.mixture.build.Composition: `composition` (source, category, language, turns,
tokens_bin -> n, tokens) and `sources` (per source: n_total, n_after_filters, n_selected, ...). Labels
come from the data, so they are escaped before plotly sees them (its labels understand some HTML).
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from core.mixture.datasheet import TOKEN_ORDER, TURN_ORDER

VIEWS = {"source": "source", "category": "category", "language": "language", "turns": "turns",
         "tokens": "tokens_bin"}


def _esc(value: object, limit: int = 40) -> str:
    text = str(value)
    return html.escape(text[:limit] + ("…" if len(text) > limit else ""))


def composition_bar(composition: pd.DataFrame, view: str = "source", measure: str = "n") -> go.Figure:
    """Samples (measure='n') or tokens per source, category, language, turns or token-length bucket."""
    column = VIEWS[view]
    grouped = composition.groupby(column)[measure].sum() if len(composition) else pd.Series(dtype=float)
    order = TURN_ORDER if view == "turns" else TOKEN_ORDER if view == "tokens" else None
    grouped = grouped.reindex([o for o in order if o in grouped.index]) if order else grouped.sort_values()
    fig = go.Figure(go.Bar(x=grouped.to_numpy(), y=[_esc(v) for v in grouped.index], orientation="h",
                           hovertemplate="%{y}: %{x:,}<extra></extra>"))
    fig.update_layout(title=f"{'Samples' if measure == 'n' else 'Tokens'} per {view}", height=max(260, 26 * len(grouped) + 120),
                      margin={"l": 10, "r": 10, "t": 40, "b": 30})
    return fig


def before_after_bar(sources: pd.DataFrame) -> go.Figure:
    """Per source: all samples, after filters and de-duplication, and selected."""
    names = [_esc(x) for x in sources["dataset"]]
    fig = go.Figure()
    for column, label in (("n_total", "in the store"), ("n_after_filters", "after filters"), ("n_selected", "selected")):
        fig.add_trace(go.Bar(name=label, x=names, y=sources[column], hovertemplate="%{x}: %{y:,}<extra>" + label + "</extra>"))
    fig.update_layout(barmode="group", title="Before and after filters", height=360,
                      margin={"l": 10, "r": 10, "t": 40, "b": 30})
    return fig


def sunburst(composition: pd.DataFrame, path: tuple[str, str] = ("source", "category")) -> go.Figure:
    """Source -> category (or any two columns of the composition frame) as a sunburst."""
    outer, inner = path
    g = composition.groupby([outer, inner])["n"].sum().reset_index() if len(composition) else pd.DataFrame(
        columns=[outer, inner, "n"])
    ids, labels, parents, values = [], [], [], []
    for name, total in g.groupby(outer)["n"].sum().items():
        ids.append(f"o:{name}")
        labels.append(_esc(name))
        parents.append("")
        values.append(int(total))
    for row in g.itertuples(index=False):
        ids.append(f"o:{getattr(row, outer)}/i:{getattr(row, inner)}")
        labels.append(_esc(getattr(row, inner)))
        parents.append(f"o:{getattr(row, outer)}")
        values.append(int(row.n))
    fig = go.Figure(go.Sunburst(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total"))
    fig.update_layout(title=f"{outer} → {inner}", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def compare_bar(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str], view: str = "source") -> go.Figure:
    """Two recipes' compositions side by side, as shares of each mixture."""
    column = VIEWS[view]
    fig = go.Figure()
    for frame, name in zip((a, b), names, strict=True):
        counts = frame.groupby(column)["n"].sum() if len(frame) else pd.Series(dtype=float)
        share = counts / counts.sum() if counts.sum() else counts
        fig.add_trace(go.Bar(name=_esc(name), x=[_esc(v) for v in share.index], y=share.to_numpy(),
                             hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.update_layout(barmode="group", title=f"Share per {view}", yaxis_tickformat=".0%", height=360,
                      margin={"l": 10, "r": 10, "t": 40, "b": 30})
    return fig
