"""Plotly figures of tags ("Fixing It in Post" style), shared by the Tags page and notebooks.

Inputs are `core.tags.results.current_tags` frames (one row per sample, a `dataset` column, one column per tag
plus `<tag>__status`). Every clickable mark carries `customdata` = (dataset or row value, value or column
value) so a selection maps back to its samples with `ids_for_bar` / `ids_for_cell`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from core.tags.vocabulary import ORDERED, VOCABULARY

NOT_OK = "[{}]"  # how a non-ok status appears as a category: never mixed with real values


def _order(tag: str, values: Sequence[str]) -> list[str]:
    vocab = VOCABULARY.get(tag) or ORDERED.get(tag)
    present = [v for v in pd.unique(pd.Series(list(values))) if isinstance(v, str)]
    if vocab:
        return [v for v in vocab if v in present] + sorted(v for v in present if v not in vocab)
    return sorted(present)


def shown_values(df: pd.DataFrame, tag: str) -> pd.Series:
    """The tag's value per sample, with '[status]' where the tag was not made properly."""
    status = df.get(f"{tag}__status", pd.Series("ok", index=df.index))
    values = df[tag].astype(object).where(status == "ok", status.map(lambda s: NOT_OK.format(s)))
    return values.where(values.notna(), "[absent]")


def distribution_figure(df: pd.DataFrame, tag: str, title: str | None = None) -> go.Figure:
    """Share of each value of `tag` per dataset, bars side by side."""
    fig = go.Figure()
    if df.empty or tag not in df.columns:
        return _empty(f"no {tag} tags yet")
    values = shown_values(df, tag)
    order = _order(tag, values)
    for dataset, group in values.groupby(df["dataset"], sort=True):
        counts = group.value_counts()
        share = counts / counts.sum()
        xs = [v for v in order if v in counts.index]
        fig.add_bar(x=xs, y=[share[v] for v in xs], name=str(dataset),
                    customdata=[[dataset, v] for v in xs], text=[int(counts[v]) for v in xs],
                    hovertemplate="%{x}<br>%{y:.1%} (%{text} samples)<extra>" + str(dataset) + "</extra>")
    fig.update_layout(barmode="group", title=title or tag, yaxis_tickformat=".0%", height=340,
                      margin=dict(l=40, r=10, t=40, b=40), legend_title_text="dataset",
                      xaxis=dict(categoryorder="array", categoryarray=order), clickmode="event+select")
    fig.update_traces(textposition="none")
    return fig


def reward_by_category_figure(df: pd.DataFrame, score_tag: str = "response_quality",
                              by: str = "category") -> go.Figure:
    """Box plot of a score per category, one box per dataset side by side."""
    if df.empty or score_tag not in df.columns or by not in df.columns:
        return _empty(f"no {score_tag} and {by} tags to plot together")
    data = df[(df.get(f"{score_tag}__status") == "ok") & (df.get(f"{by}__status") == "ok")]
    if data.empty:
        return _empty(f"no sample has both {score_tag} and {by}")
    fig = go.Figure()
    for dataset, group in data.groupby("dataset", sort=True):
        fig.add_box(x=group[by], y=group[score_tag].astype(float), name=str(dataset), boxpoints=False)
    fig.update_layout(boxmode="group", title=f"{score_tag} by {by}", height=360, margin=dict(l=40, r=10, t=40, b=80),
                      xaxis=dict(categoryorder="array", categoryarray=_order(by, data[by])), legend_title_text="dataset")
    return fig


def crosstab(df: pd.DataFrame, row_tag: str, col_tag: str) -> pd.DataFrame:
    """Counts of (row value, column value) over the samples where both tags are ok."""
    if df.empty or row_tag not in df.columns or col_tag not in df.columns:
        return pd.DataFrame()
    ok = df[(df.get(f"{row_tag}__status") == "ok") & (df.get(f"{col_tag}__status") == "ok")]
    if ok.empty:
        return pd.DataFrame()
    table = pd.crosstab(ok[row_tag], ok[col_tag])
    return table.reindex(index=_order(row_tag, table.index), columns=_order(col_tag, table.columns))


def crosstab_figure(df: pd.DataFrame, row_tag: str, col_tag: str, title: str | None = None) -> go.Figure:
    """A heatmap of the cross-tab drawn as square markers, so that a cell can be clicked (selected)."""
    table = crosstab(df, row_tag, col_tag)
    if table.empty:
        return _empty(f"no samples with both {row_tag} and {col_tag}")
    long = table.stack().reset_index()
    long.columns = ["row", "col", "n"]
    share = long["n"] / max(1, long["n"].sum())
    fig = go.Figure(go.Scatter(
        x=long["col"], y=long["row"], mode="markers+text", text=long["n"].astype(str),
        customdata=long[["row", "col"]].to_numpy(), textfont=dict(size=10),
        marker=dict(symbol="square", size=34, color=share, colorscale="Blues", showscale=True,
                    colorbar=dict(title="share", tickformat=".0%"), line=dict(width=0.5, color="#ccc")),
        hovertemplate=f"{row_tag}: %{{y}}<br>{col_tag}: %{{x}}<br>%{{text}} samples<extra></extra>"))
    fig.update_layout(title=title or f"{row_tag} x {col_tag}", height=80 + 42 * len(table.index),
                      margin=dict(l=40, r=10, t=40, b=60), clickmode="event+select",
                      xaxis=dict(categoryorder="array", categoryarray=list(table.columns), title=col_tag),
                      yaxis=dict(categoryorder="array", categoryarray=list(table.index)[::-1], title=row_tag))
    return fig


def ids_for_bar(df: pd.DataFrame, tag: str, dataset: str, value: str) -> list[int]:
    values = shown_values(df, tag)
    return [int(i) for i in df.index[(df["dataset"] == dataset) & (values == value)]]


def ids_for_cell(df: pd.DataFrame, row_tag: str, col_tag: str, row_value: str, col_value: str) -> list[int]:
    mask = ((df.get(f"{row_tag}__status") == "ok") & (df.get(f"{col_tag}__status") == "ok")
            & (df[row_tag] == row_value) & (df[col_tag] == col_value))
    return [int(i) for i in df.index[mask]]


def selected_points(event: object) -> list[list[str]]:
    """customdata of the points in a Streamlit plotly selection event (empty when nothing selected)."""
    try:
        points = event["selection"]["points"]  # type: ignore[index]
    except (KeyError, TypeError):
        return []
    return [list(p["customdata"]) for p in points if p.get("customdata") is not None]


def _empty(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=200, xaxis_visible=False, yaxis_visible=False, margin=dict(l=10, r=10, t=10, b=10))
    return fig
