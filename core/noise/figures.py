"""Plotly figures of a noise run, shared by the noise page and notebooks.

Class names and any other dataset value reach the figures escaped (plotly renders a subset of HTML in
labels and hovers). Large runs are sampled to a point budget for the scatter; histograms use every row.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.noise.label_names import display

POINT_BUDGET = 20_000
PALETTE = ["#4C78A8", "#E45756", "#54A24B", "#F58518", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D",
           "#BAB0AC"]
REGION_COLOURS = {"easy": "#54A24B", "ambiguous": "#F58518", "hard": "#E45756"}


def _esc(value: object, limit: int = 60) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return html.escape(text[:limit - 1] + "…" if len(text) > limit else text, quote=True)


def weight_distribution(scores: pd.DataFrame, column: str = "rescaler_weight", *, bins: int = 40) -> go.Figure:
    """Histogram of a per-sample weight or score, one overlaid trace per given class."""
    fig = go.Figure()
    for i, (label, group) in enumerate(scores.groupby("given_label", sort=True)):
        fig.add_trace(go.Histogram(x=group[column].to_numpy(float), name=_esc(label), opacity=0.6,
                                   nbinsx=bins, marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="overlay", xaxis_title=column, yaxis_title="samples", legend_title="given label",
                      margin=dict(l=40, r=10, t=30, b=40), height=340)
    return fig


def _sample(scores: pd.DataFrame, budget: int, seed: int = 0) -> pd.DataFrame:
    if len(scores) <= budget:
        return scores
    flagged = scores.filter(like="_flag").any(axis=1) if scores.filter(like="_flag").shape[1] else None
    keep = scores[flagged] if flagged is not None else scores.iloc[:0]
    rest = scores.drop(keep.index).sample(max(0, budget - len(keep)), random_state=seed)
    return pd.concat([keep.head(budget), rest])


def cartography_map(scores: pd.DataFrame, color_by: str = "cartography_region", *,
                    budget: int = POINT_BUDGET) -> go.Figure:
    """Variability (x) against confidence (y), coloured by a region or any method's flag."""
    pts = _sample(scores, budget)
    fig = go.Figure()
    groups = pts[color_by].fillna("n/a").astype(str) if color_by in pts else pd.Series("all", index=pts.index)
    for i, value in enumerate(sorted(groups.unique())):
        part = pts[groups == value]
        colour = REGION_COLOURS.get(value) or ("#E45756" if value == "True" else
                                               "#BAB0AC" if value == "False" else PALETTE[i % len(PALETTE)])
        hover = [f"sample {sid}<br>given {_esc(g)}" for sid, g in zip(part.index, part["given_label"], strict=True)]
        fig.add_trace(go.Scattergl(
            x=part["cartography_variability"].to_numpy(np.float32), y=part["cartography_confidence"].to_numpy(np.float32),
            mode="markers", name=f"{_esc(color_by)} = {_esc(value)}", customdata=part.index.to_numpy(np.int64),
            hovertext=hover, hoverinfo="text", marker=dict(size=4, color=colour, opacity=0.6)))
    fig.update_layout(xaxis_title="variability", yaxis_title="confidence", height=420,
                      margin=dict(l=40, r=10, t=30, b=40), legend_title=_esc(color_by))
    return fig


def weight_trajectories(long: pd.DataFrame, *, series: str = "rescaler_weight",
                        labels: dict[int, str] | None = None) -> go.Figure:
    """One line per sample: the value of `series` after each epoch."""
    fig = go.Figure()
    for sample_id, group in long.groupby("sample_id", sort=False):
        name = f"{sample_id}" + (f" ({_esc(labels[sample_id])})" if labels and sample_id in labels else "")
        fig.add_trace(go.Scatter(x=group["epoch"], y=group["value"], mode="lines+markers", name=name))
    fig.update_layout(xaxis_title="epoch", yaxis_title=series, height=340, margin=dict(l=40, r=10, t=30, b=40))
    return fig


def confusion_figure(matrix: pd.DataFrame, names: dict[str, str] | None = None) -> go.Figure:
    """Given (rows) x predicted (columns) counts, with the counts written in the cells. Both axes are
    categorical (class codes such as 0, 1, 2 would otherwise make a numeric axis, ticks at -0.5, 0.5),
    one tick per class, named from `names` ({value: name}) where given."""
    rows = [_esc(display(r, names or {})) for r in matrix.index]
    cols = [_esc(display(c, names or {})) for c in matrix.columns]
    values = matrix.to_numpy()
    fig = go.Figure(go.Heatmap(z=values, x=cols, y=rows, colorscale="Blues", text=values, texttemplate="%{text}",
                               hovertemplate="given %{y}<br>predicted %{x}<br>%{z} samples<extra></extra>"))
    fig.update_layout(xaxis=dict(title="predicted", type="category", tickmode="array", tickvals=cols, ticktext=cols),
                      yaxis=dict(title="given", type="category", tickmode="array", tickvals=rows, ticktext=rows,
                                 autorange="reversed"),
                      height=360, margin=dict(l=40, r=10, t=30, b=40))
    return fig
