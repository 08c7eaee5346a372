"""Figure builders of the Universe page (drawing only; every number comes from core.universe_eval).

The page shows the retrieval heatmaps, the mean / worst bars and the clustering bars as the SVG component's
arguments (``*_args``, :mod:`ui.svgchart`: no plotly bundle in the browser for a few matrices and bars); the plotly
figures of the same numbers are built for the exports, on request. The map of the universe (hundreds of linked
points, click to select) and the add-a-space timing panel (log scale) stay plotly."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.plots import PALETTE
from ui.svgchart import bars_args, heatmap_args

METHOD_LABELS = {"pw": "pairwise Procrustes", "gpa": "GPA", "gcca": "GCCA", "gcpa": "GCPA"}
METRIC_LABELS = {"top1": "Hits@1", "top5": "Hits@5", "mrr": "MRR"}     # result keys -> paper D's names


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def _label(results: dict, m: str) -> str:
    """A method's plot label: the result's own (GCCA says which variant), else the generic name."""
    r = results.get(m) or {}
    return r.get("label") or METHOD_LABELS.get(m, m)


def retrieval_heatmaps(results: dict, metric: str = "top1") -> go.Figure:
    """One M x M heatmap per method, side by side, on one 0..1 colour scale (row = query space)."""
    methods = list(results)
    fig = make_subplots(rows=1, cols=max(1, len(methods)), horizontal_spacing=0.06,
                        subplot_titles=[_label(results, m) for m in methods])
    for k, m in enumerate(methods):
        ret = results[m]
        names = [_short(n) for n in ret["spaces"]]
        z = np.array([[np.nan if v is None else v for v in row] for row in ret[metric]], dtype=float)
        text = [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z]
        fig.add_trace(go.Heatmap(
            z=z, x=names, y=names, text=text, texttemplate="%{text}", zmin=0, zmax=1, colorscale="Viridis",
            showscale=k == len(methods) - 1, colorbar=dict(title=METRIC_LABELS.get(metric, metric)),
            hovertemplate=f"{_label(results, m)}<br>%{{y}} -> %{{x}}<br>{METRIC_LABELS.get(metric, metric)}"
                          " = %{text}<extra></extra>"), row=1, col=k + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=k + 1, showticklabels=k == 0)
        fig.update_xaxes(tickangle=-40, row=1, col=k + 1)
    M = len(next(iter(results.values()))["spaces"]) if results else 0
    fig.update_layout(template="plotly_white", height=max(380, 46 * M + 230),
                      title=f"Any-to-any {METRIC_LABELS.get(metric, metric)} on held-out items<br>"
                            "<sup>row = query space, column = retrieved space; cosine in the universe</sup>",
                      margin=dict(l=10, r=10, t=90, b=10))
    return fig


def retrieval_heatmap_args(results: dict, metric: str = "top1") -> list[dict]:
    """One :func:`ui.svgchart.heatmap_args` per method (as :func:`retrieval_heatmaps`: row = query space, one
    0..1 Viridis scale, two decimals); hover: the cell's pair and value, then the method and the full names."""
    out = []
    label = METRIC_LABELS.get(metric, metric)
    for m, ret in results.items():
        full = [str(n) for n in ret["spaces"]]
        names = [_short(n) for n in full]
        extra = [[f"{_label(results, m)}: {a} -> {b}" for b in full] for a in full]
        out.append(heatmap_args(ret[metric], names, names, title=_label(results, m), colorbar=label, zmin=0.0,
                                zmax=1.0, hover_extra=extra, x_title="retrieved space", y_title="query space",
                                height=max(300, 46 * len(full) + 150)))
    return out


def mean_worst_bars_args(results: dict, metric: str = "top1") -> dict:
    """:func:`ui.svgchart.bars_args` of :func:`mean_worst_bars`: mean and worst ordered pair per method, chance as
    a dashed line; the worst bar's hover names the pair."""
    rows = []
    for m in results:
        s = results[m]["summary"][metric]
        rows.append({"series": "mean pair", "method": _label(results, m), "mean": s["mean"]})
        rows.append({"series": "worst pair", "method": _label(results, m), "mean": s["worst"],
                     "note": "worst: " + " -> ".join(s["worst_pair"] or [])})
    chance = next(iter(results.values()))["chance"][metric] if results else None
    label = METRIC_LABELS.get(metric, metric)
    return bars_args(rows, series_key="series", category_key="method", palette=PALETTE[:2], y_title=label,
                     title=f"{label}: mean and worst ordered pair of spaces", height=400,
                     hline=None if chance is None else (chance, f"chance {chance:.3f}"))


def clustering_bars_args(results: dict) -> dict:
    """:func:`ui.svgchart.bars_args` of :func:`clustering_bars`: ARI and NMI (mean over spaces and seeds)."""
    rows = [{"series": key.upper(), "method": _label(results, m), "mean": results[m]["clustering"][f"mean_{key}"]}
            for m in results if results[m].get("clustering") for key in ("ari", "nmi")]
    return bars_args(rows, series_key="series", category_key="method", palette=PALETTE[4:6], height=380,
                     title="k-means in the universe (normalised, held-out items): mean over spaces and seeds")


