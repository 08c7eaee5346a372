"""The maps (Home, and Similarity's side-by-side maps): plotly for small maps, Platoscope's canvas component above.

Plotly's Scattergl ships every point and its hover text as JSON and keeps a JS object per point: fine for the
demo, slow beyond a few thousand points (a 31,000-point map was 1.9 MB of JSON and about 2 s of browser work on
every visit) and far too heavy at a million (see docs/MAPS.md for what was measured). Above
:data:`PLOTLY_MAX_POINTS` the map is drawn by ``ui/bigmap_frontend/bigmap.js`` (a Streamlit components-v2
module mounted in the app's page: no iframe, no network, no build step): coordinates travel as float32 bytes and
colours as one byte per point, hover texts as one UTF-8 line per point, all in one binary payload
(:func:`map_payload`), the browser splats the points into a canvas (pan, wheel zoom, hover, lasso, box, click),
and the selection comes back as a polygon in data coordinates; the items inside it are found here
(:func:`core.projection.points_in_polygon`, the rule the browser uses to highlight them).

Every drawing is built once per result (:func:`ui.cached.drawn`, keyed on the sha256 of the coordinates and the
drawing options): a rerun, a second visit or a second browser only sends it.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import streamlit.components.v2 as components

from core.export import build_manifest
from core.projection import nearest_point, points_in_polygon

from .plots import MAX_CATEGORIES, PALETTE, scatter_map, selected_rows
from .text import safe_figure

#: Largest map drawn with plotly (the demo's 2,016 items are); bigger maps use the canvas component
#: ($PLATOSCOPE_PLOTLY_MAX_POINTS overrides).
PLOTLY_MAX_POINTS = 2_500
#: Largest canvas map that also offers the figure (PNG / SVG / HTML, built with plotly on request) in its export.
FIGURE_EXPORT_MAX_POINTS = 50_000
#: Largest canvas map that carries a hover text per point (about 40 bytes each); beyond, points show no text.
HOVER_MAX_POINTS = 200_000
#: Most points a map shows (a seeded sample beyond).
MAX_MAP_POINTS = 2_000_000
#: Selected items listed on the page (all of them go to the CSV export).
MAX_LISTED = 10_000
MISSING_COLOUR = "#B0B4BE"
VIRIDIS = ["#440154", "#482878", "#3E4A89", "#31688E", "#26828E", "#1F9E89", "#35B779", "#6DCD59", "#B4DE2C",
           "#FDE725"]

_FRONTEND = Path(__file__).parent / "bigmap_frontend"
_canvas_map = components.component("platoscope_map", js=(_FRONTEND / "bigmap.js").read_text(),
                                    css=(_FRONTEND / "bigmap.css").read_text(), isolate_styles=False)


def plotly_max_points() -> int:
    """:data:`PLOTLY_MAX_POINTS`, or $PLATOSCOPE_PLOTLY_MAX_POINTS when set (e.g. 0: always the canvas map)."""
    import os

    try:
        return int(os.environ.get("PLATOSCOPE_PLOTLY_MAX_POINTS", PLOTLY_MAX_POINTS))
    except ValueError:
        return PLOTLY_MAX_POINTS


def map_points_cap() -> int:
    """How many points the Home map asks for (plotly or canvas is chosen from the count it gets)."""
    return MAX_MAP_POINTS


def _ramp(k: int) -> list[str]:
    """``k`` colours interpolated along Viridis."""
    stops = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in VIRIDIS], dtype=float)
    t = np.linspace(0, len(VIRIDIS) - 1, k)
    lo = np.floor(t).astype(int).clip(0, len(VIRIDIS) - 2)
    rgb = stops[lo] + (stops[lo + 1] - stops[lo]) * (t - lo)[:, None]
    return ["#%02X%02X%02X" % tuple(int(round(v)) for v in c) for c in rgb]


def _hex(colour: str) -> str:
    """'#rrggbb' for a plotly colour ('#rrggbb' or 'rgb(r, g, b)')."""
    c = str(colour).strip()
    if c.startswith("#") and len(c) == 7:
        return c.upper()
    if c.startswith("rgb"):
        r, g, b = (int(float(v)) for v in c[c.index("(") + 1:c.index(")")].split(",")[:3])
        return "#%02X%02X%02X" % (r, g, b)
    return "#4C5FD5"


def colour_codes(values: pd.Series | None, name: str | None = None):
    """One byte per point, its palette and a legend: categories (the most frequent :data:`MAX_CATEGORIES`, the
    rest '(other)') or, for a numeric column with many values, 255 bins of a Viridis ramp."""
    if values is None:
        return None, ["#4C5FD5"], []
    vals = pd.Series(values).reset_index(drop=True)
    if not pd.api.types.is_numeric_dtype(vals) and vals.nunique() > MAX_CATEGORIES:
        as_num = pd.to_numeric(vals, errors="coerce")       # CSV metadata arrives as text
        if as_num.notna().sum() >= 0.95 * vals.notna().sum():
            vals = as_num
    if pd.api.types.is_numeric_dtype(vals) and vals.nunique() > MAX_CATEGORIES:
        v = vals.to_numpy(dtype=float)
        ok = np.isfinite(v)
        lo, hi = (float(np.min(v[ok])), float(np.max(v[ok]))) if ok.any() else (0.0, 1.0)
        codes = np.zeros(len(v), dtype=np.uint8)
        codes[ok] = 1 + np.clip(((v[ok] - lo) / max(hi - lo, 1e-300) * 254).round(), 0, 254).astype(np.uint8)
        palette = [MISSING_COLOUR] + _ramp(255)
        legend = [[f"{name or 'value'} = {lo:.4g}", palette[1]], [f"{(lo + hi) / 2:.4g}", palette[128]],
                  [f"{hi:.4g}", palette[255]]]
        if not ok.all():
            legend.append(["(missing)", MISSING_COLOUR])
        return codes, palette, legend
    codes_all, uniques = pd.factorize(vals, sort=False)       # -1 for missing values
    counts = np.bincount(codes_all[codes_all >= 0], minlength=len(uniques))
    names = [str(u) for u in uniques]
    top = [int(i) for i in np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]]
    top.sort(key=lambda i: names[i])
    lookup = np.full(len(uniques) + 1, len(top), dtype=np.uint8)   # the last slot: missing / other
    lookup[top] = np.arange(len(top), dtype=np.uint8)
    codes = lookup[np.where(codes_all >= 0, codes_all, len(uniques))]
    palette = [_hex(PALETTE[i % len(PALETTE)]) for i in range(len(top))]
    legend = [[names[i], palette[j]] for j, i in enumerate(top)]
    n_other = len(uniques) - len(top)
    if n_other > 0 or (codes_all < 0).any():
        palette.append(MISSING_COLOUR)
        legend.append([f"(other: {n_other} values)" if n_other else "(missing)", MISSING_COLOUR])
    return codes, palette, legend


def canvas_map(coords: np.ndarray, *, data_key: str, codes=None, palette=None, legend=None, title: str = "",
               axes: str = "", key: str = "canvas_map", height: int = 620, hover: bytes | None = None,
               select: bool = True):
    """Draw ``coords`` (n x 2) with the canvas component; returns its last selection value (or None).

    ``hover``: :func:`hover_bytes` of the drawn rows (shown as text on hover); ``select=False``: pan and zoom only
    (no lasso, box or click selection)."""
    payload = map_payload(coords, data_key=data_key, codes=codes, palette=palette, legend=legend, title=title,
                          axes=axes, height=height, hover=hover, select=select)
    return _canvas_map(key=key, data=payload, default={"selection": None},
                       on_selection_change=_ignore).get("selection")


def _ignore() -> None:
    """The "selection" state's callback (a state is declared by its callback; the value is read from the result)."""


