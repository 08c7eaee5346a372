"""Figure builders of the Hierarchy view (drawing only; the numbers come from core.hierarchy)."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

_TIER_COLOURS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]


def radial_plot(radii: list[list], *, title: str = "", n_lines: int = 40, seed: int = 0,
                y_range: tuple | None = None) -> go.Figure:
    """Distribution of d_r per tier (box with all points hidden) plus one grey line per sampled chain."""
    R = np.array([[np.nan if v is None else v for v in row] for row in radii], dtype=float)
    fig = go.Figure()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(R), size=min(n_lines, len(R)), replace=False) if len(R) else []
    for j, c in enumerate(pick):
        row = R[c]
        ok = ~np.isnan(row)
        fig.add_trace(go.Scatter(x=[f"tier {k}" for k in np.flatnonzero(ok)], y=row[ok], mode="lines",
                                 line=dict(color="rgba(120,120,120,0.35)", width=1), hoverinfo="skip",
                                 showlegend=j == 0, name=f"a chain ({len(pick)} of {len(R)} drawn)"))
    for k in range(R.shape[1] if R.ndim == 2 else 0):
        vals = R[:, k][~np.isnan(R[:, k])]
        fig.add_trace(go.Box(y=vals, x=[f"tier {k}"] * len(vals), name=f"tier {k}", boxpoints=False,
                             marker_color=_TIER_COLOURS[k % len(_TIER_COLOURS)], showlegend=False))
    fig.update_layout(title=title, yaxis_title="genericness d_r = ||e - r|| (Euclidean, unit vectors)",
                      xaxis_title="tier (generic -> specific)", height=420, margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(orientation="h", y=-0.2))
    if y_range:
        fig.update_yaxes(range=list(y_range))
    return fig


def angle_heatmap(angles, valid, row_labels: list[str], col_labels: list[str], *, title: str = "") -> go.Figure:
    """Exterior angles in degrees; undefined cells (e' = e or e = r) blank and marked 'undefined'."""
    A = np.degrees(np.asarray(angles, dtype=float))
    V = np.asarray(valid, dtype=bool)
    z = np.where(V, A, np.nan)
    text = [[f"{a:.0f}°" if ok else "undefined" for a, ok in zip(ra, rv)] for ra, rv in zip(A, V)]
    fig = go.Figure(go.Heatmap(z=z, x=col_labels, y=row_labels, text=text, texttemplate="%{text}",
                               colorscale="Viridis_r", zmin=0, zmax=180, colorbar=dict(title="degrees"),
                               hovertemplate="from %{y}<br>to %{x}<br>Xi = %{text}<extra></extra>"))
    fig.update_layout(title=title, height=360, margin=dict(l=120, r=20, t=60, b=100),
                      xaxis_title="e' (to)", yaxis_title="e (from)")
    fig.update_yaxes(autorange="reversed")
    return fig


def chain_view(coords, labels: list[str], groups: list[str], *, title: str = "") -> go.Figure:
    """2-D PCA view: the root (row 0) and each group's points joined in tier order, starting from the root."""
    coords = np.asarray(coords, dtype=float)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[coords[0, 0]], y=[coords[0, 1]], mode="markers+text", text=["root ''"],
                             textposition="bottom center", marker=dict(size=14, symbol="star", color="black"),
                             name="root"))
    for g, colour in zip(dict.fromkeys(groups[1:]), ["#4C78A8", "#E45756", "#54A24B"]):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        xs = [coords[0, 0]] + [coords[i, 0] for i in idx]
        ys = [coords[0, 1]] + [coords[i, 1] for i in idx]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=g, line=dict(color=colour),
                                 marker=dict(size=[0] + [9] * len(idx)),
                                 text=[""] + [labels[i] for i in idx], hovertemplate="%{text}<extra></extra>"))
        for i in idx:
            fig.add_annotation(x=coords[i, 0], y=coords[i, 1], text=_short(labels[i]), showarrow=False,
                               yshift=12, font=dict(size=10, color=colour))
    fig.update_layout(title=title, height=440, margin=dict(l=40, r=20, t=60, b=40),
                      xaxis_title="PC 1", yaxis_title="PC 2", legend=dict(orientation="h", y=-0.15))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def training_curve(history: list[dict], *, title: str = "") -> go.Figure:
    """Train and validation loss per epoch, with the best epoch marked."""
    ep = [h["epoch"] for h in history]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ep, y=[h["train_loss"] for h in history], name="train", mode="lines"))
    fig.add_trace(go.Scatter(x=ep, y=[h["val_loss"] for h in history], name="validation", mode="lines+markers"))
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    fig.add_vline(x=ep[best], line_dash="dot", annotation_text=f"best epoch {ep[best]}")
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="RE loss (10 L_p + L_e + L_m)", height=340,
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def before_after_bars(before: dict, after: dict, *, title: str = "") -> go.Figure:
    """tau_d (with its interval), share monotone, precision and recall before vs after fine-tuning."""
    keys = [k for k in ("tau_d", "share_monotone", "precision", "recall") if before.get(k) is not None]
    fig = go.Figure()
    for name, s, colour in (("before", before, "#9D9D9D"), ("after RE", after, "#4C78A8")):
        err_plus = [max(0.0, (s["tau_d_ci"][1] or s["tau_d"]) - s["tau_d"]) if k == "tau_d" and s.get("tau_d_ci")
                    and s["tau_d_ci"][1] is not None else 0 for k in keys]
        err_minus = [max(0.0, s["tau_d"] - s["tau_d_ci"][0]) if k == "tau_d" and s.get("tau_d_ci")
                     and s["tau_d_ci"][0] is not None else 0 for k in keys]
        fig.add_trace(go.Bar(x=keys, y=[s.get(k) for k in keys], name=name, marker_color=colour,
                             error_y=dict(type="data", symmetric=False, array=err_plus, arrayminus=err_minus),
                             text=[f"{s.get(k):.3f}" for k in keys], textposition="outside"))
    fig.update_layout(barmode="group", title=title, height=360, yaxis_range=[min(0, -0.05), 1.15],
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def degrees(x: float) -> float:
    return x * 180.0 / math.pi