def mean_worst_bars(results: dict, metric: str = "top1") -> go.Figure:
    """Mean and worst off-diagonal pair per method, with chance as a dashed line."""
    methods = list(results)
    labels = [_label(results, m) for m in methods]
    summ = [results[m]["summary"][metric] for m in methods]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=[s["mean"] for s in summ], name="mean pair", marker_color=PALETTE[0],
                         text=[f"{s['mean']:.3f}" for s in summ], textposition="outside"))
    fig.add_trace(go.Bar(x=labels, y=[s["worst"] for s in summ], name="worst pair", marker_color=PALETTE[1],
                         text=[f"{s['worst']:.3f}" for s in summ], textposition="outside",
                         customdata=[" -> ".join(s["worst_pair"] or []) for s in summ],
                         hovertemplate="worst: %{customdata}<br>%{y:.3f}<extra></extra>"))
    chance = next(iter(results.values()))["chance"][metric] if results else None
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", line_color="grey", annotation_text=f"chance {chance:.3f}",
                      annotation_position="top left")
    top = max([s["mean"] for s in summ] + [0.05])
    fig.update_layout(barmode="group", template="plotly_white", height=400, yaxis_title=METRIC_LABELS.get(metric, metric),
                      yaxis_range=[0, min(1.05, top * 1.25 + 0.02)],
                      title=f"{METRIC_LABELS.get(metric, metric)}: mean and worst ordered pair of spaces",
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def universe_map_figure(umap: dict, hover: list[str], *, highlight: list[int] | None = None,
                        title: str = "") -> go.Figure:
    """Every space's copy of the same items in a shared 2-D PCA of the universe; grey lines link the copies.

    ``umap`` is :func:`core.universe_eval.universe_map`'s dict; ``hover`` one text per drawn item; ``highlight``
    positions (into the drawn items) whose M points light up.
    """
    coords = np.asarray(umap["coords"], dtype=float)       # M x Q x 2
    names = umap["spaces"]
    M, Q, _ = coords.shape
    highlight = [h for h in (highlight or []) if 0 <= h < Q]
    fig = go.Figure()
    xs, ys = [], []
    for q in range(Q):
        xs.extend(coords[:, q, 0].tolist() + [None])
        ys.extend(coords[:, q, 1].tolist() + [None])
    fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", line=dict(color="rgba(120,120,120,0.18)", width=1),
                               hoverinfo="skip", name="same item", showlegend=True))
    hover = np.asarray(hover, dtype=object)
    dim = 0.25 if highlight else 0.8
    for m in range(M):
        fig.add_trace(go.Scattergl(
            x=coords[m, :, 0], y=coords[m, :, 1], mode="markers", name=names[m], text=hover,
            customdata=np.arange(Q), marker=dict(size=6, color=PALETTE[m % len(PALETTE)], opacity=dim),
            hovertemplate="%{text}<extra>" + names[m] + "</extra>"))
    for h in highlight:
        fig.add_trace(go.Scatter(
            x=coords[:, h, 0], y=coords[:, h, 1], mode="lines+markers+text", name=f"item: {str(hover[h])[:40]}",
            text=[_short(n, 18) for n in names], textposition="top center",
            line=dict(color="black", width=2), marker=dict(size=14, color=[PALETTE[m % len(PALETTE)] for m in range(M)],
                                                            line=dict(color="black", width=2)),
            hovertemplate="%{text}<extra></extra>"))
    ex = umap.get("explained") or [0, 0]
    fig.update_layout(template="plotly_white", height=620, title=title, clickmode="event+select",
                      xaxis_title=f"PC 1 ({ex[0] * 100:.0f}%)", yaxis_title=f"PC 2 ({ex[1] * 100:.0f}%)",
                      legend=dict(itemsizing="constant"), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def add_vs_refit_figure(add: dict) -> go.Figure:
    """Two panels: time of GPA-ADD vs a refit (log scale), and mean Hits@1 of the pairs with / without the
    new space."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["fit time (s, log scale)", "mean Hits@1 on held-out items"],
                        horizontal_spacing=0.12)
    fig.add_trace(go.Bar(x=["GPA-ADD", "refit GPA"], y=[add["add_seconds"], add["refit_seconds"]],
                         marker_color=[PALETTE[2], PALETTE[3]], showlegend=False,
                         text=[f"{add['add_seconds'] * 1e3:.1f} ms", f"{add['refit_seconds'] * 1e3:.1f} ms"],
                         textposition="outside"), row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, row=1, col=1)
    groups = ["pairs with the new space", "other pairs"]
    for i, (key, label) in enumerate((("add", "GPA-ADD"), ("refit", "refit GPA"))):
        vals = [add["top1_new_pairs"][key], add["top1_base_pairs"][key]]
        fig.add_trace(go.Bar(x=groups, y=vals, name=label, marker_color=PALETTE[2 + i],
                             text=["-" if v is None else f"{v:.3f}" for v in vals], textposition="outside"),
                      row=1, col=2)
    fig.update_layout(template="plotly_white", height=400, barmode="group",
                      title=f"Adding '{add['space']}': {add['speedup']:.0f}x faster than a refit",
                      margin=dict(l=10, r=10, t=80, b=10))
    return fig


def clustering_bars(results: dict) -> go.Figure:
    """ARI and NMI (mean over spaces and seeds) per method."""
    methods = [m for m in results if results[m].get("clustering")]
    labels = [_label(results, m) for m in methods]
    fig = go.Figure()
    for i, key in enumerate(("ari", "nmi")):
        vals = [results[m]["clustering"][f"mean_{key}"] for m in methods]
        fig.add_trace(go.Bar(x=labels, y=vals, name=key.upper(), marker_color=PALETTE[4 + i],
                             text=[f"{v:.3f}" for v in vals], textposition="outside"))
    fig.update_layout(barmode="group", template="plotly_white", height=380, yaxis_range=[0, 1.1],
                      title="k-means in the universe (normalised, held-out items): mean over spaces and seeds",
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig
