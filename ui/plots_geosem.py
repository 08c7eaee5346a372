"""Figures of the Neighbours and Query views: point-cloud thumbnails and geometric-vs-embedding scatters."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MAX_SCATTER_PAIRS = 6000
AGREE, DISAGREE, QUERY = "#2E8B57", "#C0392B", "#4C5FD5"


def cloud_thumbnails(clouds: list[np.ndarray], titles: list[str], *, colors: list[str] | None = None,
                     cols: int = 5, size: int = 210, max_points: int = 400, title: str = "") -> go.Figure:
    """A grid of small scatter3d views, one per point cloud (z up), with a title under each (the caption)."""
    n = max(1, len(clouds))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, specs=[[{"type": "scene"}] * cols for _ in range(rows)],
                        subplot_titles=[t for t in titles] + [""] * (rows * cols - len(titles)),
                        horizontal_spacing=0.01, vertical_spacing=0.06)
    for i, pts in enumerate(clouds):
        pts = np.asarray(pts)
        if len(pts) > max_points:
            pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(int)]
        color = (colors[i] if colors else QUERY)
        fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", showlegend=False,
                                   marker=dict(size=1.8, color=color, opacity=0.85), hoverinfo="skip"),
                      row=i // cols + 1, col=i % cols + 1)
    axis = dict(visible=False, range=[-1.05, 1.05])
    for i in range(rows * cols):
        key = "scene" if i == 0 else f"scene{i + 1}"
        fig.layout[key].update(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube",
                               camera=dict(eye=dict(x=1.4, y=1.4, z=0.9)))
    for ann in fig.layout.annotations:
        ann.font.size = 11
    fig.update_layout(height=rows * size + (40 if title else 10), margin=dict(l=0, r=0, t=40 if title else 24, b=0),
                      title=title or None, template="plotly_white")
    return fig


def cloud_silhouettes(clouds: list[np.ndarray], titles: list[str], *, colors: list[str] | None = None,
                      cols: int = 5, size: int = 190, max_points: int = 400) -> go.Figure:
    """A grid of 2-D front views (x across, z up) of point clouds: one light figure, no 3-D scenes.

    Ten interactive 3-D scenes cost seconds to draw in a browser without a GPU; a front view shows the shape
    at a glance and draws at once.
    """
    n = max(1, len(clouds))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles) + [""] * (rows * cols - len(titles)),
                        horizontal_spacing=0.01, vertical_spacing=0.08)
    for i, pts in enumerate(clouds):
        pts = np.asarray(pts, dtype=float)
        if len(pts) > max_points:
            pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(int)]
        depth = pts[:, 1]
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 2], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(size=2.5, color=(colors[i] if colors else QUERY),
                                             opacity=(0.35 + 0.6 * (depth - depth.min()) / (np.ptp(depth) + 1e-9)))),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False, range=[-1.05, 1.05])
    fig.update_yaxes(visible=False, range=[-1.05, 1.05], scaleanchor="x", scaleratio=1)
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            k = (r - 1) * cols + c
            fig.update_yaxes(scaleanchor=f"x{'' if k == 1 else k}", row=r, col=c)
    for ann in fig.layout.annotations:
        ann.font.size = 11
    fig.update_layout(height=rows * size + 20, margin=dict(l=0, r=0, t=24, b=0), template="plotly_white")
    return fig


def short(text: str, width: int = 34) -> str:
    """A caption cut to ``width`` characters (for thumbnail titles)."""
    text = str(text)
    return text if len(text) <= width else text[:width - 1] + "..."


def distance_scatter(geo: np.ndarray, versions: dict, *, metric: str, geometry_label: str = "Chamfer distance",
                     seed: int = 0) -> go.Figure:
    """Geometric distance (x) against embedding distance (y) for each version, with its correlation.

    ``versions``: {title: {"distances": s x s, "pearson", "spearman"}}. At most ``MAX_SCATTER_PAIRS`` pairs are
    drawn (a seeded sample; the correlations use every pair).
    """
    s = geo.shape[0]
    iu = np.triu_indices(s, 1)
    pick = np.arange(len(iu[0]))
    if len(pick) > MAX_SCATTER_PAIRS:
        pick = np.sort(np.random.default_rng(seed).choice(len(pick), MAX_SCATTER_PAIRS, replace=False))
    x = geo[iu][pick]
    names = list(versions)
    titles = [f"{n}: Pearson r = {_f(v['pearson'])}, Spearman = {_f(v['spearman'])}" for n, v in versions.items()]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles, horizontal_spacing=0.08)
    for j, name in enumerate(names):
        y = versions[name]["distances"][iu][pick]
        fig.add_trace(go.Scattergl(x=x, y=y, mode="markers", name=name, showlegend=False,
                                   marker=dict(size=3, opacity=0.35, color=[QUERY, AGREE, "#E67E22", "#7F8C8D"][j % 4])),
                      row=1, col=j + 1)
        fig.update_xaxes(title_text=geometry_label, row=1, col=j + 1)
        fig.update_yaxes(title_text=f"{metric} distance", row=1, col=j + 1)
    for ann in fig.layout.annotations:
        ann.font.size = 12
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=60, b=10), template="plotly_white",
                      title=f"Pairwise distances of {s} sampled items ({len(pick):,} of {len(iu[0]):,} pairs drawn)")
    return fig


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"
