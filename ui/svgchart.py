"""Small fixed-size charts drawn by ``ui/svgchart_frontend/svgchart.js`` as SVG, not plotly: Similarity's matrix
over a dataset's spaces (:func:`heatmap_args`) and Subspace's bars at one k (:func:`bars_args`).

A page that shows any plotly chart makes the browser fetch, parse and run Streamlit's plotly bundle (about 4.7 MB
of JavaScript) in every new page: on this project's 2-core machine a trivial app with one three-bar plotly chart
took about 1.2 s longer to show it than the same app's line of text (bench/bench_app.py prints that floor). For a
matrix of a few cells or a handful of bars the component draws the same thing as SVG from what is computed here:
each cell's colour (Viridis, as the plotly heatmap), its printed value and its hover text, each bar's height, error
bar and hover text (all set as text in the browser, never as markup); a click on a heatmap cell comes back as
(row, column).

The component is a Streamlit components-v2 module (``st.components.v2``), mounted in the app's own page rather than
in an iframe: a page with four charts loads no iframe document per chart. Measured in headless chromium on the
2-core machine, a trivial app with three heatmaps and one bar chart showed them all 0.71 s after navigation in a
new page (median of 5) against 0.88 s with the iframe version, 1.06 s against 1.22 s in a fresh browser, and
0.36 s against 3.2 s for the first page of a fresh server. The export (PNG / SVG / HTML) still builds the plotly
figure, on request (:func:`ui.widgets.export_controls` takes a function).

What the plotly charts offered and these do not: zoom / pan, plotly's modebar and legend toggling (a matrix of a
few cells or a few bars needs none of them; the export has the figure files).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import streamlit.components.v2 as components

from .maps import _ramp

_FRONTEND = Path(__file__).parent / "svgchart_frontend"
_svgchart = components.component("platoscope_svgchart", js=(_FRONTEND / "svgchart.js").read_text(),
                                  css=(_FRONTEND / "svgchart.css").read_text(), isolate_styles=False)
#: colours of the ramp (low -> high), as the plotly heatmap's Viridis
RAMP = _ramp(256)


def _number(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def heatmap_args(values, x_names, y_names, *, title: str = "", colorbar: str = "", zmin: float | None = None,
                 zmax: float | None = None, reverse: bool = False, hover_extra=None, x_title: str = "",
                 y_title: str = "", height: int | None = None) -> dict:
    """What the component draws: ``z`` (None for undefined cells), each cell's colour (None: undefined), printed
    value (two decimals, as the plotly heatmap's) and hover text (``"<y> vs <x>"``, ``"<colorbar> = <value>"``, then
    ``hover_extra[i][j]`` when given: plain text lines), the colour bar (ramp stops, low / high ends), the names, and
    a ``data_key`` that changes with any of them (a click on an older matrix is not applied to a new one).

    The colour scale runs from ``zmin`` (else the smallest defined value) to ``zmax`` (else the largest); values
    outside are clipped to its ends; ``reverse`` puts the high end of the ramp on low values (a distance)."""
    z = [[_number(v) for v in row] for row in values]
    defined = [v for row in z for v in row if v is not None]
    lo = zmin if zmin is not None else (min(defined) if defined else 0.0)
    hi = zmax if zmax is not None else (max(defined) if defined else 1.0)
    span = hi - lo if hi > lo else 1.0
    name = colorbar or "value"

    def colour(v):
        if v is None:
            return None
        t = min(1.0, max(0.0, (v - lo) / span))
        return RAMP[int(round((1.0 - t if reverse else t) * (len(RAMP) - 1)))]

    texts = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    hover = []
    for i, row in enumerate(z):
        line = []
        for j, v in enumerate(row):
            parts = [f"{y_names[i]} vs {x_names[j]}", f"{name} = {'undefined' if v is None else f'{v:.2f}'}"]
            extra = hover_extra[i][j] if hover_extra is not None else ""
            if extra:
                parts.append(str(extra))
            line.append("\n".join(parts))
        hover.append(line)
    stops = [[k / 8, RAMP[int(round((1 - k / 8 if reverse else k / 8) * (len(RAMP) - 1)))]] for k in range(9)]
    size = max(420, 60 * max(len(x_names), len(y_names)) + 160)
    out = {"kind": "heatmap", "title": str(title), "x": [str(n) for n in x_names], "y": [str(n) for n in y_names],
           "z": z, "colours": [[colour(v) for v in row] for row in z], "text": texts, "hover": hover,
           "colorbar": {"title": str(colorbar), "low": f"{lo:.2f}", "high": f"{hi:.2f}", "stops": stops},
           "x_title": str(x_title), "y_title": str(y_title), "height": int(height or min(size, 1100))}
    out["data_key"] = hashlib.sha256(json.dumps([out["x"], out["y"], z, out["title"]]).encode()).hexdigest()[:24]
    return out


def clicked(value, args: dict) -> tuple[str, str] | None:
    """(x name, y name) of the cell a component value says was clicked, when it belongs to ``args``' matrix."""
    if not isinstance(value, dict) or value.get("kind") != "cell" or value.get("data_key") != args["data_key"]:
        return None
    try:
        i, j = int(value["row"]), int(value["col"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 <= i < len(args["y"]) and 0 <= j < len(args["x"])):
        return None
    return args["x"][j], args["y"][i]


def _mount(args: dict, key: str):
    """Mount the component with ``args`` as one JSON text (parsed in the browser: no table in it is turned into
    Arrow on the way)."""
    return _svgchart(key=key, data=json.dumps(args), on_cell_change=_ignore)


def _ignore() -> None:
    """The "cell" trigger's callback (a trigger is declared by its callback; the value is read from the result)."""


def heatmap_chart(args: dict, *, key: str) -> tuple[str, str] | None:
    """Draw :func:`heatmap_args`' matrix; returns the clicked cell's (x name, y name) in the script run that the
    click started (a trigger: None in every other run), else None."""
    return clicked(_mount(args, key).get("cell"), args)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi], about ``n`` of them."""
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int(math.floor((hi - first) / step + 1e-9)) + 1)]


def bars_args(rows: list[dict], *, series_key: str, category_key: str, series_labels: dict | None = None,
              category_labels: dict | None = None, palette: list[str], title: str = "", y_title: str = "",
              height: int = 420, hline: tuple[float, str] | None = None) -> dict:
    """Grouped bars: one series per distinct ``row[series_key]`` (a colour of ``palette`` each, in order of first
    appearance), one group per ``row[category_key]``; bar height ``row["mean"]``, error bar ``row["std"]`` (none
    when absent), hover text ``"<category>"``, ``"<series> = <mean> +- <std>"`` (three decimals), then
    ``row["note"]`` when given (plain text); the y range runs from min(0, lowest mean - std) to the highest
    mean + std (plus 5 %), with round ticks. ``hline``: (value, label) of a dashed horizontal line (e.g. chance),
    inside the y range."""
    series_labels, category_labels = series_labels or {}, category_labels or {}
    cats = list(dict.fromkeys(r[category_key] for r in rows))
    names = list(dict.fromkeys(r[series_key] for r in rows))
    by = {(r[series_key], r[category_key]): r for r in rows}
    series = []
    for k, name in enumerate(names):
        values, errors, hover = [], [], []
        for c in cats:
            r = by.get((name, c))
            m = None if r is None else _number(r["mean"])
            e = None if r is None else _number(r.get("std"))
            values.append(m)
            errors.append(e)
            note = "" if r is None or not r.get("note") else f"\n{r['note']}"
            hover.append("" if m is None else f"{category_labels.get(c, c)}\n{series_labels.get(name, name)} = "
                                               f"{m:.3f}" + ("" if e is None else f" +- {e:.3f}") + note)
        series.append({"name": str(series_labels.get(name, name)), "colour": palette[k % len(palette)],
                       "values": values, "errors": errors, "hover": hover})
    lows = [v - (e or 0.0) for s_ in series for v, e in zip(s_["values"], s_["errors"]) if v is not None]
    highs = [v + (e or 0.0) for s_ in series for v, e in zip(s_["values"], s_["errors"]) if v is not None]
    line = None if hline is None or _number(hline[0]) is None else [float(hline[0]), str(hline[1])]
    if line is not None:
        lows.append(line[0])
        highs.append(line[0])
    lo = min([0.0] + lows)
    hi = max(highs) if highs and max(highs) > lo else lo + 1.0
    hi = hi + 0.05 * (hi - lo)
    ticks = nice_ticks(lo, hi)
    return {"kind": "bars", "title": str(title), "y_title": str(y_title), "height": int(height),
            "categories": [str(category_labels.get(c, c)) for c in cats], "series": series,
            "y_range": [lo, hi], "ticks": [[t, f"{t:g}"] for t in ticks], "hline": line}


def bars_chart(args: dict, *, key: str) -> None:
    """Draw :func:`bars_args`' bars."""
    _mount(args, key)
