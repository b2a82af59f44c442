"""Plotly figures for embedding maps, shared by the map page and notebooks.

Only what the chart needs goes into the figure: x, y as float32 (plotly encodes numpy arrays as binary
base64), sample ids as int customdata, the colour column and, within a hover budget, the escaped start
of each text. Past the point budget the markers are a density-preserving sample (core.maps.points.downsample),
while the density layer is computed from every point and shipped as a small grid.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.maps.points import POINT_BUDGET, downsample

MAX_CATEGORIES = 60  # legend entries before the rarest values fold into "other"
HOVER_BUDGET = 100_000  # above this many drawn points, hover shows id and colour value only (bytes)
MISSING = "(none)"  # the category of samples without a value: drawn in a neutral grey, never dropped
MISSING_COLOUR = "#C8C8C8"
UNCLUSTERED = "unclustered"  # the legend entry of HDBSCAN's noise points (cluster -1)
UNCLUSTERED_COLOUR = "#B4B4B4"  # HDBSCAN noise (cluster -1): grey like missing values, never a cluster's hue
LEGEND_PER_ROW = 3  # legend entries per row below the chart, to size the figure's height


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02X}" for c in rgb)


def _rgb(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _base_palette() -> tuple[str, ...]:
    """Plotly's qualitative palettes in turn (T10, D3, Dark24, Alphabet, Light24), without greys (kept for
    missing and unclustered) and without colours too close to one taken before."""
    from plotly.express.colors import qualitative as q

    out: list[str] = []
    for colour in [*q.T10, *q.D3, *q.Dark24, *q.Alphabet, *q.Light24]:
        rgb = _rgb(colour.upper())
        if colorsys.rgb_to_hls(*rgb)[2] < 0.25:  # greys and near-greys
            continue
        if all(sum((a - b) ** 2 for a, b in zip(rgb, _rgb(o), strict=True)) > 0.02 for o in out):
            out.append(colour.upper())
    return tuple(out)


def palette(n: int) -> list[str]:
    """`n` distinct colours, none grey: the qualitative palettes first, then hues spaced by the golden
    angle at alternating lightness, so colours never repeat however many categories there are."""
    base = list(_base_palette()[:n])
    i = 0
    while len(base) < n:
        hue = (i * 0.618033988749895) % 1.0
        colour = _hex(colorsys.hls_to_rgb(hue, (0.35, 0.5, 0.65)[i % 3], 0.75))
        if colour not in base:
            base.append(colour)
        i += 1
    return base



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
    """Plain text for plotly's labels (hover, legend, annotations, titles), which interpret a few HTML
    tags and decode only &amp; &lt; &gt; and numeric entities: escape & < > once, nothing else (an
    escaped quote, &quot;, would show literally)."""
    s = " ".join(str(text if text is not None else "").split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def _category_values(shown: pd.DataFrame, color: str) -> tuple[pd.Series, str | None]:
    """The legend text of every point, and which text (if any) is HDBSCAN's noise, "unclustered"."""
    if color != "cluster":
        return shown[color].astype("string").fillna(MISSING), None
    number = shown["cluster"].astype("Int64")
    title = shown["title"].astype("string") if "title" in shown else pd.Series(pd.NA, index=shown.index, dtype="string")
    # A point without a cluster (NA) stays missing; only -1 is HDBSCAN's noise.
    values = (number.astype("string") + ": " + title.fillna("")).where((number != -1).fillna(True), UNCLUSTERED)
    return values.fillna(MISSING), UNCLUSTERED


def _categorical_traces(shown: pd.DataFrame, color: str, sizes, with_text: bool) -> list[go.Scattergl]:
    values, unclustered = _category_values(shown, color)
    grey = {MISSING, unclustered}
    present = values[~values.isin(grey)]
    if present.nunique() > MAX_CATEGORIES:
        top = present.value_counts().index[:MAX_CATEGORIES - 1]
        values = values.where(values.isin(top) | values.isin(grey), "other")
    coloured = list(values[~values.isin(grey)].value_counts().index)
    if color == "cluster":  # a cluster keeps its colour when a filter changes the counts
        coloured.sort(key=lambda v: (v == "other", int(v.split(":", 1)[0]) if v != "other" else 0))
    colours = dict(zip(coloured, palette(len(coloured)), strict=True))
    traces = []
    # Missing values and unclustered points never fold into "other" and never take a hue: grey traces
    # of their own, drawn first so that they lie beneath the clusters.
    for category in [MISSING, unclustered, *coloured]:
        mask = (values == category).to_numpy() if category is not None else None
        if mask is None or not mask.any():
            continue
        size = sizes[mask] if isinstance(sizes, np.ndarray) else sizes
        colour = MISSING_COLOUR if category == MISSING else UNCLUSTERED_COLOUR if category == unclustered else colours[category]
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
        marker["color"] = palette(1)[0]
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
    dragmode: str = "pan",
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
    # The legend sits below the chart (grown to fit it), not beside it, so hover labels never cover it.
    entries = sum(1 for t in traces if t.showlegend is not False)
    legend_rows = -(-entries // LEGEND_PER_ROW) if entries > 1 else 0
    # Pan, not box select, is the default tool: Streamlit (1.67) turns click-to-select off while a box or
    # lasso tool is active, so only in pan (or zoom) does a click reach the page; box and lasso are one
    # click away in the chart's toolbar.
    fig.update_layout(height=height + 22 * legend_rows, dragmode=dragmode, uirevision=f"map-{dragmode}",
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, hoverlabel={"align": "left"},
                      legend={"itemsizing": "constant", "font": {"size": 10}, "orientation": "h", "x": 0,
                              "xanchor": "left", "y": -0.01, "yanchor": "top", "entrywidth": 0.32,
                              "entrywidthmode": "fraction"},
                      title=escape_hover(title or "", 100),
                      xaxis={"showticklabels": False, "title": None}, yaxis={"showticklabels": False, "title": None},
                      plot_bgcolor="white")
    return fig, info


def side_by_side_note(left: FigureInfo, right: FigureInfo) -> str:
    return f"left: {left.message}; right: {right.message}"