def map_payload(coords: np.ndarray, *, data_key: str, codes=None, palette=None, legend=None, title: str = "",
                axes: str = "", height: int = 620, hover: bytes | None = None, select: bool = True) -> bytes:
    """What the canvas component reads (``ui/bigmap_frontend/bigmap.js``), as one binary payload: ``b"PSMAP1"``,
    the header's length (uint32, little-endian), the header (UTF-8 JSON: title, axes, palette, legend, bbox of the
    finite points, data_key, height, select and the byte lengths of the parts), then the coordinates (float32
    x, y per point), the colour codes (uint8 per point; absent: all 0) and the hover lines (UTF-8; absent: none)."""
    xy = np.ascontiguousarray(coords, dtype=np.float32)
    finite = np.isfinite(xy).all(axis=1)
    bbox = ([float(v) for v in xy[finite].min(axis=0)] + [float(v) for v in xy[finite].max(axis=0)]
            if finite.any() else [0.0, 0.0, 1.0, 1.0])
    code_bytes = b"" if codes is None else np.ascontiguousarray(codes, dtype=np.uint8).tobytes()
    hover = hover or b""
    header = json.dumps({"title": str(title), "axes": str(axes), "palette": palette or ["#4C5FD5"],
                         "legend": legend or [], "bbox": bbox, "data_key": data_key, "height": int(height),
                         "select": bool(select), "coords_bytes": xy.nbytes, "codes_bytes": len(code_bytes),
                         "hover_bytes": len(hover)}).encode("utf-8")
    return b"".join([b"PSMAP1", struct.pack("<I", len(header)), header, xy.tobytes(), code_bytes, hover])


