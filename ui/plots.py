"""Plotly figure builders (drawing only; every number comes from core)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

import plotly.express as px

PALETTE = px.colors.qualitative.Bold + px.colors.qualitative.Pastel + px.colors.qualitative.Dark24
MAX_CATEGORIES = 24


def scatter_map(coords: np.ndarray, rows: np.ndarray, hover: list[str], *, color: pd.Series | None = None,
                color_name: str | None = None, title: str = "", axis_titles=("1", "2")) -> go.Figure:
    """WebGL scatter of 2-D coordinates; ``rows`` (item indices) ride along as customdata for selections."""
    fig = go.Figure()
    hover = np.asarray(hover, dtype=object)
    common = dict(mode="markers", hovertemplate="%{text}<extra>%{customdata}</extra>")
    if color is None:
        fig.add_trace(go.Scattergl(x=coords[:, 0], y=coords[:, 1], text=hover, customdata=rows,
                                   marker=dict(size=5, color="#4C5FD5", opacity=0.75), name="items", **common))
    elif pd.api.types.is_numeric_dtype(color) and color.nunique() > MAX_CATEGORIES:
        fig.add_trace(go.Scattergl(
            x=coords[:, 0], y=coords[:, 1], text=hover, customdata=rows, name=color_name,
            marker=dict(size=5, color=color.to_numpy(dtype=float), colorscale="Viridis", opacity=0.8,
                        colorbar=dict(title=color_name)), **common))
    else:
        values = color.astype(str).fillna("(missing)").to_numpy()
        counts = pd.Series(values).value_counts()
        keep = set(counts.index[:MAX_CATEGORIES])
        values = np.where(np.isin(values, list(keep)), values, "(other)")
        for i, cat in enumerate(sorted(set(values), key=lambda c: (c == "(other)", str(c)))):
            m = values == cat
            fig.add_trace(go.Scattergl(
                x=coords[m, 0], y=coords[m, 1], text=hover[m], customdata=rows[m], name=str(cat),
                marker=dict(size=5, color=PALETTE[i % len(PALETTE)], opacity=0.8), **common))
    fig.update_layout(title=title, height=620, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(itemsizing="constant", title=color_name), dragmode="lasso",
                      xaxis_title=axis_titles[0], yaxis_title=axis_titles[1], template="plotly_white")
    return fig


def selected_rows(event) -> list[int]:
    """Item indices selected on a chart built by :func:`scatter_map` (lasso, box or click)."""
    if not event:
        return []
    try:
        points = event.selection.points  # PlotlyState
    except AttributeError:
        points = (event or {}).get("selection", {}).get("points", [])
    rows = []
    for p in points or []:
        cd = p.get("customdata")
        if isinstance(cd, list):
            cd = cd[0] if cd else None
        if cd is not None:
            rows.append(int(cd))
    return sorted(set(rows))


def heatmap(values, x_names: list[str], y_names: list[str], *, title: str = "", colorbar: str = "",
            zmin: float | None = None, zmax: float | None = None, reverse: bool = False,
            hover_extra: list[list[str]] | None = None, x_title: str = "", y_title: str = "") -> go.Figure:
    """Annotated heatmap (None cells stay blank and say 'undefined' on hover)."""
    z = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    text = [["undefined" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z]
    custom = hover_extra if hover_extra is not None else [["" for _ in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=x_names, y=y_names, text=text, texttemplate="%{text}", customdata=custom,
        colorscale="Viridis_r" if reverse else "Viridis", zmin=zmin, zmax=zmax,
        colorbar=dict(title=colorbar),
        hovertemplate="%{y} vs %{x}<br>" + (colorbar or "value") + " = %{text}%{customdata}<extra></extra>"))
    size = max(420, 60 * max(len(x_names), len(y_names)) + 160)
    fig.update_layout(title=title, height=min(size, 1100), template="plotly_white",
                      margin=dict(l=10, r=10, t=60, b=10), xaxis_title=x_title, yaxis_title=y_title)
    fig.update_yaxes(autorange="reversed")
    return fig


METHOD_LABELS = {"none": "no alignment (cosine)", "affine": "affine", "pca_affine": "PCA-k + affine",
                 "procrustes": "Procrustes", "local_cka": "local CKA", "cca_affine": "CCA + affine",
                 "cca_local_cka": "CCA + local CKA"}
METRIC_LABELS = {"matching_accuracy": "matching accuracy", "top1_x_to_y": "top-1 (source -> target)",
                 "top5_x_to_y": "top-5 (source -> target)", "top10_x_to_y": "top-10 (source -> target)",
                 "top1_y_to_x": "top-1 (target -> source)", "top5_y_to_x": "top-5 (target -> source)",
                 "top10_y_to_x": "top-10 (target -> source)", "mrr": "MRR (both directions)",
                 "mrr_x_to_y": "MRR (source -> target)", "mrr_y_to_x": "MRR (target -> source)"}


def curve(summary: list[dict], x_key: str, metric: str, *, title: str = "", x_title: str = "",
          log_x: bool = False) -> go.Figure:
    """Mean +- std over seeds per method against ``x_key``, with chance as a dashed line."""
    df = pd.DataFrame([r for r in summary if r["metric"] == metric])
    fig = go.Figure()
    if df.empty:
        return fig
    for i, (method, part) in enumerate(df.groupby("method", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        if part[x_key].isna().all():  # methods independent of x: a flat band
            m, s = float(part["mean"].iloc[0]), float(part["std"].iloc[0])
            xs = sorted(df[x_key].dropna().unique())
            fig.add_trace(go.Scatter(x=xs, y=[m] * len(xs), mode="lines", name=METHOD_LABELS.get(method, method),
                                     line=dict(color=colour, dash="dot"),
                                     hovertemplate=f"{m:.3f} +- {s:.3f}<extra>{method}</extra>"))
            continue
        part = part.sort_values(x_key)
        fig.add_trace(go.Scatter(x=part[x_key], y=part["mean"], mode="lines+markers",
                                 name=METHOD_LABELS.get(method, method), line=dict(color=colour),
                                 error_y=dict(type="data", array=part["std"], visible=True)))
    chance = df.groupby(x_key)["chance"].mean().sort_index()
    if len(chance):
        fig.add_trace(go.Scatter(x=chance.index, y=chance.values, mode="lines", name="chance",
                                 line=dict(color="grey", dash="dash")))
    fig.update_layout(title=title, template="plotly_white", height=460, xaxis_title=x_title,
                      yaxis_title=METRIC_LABELS.get(metric, metric), margin=dict(l=10, r=10, t=60, b=10))
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def bars_with_errors(rows: list[dict], *, title: str = "", y_title: str = "") -> go.Figure:
    """Grouped bars: rows of {method, metric, mean, std, chance}."""
    df = pd.DataFrame(rows)
    fig = go.Figure()
    for i, (metric, part) in enumerate(df.groupby("metric", sort=False)):
        fig.add_trace(go.Bar(x=[METHOD_LABELS.get(m, m) for m in part["method"]], y=part["mean"],
                             error_y=dict(type="data", array=part["std"]), name=METRIC_LABELS.get(metric, metric),
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group", title=title, template="plotly_white", height=420, yaxis_title=y_title,
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def spectrum(values, *, title: str = "", name: str = "", y_title: str = "", extra: dict | None = None) -> go.Figure:
    fig = go.Figure(go.Scatter(x=np.arange(1, len(values) + 1), y=values, mode="lines+markers", name=name))
    for label, vals in (extra or {}).items():
        fig.add_trace(go.Scatter(x=np.arange(1, len(vals) + 1), y=vals, mode="lines+markers", name=label))
    fig.update_layout(title=title, template="plotly_white", height=380, xaxis_title="component",
                      yaxis_title=y_title, margin=dict(l=10, r=10, t=60, b=10))
    return fig
