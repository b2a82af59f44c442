"""Plotly figures for embedding maps, shared by the map page and notebooks.

Only what the chart needs goes into the figure: x, y as float32 (plotly encodes numpy arrays as binary
base64), sample ids as int customdata, the colour column and, within a hover budget, the escaped start
of each text. Past the point budget the markers are a density-preserving sample (core.maps.downsample),
while the density layer is computed from every point and shipped as a small grid.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.maps import POINT_BUDGET, downsample

MAX_CATEGORIES = 20
HOVER_BUDGET = 100_000  # above this many drawn points, hover shows id and colour value only (bytes)
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D",
           "#BAB0AC", "#1F77B4", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22",
           "#17BECF", "#AEC7E8"]
MISSING = "(none)"  # the category of samples without a value: drawn in a neutral grey, never dropped
MISSING_COLOUR = "#C8C8C8"


@dataclass
class FigureInfo:
    """What the page tells the user about the drawing: how many points, how they were chosen."""

    total: int
    shown: int
    sampled: bool
    hover_text: bool

    @property
    def message(self) -> str:
        if not self.sampled:
            return f"showing all {self.total:,} points"
        return (f"showing {self.shown:,} of {self.total:,} points, sampled per grid cell in proportion to its "
                "count (density preserved, every occupied cell kept); selections apply to all points")


def escape_hover(text: object, limit: int = 80) -> str:
    """Plain text for plotly hover labels, which interpret a subset of HTML: escape < > & and quotes."""
    s = " ".join(str(text if text is not None else "").split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=True)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series) and series.name != "cluster"


def _sizes(values: pd.Series | None, n: int) -> np.ndarray | float:
    if values is None:
        return 4.0 if n < 20_000 else 2.5
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    lo, hi = np.nanpercentile(v, 2), np.nanpercentile(v, 98)
    scaled = np.clip((v - lo) / ((hi - lo) or 1.0), 0, 1)
    return np.nan_to_num(3 + 9 * scaled, nan=3).astype(np.float32)


def _hover(shown: pd.DataFrame, with_text: bool) -> tuple[list[str] | None, str]:
    if not with_text:
        return None, "id %{customdata}<extra></extra>"
    texts = [escape_hover(t) for t in shown["preview"]] if "preview" in shown else None
    return texts, "%{hovertext}<extra>id %{customdata}</extra>"


def _marker_trace(part: pd.DataFrame, name: str, colour: str, size, with_text: bool) -> go.Scattergl:
    texts, template = _hover(part, with_text)
    return go.Scattergl(
        x=part.x.to_numpy(np.float32), y=part.y.to_numpy(np.float32), mode="markers", name=escape_hover(name, 60),
        customdata=part.id.to_numpy(np.int64), hovertext=texts, hovertemplate=template,
        marker={"size": size, "color": colour, "opacity": 0.75, "line": {"width": 0}})


def _categorical_traces(shown: pd.DataFrame, color: str, sizes, with_text: bool) -> list[go.Scattergl]:
    values = shown[color].astype("string").fillna(MISSING)
    if color == "cluster" and "title" in shown:
        values = (shown["cluster"].astype("Int64").astype("string") + ": " + shown["title"].astype("string")).fillna(MISSING)
    present = values[values != MISSING]
    if present.nunique() > MAX_CATEGORIES:
        top = present.value_counts().index[:MAX_CATEGORIES - 1]
        values = values.where(values.isin(top) | (values == MISSING), "other")
    traces = []
    for i, category in enumerate([MISSING] + list(values[values != MISSING].value_counts().index)):
        mask = (values == category).to_numpy()
        if not mask.any():
            continue
        size = sizes[mask] if isinstance(sizes, np.ndarray) else sizes
        # Missing values never fold into "other": a grey trace of their own, drawn first (below the rest).
        colour = MISSING_COLOUR if category == MISSING else PALETTE[(i - 1) % len(PALETTE)]
        traces.append(_marker_trace(shown[mask], category, colour, size, with_text))
    return traces


def _numeric_traces(shown: pd.DataFrame, color: str | None, sizes, with_text: bool) -> list[go.Scattergl]:
    """One trace on a colour scale; samples without a value go in a grey trace of their own, below it."""
    missing = pd.to_numeric(shown[color], errors="coerce").isna().to_numpy() if color else np.zeros(len(shown), bool)
    traces = []
    if missing.any():
        size = sizes[missing] if isinstance(sizes, np.ndarray) else sizes
        traces.append(_marker_trace(shown[missing], MISSING, MISSING_COLOUR, size, with_text))
    part = shown[~missing]
    size = sizes[~missing] if isinstance(sizes, np.ndarray) else sizes
    texts, template = _hover(part, with_text)
    marker: dict = {"size": size, "opacity": 0.75, "line": {"width": 0}}
    if color:
        marker |= {"color": pd.to_numeric(part[color], errors="coerce").to_numpy(np.float32),
                   "colorscale": "Viridis", "showscale": True, "colorbar": {"title": {"text": escape_hover(color)}}}
    else:
        marker["color"] = PALETTE[0]
    traces.append(go.Scattergl(x=part.x.to_numpy(np.float32), y=part.y.to_numpy(np.float32), mode="markers",
                               name="samples", customdata=part.id.to_numpy(np.int64), hovertext=texts,
                               hovertemplate=template, marker=marker, showlegend=False))
    return traces


def density_trace(points: pd.DataFrame, bins: int = 80) -> go.Contour:
    """Density of every point (not only the drawn ones) as contour lines: a bins x bins grid."""
    z, xe, ye = np.histogram2d(points.x, points.y, bins=bins)
    from scipy.ndimage import gaussian_filter

    z = gaussian_filter(z.T, sigma=1.2)
    return go.Contour(x=(xe[:-1] + xe[1:]) / 2, y=(ye[:-1] + ye[1:]) / 2, z=z.astype(np.float32),
                      showscale=False, contours={"coloring": "lines"}, line={"width": 1},
                      colorscale=[[0, "rgba(80,80,80,0.15)"], [1, "rgba(40,40,40,0.8)"]], ncontours=8,
                      hoverinfo="skip", name="density")


def map_figure(
    points: pd.DataFrame,
    *,
    color: str | None = "cluster",
    size: str | None = None,
    labels: pd.DataFrame | None = None,
    density: bool = False,
    budget: int = POINT_BUDGET,
    hover_budget: int = HOVER_BUDGET,
    max_labels: int = 40,
    height: int = 650,
    title: str | None = None,
) -> tuple[go.Figure, FigureInfo]:
    """The map: WebGL markers coloured by `color` (categorical -> legend, numeric -> colour scale),
    sized by `size`, with cluster titles at their centres and an optional density layer."""
    if color is not None and color not in points:
        raise ValueError(f"no column {color!r} to colour by")
    shown = downsample(points, budget)
    info = FigureInfo(len(points), len(shown), len(shown) < len(points), len(shown) <= hover_budget)
    sizes = _sizes(shown[size] if size else None, len(shown))
    fig = go.Figure()
    if density and len(points) > 1:
        fig.add_trace(density_trace(points))
    numeric = color is None or _is_numeric(shown[color])
    traces = (_numeric_traces if numeric else _categorical_traces)(shown, color, sizes, info.hover_text)
    for trace in traces:
        fig.add_trace(trace)
    if labels is not None and len(labels):
        for row in labels[labels.cluster != -1].nlargest(max_labels, "size").itertuples():
            fig.add_annotation(x=row.x, y=row.y, text=escape_hover(row.title, 40), showarrow=False,
                               font={"size": 11, "color": "#111"}, bgcolor="rgba(255,255,255,0.7)")
    fig.update_layout(height=height, dragmode="select", uirevision="map", margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"itemsizing": "constant", "font": {"size": 10}}, title=escape_hover(title or "", 100),
                      xaxis={"showticklabels": False, "title": None}, yaxis={"showticklabels": False, "title": None},
                      plot_bgcolor="white")
    return fig, info


def side_by_side_note(left: FigureInfo, right: FigureInfo) -> str:
    return f"left: {left.message}; right: {right.message}"