def read_map_payload(payload: bytes) -> dict:
    """The header of a :func:`map_payload` with its parts decoded (``coords`` n x 2 float32, ``codes`` uint8 or
    None, ``hover`` bytes or None): what the browser reads, for tests and tools."""
    if payload[:6] != b"PSMAP1":
        raise ValueError("not a map payload")
    (size,) = struct.unpack("<I", payload[6:10])
    out = json.loads(payload[10:10 + size].decode("utf-8"))
    at = 10 + size
    parts = {}
    for name in ("coords", "codes", "hover"):
        n = out[f"{name}_bytes"]
        parts[name] = payload[at:at + n] if n else None
        at += n
    out["coords"] = np.frombuffer(parts["coords"] or b"", dtype=np.float32).reshape(-1, 2)
    out["codes"] = None if parts["codes"] is None else np.frombuffer(parts["codes"], dtype=np.uint8)
    out["hover"] = parts["hover"]
    return out


def _one_line(value) -> str:
    return str(value).replace("\r", " ").replace("\n", " ").replace("\x1f", " ")


def hover_bytes(ids, texts, rows: np.ndarray) -> bytes:
    """The canvas map's hover texts: one UTF-8 line ``id \\x1f text`` per drawn row (line breaks in a caption
    become spaces); the browser sets them as text, never as markup."""
    return "\n".join(f"{_one_line(ids[i])}\x1f{_one_line(texts[i])}" for i in rows).encode("utf-8")


def canvas_selection(value, coords: np.ndarray, data_key: str) -> np.ndarray:
    """Positions (into ``coords``) selected by a :func:`canvas_map` value that belongs to ``data_key``."""
    if not isinstance(value, dict) or value.get("data_key") != data_key:
        return np.empty(0, dtype=np.int64)
    kind = value.get("kind")
    if kind in ("lasso", "box"):
        return np.flatnonzero(points_in_polygon(coords, value.get("polygon") or []))
    if kind == "point":
        try:
            i = nearest_point(coords, float(value["x"]), float(value["y"]), float(value["radius"]))
        except (KeyError, TypeError, ValueError):
            i = None
        return np.array([] if i is None else [i], dtype=np.int64)
    return np.empty(0, dtype=np.int64)


def pca_map_or_progress(ds, space: str, max_points: int, *, priority: int = 0) -> dict | None:
    """The PCA map of ``space`` (:func:`ui.cached.pca_map`), its fit over every row running as a background job:
    None while it runs (its progress box is drawn here). The fit is shared by every map of the space (Home,
    Similarity, Neighbours; any number of points) and kept on disk like every job's result."""
    from ui import cached, data, jobs

    namespace = data.cache_namespace(ds)
    key = cached.result_key("pca_fit", ds.fingerprint, space)
    pca = jobs.result(namespace, key, f"PCA of '{space}' over {ds.n:,} items", lambda job: cached.pca_fit(ds, space),
                      priority=priority)
    if pca is None:
        return None
    return cached.pca_map(ds.fingerprint, space, max_points, ds, pca)


def points_digest(rows, coords) -> str:
    """sha256 of the drawn rows and their coordinates (which fix the projection)."""
    h = hashlib.sha256(np.ascontiguousarray(rows).tobytes())
    h.update(np.ascontiguousarray(coords).tobytes())
    return h.hexdigest()


def drawing_key(ds, kind: str, rows, coords, *options) -> str:
    """The key of one drawing (:func:`ui.cached.drawn`): the dataset, :func:`points_digest`, every drawing option."""
    return _drawing_key(ds, kind, points_digest(rows, coords), *options)


def _drawing_key(ds, kind: str, digest: str, *options) -> str:
    from ui import cached

    return cached.result_key("drawing", kind, ds.fingerprint, digest, *options)


def _plotly_map(ds, rows, coords, colour: str, colour_values, title: str, axes) -> "go.Figure":
    from ui import cached

    texts = cached.hover_texts(ds)
    return safe_figure(scatter_map(coords, rows, [texts[i] for i in rows], color=colour_values,
                                   color_name=None if colour == "(none)" else colour, title=title, axis_titles=axes))


def _canvas_payload(ds, rows, colour: str, colour_values) -> dict:
    from ui import cached

    codes, palette, legend = colour_codes(colour_values, None if colour == "(none)" else colour)
    hover = hover_bytes(ds.ids, cached.hover_texts(ds), rows) if len(rows) <= HOVER_MAX_POINTS else None
    return {"codes": codes, "palette": palette, "legend": legend, "hover": hover}


