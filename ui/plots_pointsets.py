"""Figures of the Point sets page (drawing only; every number comes from core.pointset)."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ui.plots import PALETTE

SIMILARITY_LABELS = {"cosine_pooled": "cosine of mean-pooled vectors", "pointset_uniform": "point set, uniform weights",
                     "pointset_learned": "point set, learned weights"}
METRICS = {"top1_x_to_y": "top-1 (A -> B)", "top5_x_to_y": "top-5 (A -> B)", "top1_y_to_x": "top-1 (B -> A)",
           "top5_y_to_x": "top-5 (B -> A)", "matching_accuracy": "matching", "mrr": "MRR"}
WEIGHT_SCALE = "RdBu"


def metric_bars(results: dict, metrics=("top1_x_to_y", "top5_x_to_y", "matching_accuracy"), *,
                title: str = "") -> go.Figure:
    """Grouped bars: one group per metric, one bar per similarity (mean +- std over seeds), chance as a dash."""
    fig = go.Figure()
    for i, (name, res) in enumerate(results.items()):
        fig.add_trace(go.Bar(x=[METRICS.get(m, m) for m in metrics], y=[res[m]["mean"] for m in metrics],
                             error_y=dict(type="data", array=[res[m]["std"] for m in metrics], visible=True),
                             name=SIMILARITY_LABELS.get(name, name), marker_color=PALETTE[i % len(PALETTE)],
                             hovertemplate="%{y:.3f}<extra>" + SIMILARITY_LABELS.get(name, name) + "</extra>"))
    first = next(iter(results.values()))
    fig.add_trace(go.Scatter(x=[METRICS.get(m, m) for m in metrics], y=[first[m]["chance"] for m in metrics],
                             mode="markers", name="chance", marker=dict(symbol="line-ew-open", size=40, color="grey",
                                                                       line=dict(width=2))))
    fig.update_layout(barmode="group", title=title, template="plotly_white", height=430,
                      yaxis=dict(title="accuracy (mean +- std over seeds)", range=[0, 1.05]),
                      legend=dict(orientation="h", y=-0.15), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def spectra_plot(spectra: dict, *, title: str = "") -> go.Figure:
    """Normalised singular values (largest = 1, log scale) of each query x query similarity, with the d + 1 bound."""
    fig = go.Figure()
    longest = 1
    for i, name in enumerate(k for k in SIMILARITY_LABELS if k in spectra):
        sv = np.asarray(spectra[name], dtype=float)
        if sv.size == 0 or sv[0] <= 0:
            continue
        y = np.maximum(sv / sv[0], 1e-16)
        longest = max(longest, len(y))
        fig.add_trace(go.Scatter(x=np.arange(1, len(y) + 1), y=y, mode="lines", name=SIMILARITY_LABELS[name],
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2)))
    bound = spectra.get("rank_bound")
    if bound:
        fig.add_vline(x=bound, line=dict(color="black", dash="dash"),
                      annotation_text=f"d + 1 = {bound}", annotation_position="top right")
    fig.update_layout(title=title, template="plotly_white", height=430, xaxis_title="component (singular value rank)",
                      yaxis=dict(title="singular value / largest", type="log", exponentformat="power"),
                      legend=dict(orientation="h", y=-0.18), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def training_curve(history: list[dict], *, title: str = "") -> go.Figure:
    """Train and held-out InfoNCE loss per epoch (epoch 0 = untrained, uniform weights)."""
    fig = go.Figure()
    ep = [h["epoch"] for h in history]
    for key, label, colour in (("train_loss", "training pairs", PALETTE[0]), ("val_loss", "held-out pairs", PALETTE[1])):
        ys = [h.get(key) for h in history]
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=ep, y=ys, mode="lines+markers", name=label, line=dict(color=colour)))
    fig.update_layout(title=title, template="plotly_white", height=330, xaxis_title="epoch",
                      yaxis_title="symmetric InfoNCE loss", margin=dict(l=10, r=10, t=60, b=10))
    return fig


def _weight_range(weights: np.ndarray) -> float:
    w = np.asarray(weights, dtype=float)
    return float(np.abs(w).max()) if w.size and np.abs(w).max() > 0 else 1.0


def token_weight_bars(tokens: list[str], weights, *, title: str = "") -> go.Figure:
    """One bar per token, coloured by its learned weight (diverging scale centred at 0)."""
    w = np.asarray(weights, dtype=float)
    r = _weight_range(w)
    labels = [f"{i}: {t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Bar(x=labels, y=w, marker=dict(color=w, colorscale=WEIGHT_SCALE, cmin=-r, cmax=r,
                                                     colorbar=dict(title="weight")),
                           hovertemplate="%{x}<br>weight %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, template="plotly_white", height=360, yaxis_title="learned weight w",
                      xaxis=dict(tickangle=-45, automargin=True), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def token_weight_html(tokens: list[str], weights) -> str:
    """The tokens as coloured text (blue = high weight, red = negative), for st.html."""
    w = np.asarray(weights, dtype=float)
    r = _weight_range(w)
    spans = []
    for tok, v in zip(tokens, w):
        a = min(1.0, abs(v) / r)
        colour = f"rgba(33,102,172,{0.15 + 0.75 * a:.2f})" if v >= 0 else f"rgba(178,24,43,{0.15 + 0.75 * a:.2f})"
        spans.append(f'<span title="weight {v:.3f}" style="background:{colour};padding:2px 4px;margin:1px;'
                     f'border-radius:3px;display:inline-block;font-family:monospace">{html.escape(tok)}</span>')
    return '<div class="ps-token-weights" style="line-height:2">' + "".join(spans) + "</div>"


def point_weight_scatter3d(xyz, weights, *, title: str = "", axis_titles=("x", "y", "z")) -> go.Figure:
    """A point cloud coloured by each point's learned weight."""
    xyz = np.asarray(xyz, dtype=float)
    w = np.asarray(weights, dtype=float)
    r = _weight_range(w)
    fig = go.Figure(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers",
                                 marker=dict(size=3.5, color=w, colorscale=WEIGHT_SCALE, cmin=-r, cmax=r,
                                             colorbar=dict(title="weight")),
                                 text=[f"point {i}: w = {v:.3f}" for i, v in enumerate(w)],
                                 hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=title, template="plotly_white", height=480, margin=dict(l=0, r=0, t=60, b=0),
                      scene=dict(aspectmode="data", xaxis_title=axis_titles[0], yaxis_title=axis_titles[1],
                                 zaxis_title=axis_titles[2]))
    return fig