def draw_map(ds, rows, coords, colour: str, *, title: str, axes, key: str, select: bool = True,
             height: int = 620, legend: bool = True):
    """One map of ``coords`` (the projection of ``rows``), coloured by the column ``colour`` (or "(none)"):
    plotly up to :func:`plotly_max_points` points, the canvas component above; built once per result
    (:func:`ui.cached.drawn`). Returns ``(picked rows, figure or a function building it for the export, or None)``."""
    from ui import cached, data

    rows = np.asarray(rows)
    coords = np.asarray(coords)
    namespace = data.cache_namespace(ds)
    colour_values = None if colour == "(none)" else ds.items[colour].iloc[rows].reset_index(drop=True)
    digest = points_digest(rows, coords)
    fig_key = _drawing_key(ds, "plotly_map", digest, colour, title, list(axes), height, legend)

    def figure():
        def build():
            fig = _plotly_map(ds, rows, coords, colour, colour_values, title, axes)
            if height != 620 or not legend:
                fig.update_layout(height=height, showlegend=legend)
            return fig

        return cached.drawn(namespace, fig_key, build)

    if len(rows) <= plotly_max_points():
        fig = figure()
        if select:
            event = st.plotly_chart(fig, on_select="rerun", selection_mode=("lasso", "box", "points"), key=key,
                                    width="stretch")
            return np.asarray(selected_rows(event), dtype=np.int64), fig
        st.plotly_chart(fig, key=key, width="stretch")
        return np.empty(0, dtype=np.int64), fig
    payload = cached.drawn(namespace, _drawing_key(ds, "canvas_map", digest, colour),
                           lambda: _canvas_payload(ds, rows, colour, colour_values))
    # the same points keep the same data key: a new colouring keeps the view and the selection
    data_key = hashlib.sha256(f"{ds.fingerprint}\0{digest}".encode()).hexdigest()[:24]
    hint = "wheel zooms; lasso, box or click selects; double-click fits" if select else \
        "wheel zooms; drag pans; double-click fits"
    value = canvas_map(coords, data_key=data_key, codes=payload["codes"], palette=payload["palette"],
                       legend=payload["legend"] if legend else [], title=title,
                       axes=f"x: {axes[0]}, y: {axes[1]} - {hint}"
                            + ("" if payload["hover"] is not None else " (no hover texts above "
                               f"{HOVER_MAX_POINTS:,} points)"),
                       key=f"{key}_canvas", height=height, hover=payload["hover"], select=select)
    picked = rows[canvas_selection(value, coords, data_key)] if select else np.empty(0, dtype=np.int64)
    return picked, (figure if len(rows) <= FIGURE_EXPORT_MAX_POINTS else None)


def show_map(ds, result: dict, space: str, color: str, *, key: str = "home_map") -> None:
    """The Home map of a projection ``result`` (``rows``, ``coords``, ``method``, ``explained``), its export
    control and the list of selected items."""
    from .widgets import export_controls

    rows = np.asarray(result["rows"])
    coords = np.asarray(result["coords"])
    kind = "pooled token sets" if ds[space].kind == "tokens" else "vectors"
    subtitle = f"{result['method']} of '{space}' ({kind})"
    if result["explained"]:
        subtitle += f" - explained variance {result['explained'][0]:.1%} + {result['explained'][1]:.1%}"
    if len(rows) < ds.n:
        subtitle += f" - showing a seeded sample of {len(rows):,} of {ds.n:,} items"
    axes = (f"{result['method']} 1", f"{result['method']} 2")
    picked, fig = draw_map(ds, rows, coords, color, title=subtitle, axes=axes, key=key)
    coords_table = pd.DataFrame({"id": ds.ids[rows], "x": coords[:, 0], "y": coords[:, 1]})
    manifest = build_manifest(view="home/map", dataset=ds,
                              params={"space": space, "projection": result["method"], "color": color,
                                      "points_shown": int(len(rows)),
                                      "renderer": "plotly" if len(rows) <= plotly_max_points() else "canvas"},
                              seeds=[0])
    export_controls("platoscope-map", manifest=manifest, fig=fig, table=coords_table)
    if len(picked):
        st.markdown(f"**{len(picked):,} selected item(s)**" +
                    (f" (the first {MAX_LISTED:,} listed)" if len(picked) > MAX_LISTED else ""))
        st.dataframe(ds.items.iloc[picked[:MAX_LISTED]], hide_index=True, width="stretch")
    else:
        st.caption("Draw a lasso or a box on the map to list the items inside it.")
