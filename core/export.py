"""Export what a view shows: figure (PNG / SVG / HTML), numbers (CSV / JSON), and a manifest.

The manifest records what is needed to reproduce a result: package versions, the view and its parameters,
seeds, and the sha256 of every input file. :func:`export_bundle` zips figure + numbers + manifest together.
PNG and SVG are rendered by kaleido, which drives a Chrome/Chromium found on the machine; without one,
:class:`ExportUnavailable` says so (HTML export always works).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import math
import os
import platform
import sys
import zipfile
from importlib import metadata as _md
from pathlib import PurePath
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .errors import PlatoscopeError

FIGURE_FORMATS = ("png", "svg", "html")
TABLE_FORMATS = ("csv", "json")
_PACKAGES = ("platoscope", "torch", "numpy", "scipy", "scikit-learn", "pandas", "plotly", "streamlit",
             "umap-learn", "sentence-transformers", "open_clip_torch")


class ExportUnavailable(PlatoscopeError):
    """A figure format cannot be produced on this machine (e.g. no Chromium for kaleido)."""


_VERSIONS: dict[tuple[str, ...], dict[str, str | None]] = {}


def package_versions(packages: Iterable[str] = _PACKAGES) -> dict[str, str | None]:
    """Python's and each package's installed version (None when missing); read once per process (every export
    control's manifest asks, and reading the installed metadata took about 25 ms)."""
    names = tuple(packages)
    found = _VERSIONS.get(names)
    if found is None:
        found = {"python": platform.python_version()}
        for name in names:
            try:
                found[name] = _md.version(name)
            except _md.PackageNotFoundError:
                found[name] = None
        _VERSIONS[names] = found
    return dict(found)


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts (the project's one JSON conversion).

    numpy scalars -> Python numbers, arrays and torch tensors -> nested lists, NaN / Inf -> None, tuples / sets ->
    lists, paths -> str, objects with ``to_dict()`` (typed results) and dataclasses -> dicts, DataFrames -> lists
    of row dicts, Series -> lists, pandas NA -> None; dict keys become strings. Anything else raises TypeError
    (nothing is silently turned into its ``str``).
    """
    if isinstance(value, np.generic):  # before float / int: np.float64 subclasses float
        return json_safe(value.item())
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, dict) and type(value) is not dict and callable(getattr(value, "to_dict", None)):
        return value.to_dict()          # a typed result (core.results.Result): its own JSON form
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, (PurePath, os.PathLike)):
        return os.fspath(value)
    if callable(getattr(value, "to_dict", None)) and not isinstance(value, (type, pd.DataFrame, pd.Series)):
        return json_safe(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, pd.DataFrame):
        return json_safe(value.to_dict(orient="records"))
    if isinstance(value, pd.Series):
        return json_safe(value.tolist())
    if value is pd.NA or value is pd.NaT:
        return None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return json_safe(value.detach().cpu().numpy())
    raise TypeError(f"cannot convert a {type(value).__name__} to JSON")


def build_manifest(*, view: str, params: dict | None = None, seeds: Iterable[int] | None = None,
                   dataset=None, inputs: Iterable[dict] | None = None, extra: dict | None = None) -> dict:
    """The reproducibility record attached to every export.

    ``dataset`` (a :class:`core.Dataset`) contributes its name, origin, fingerprint and source files
    (name, sha256, size); ``inputs`` adds other input records.
    """
    sources = []
    if dataset is not None:
        sources = [{"name": s.name, "sha256": s.sha256, "bytes": s.size} for s in dataset.sources]
    sources += [dict(i) for i in (inputs or [])]
    manifest = {
        "platoscope_manifest": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "view": view,
        "parameters": json_safe(params or {}),
        "seeds": json_safe(list(seeds) if seeds is not None else []),
        "dataset": None if dataset is None else {
            "name": dataset.name, "origin": dataset.origin, "fingerprint_sha256": dataset.fingerprint,
            "n_items": dataset.n, "spaces": dataset.space_names},
        "inputs": sources,
        "packages": package_versions(),
        "platform": platform.platform(),
    }
    if extra:
        manifest["extra"] = json_safe(extra)
    return manifest


#: kaleido's errors that mean "no usable browser on this machine" (not worth a retry).
_NO_BROWSER_ERRORS = frozenset({"ChromeNotFoundError", "BrowserDepsError", "BrowserFailedError"})
_RENDER_ATTEMPTS = 3


def figure_bytes(fig, fmt: str, *, width: int = 1100, height: int = 750, scale: float = 2.0) -> bytes:
    """Render a plotly figure as PNG, SVG or self-contained HTML bytes."""
    fmt = fmt.lower()
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; use one of {FIGURE_FORMATS}")
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")
    last: Exception | None = None
    for _attempt in range(_RENDER_ATTEMPTS):
        try:
            return fig.to_image(format=fmt, width=width, height=height, scale=scale if fmt == "png" else 1)
        except Exception as exc:  # kaleido raises several types when no browser is found
            last = exc
            if type(exc).__name__ in _NO_BROWSER_ERRORS:
                break  # no browser here: retrying cannot help
            # otherwise the browser was found but its page was not ready (e.g. "kaleido_scopes is not defined"
            # on a heavily loaded machine): a fresh attempt usually succeeds
    raise ExportUnavailable(
        f"{fmt.upper()} export needs Chrome or Chromium for kaleido ({type(last).__name__}: {last}). "
        "Install chromium, use the HTML export, or the camera icon on the chart's toolbar.") from None


#: A spreadsheet runs a cell as a formula when its text starts with one of these (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula (numbers unchanged)."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names cannot run as spreadsheet formulas (OWASP advice:
    prefix ``= + - @`` / tab / carriage return with a single quote). Numeric columns (e.g. -0.5) are untouched."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(csv_safe_cell)
        elif isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(object).map(csv_safe_cell)
    out.columns = [csv_safe_cell(c) for c in out.columns]
    return out


def table_bytes(table: pd.DataFrame | dict | list, fmt: str, manifest: dict | None = None) -> bytes:
    """Numbers as CSV (a DataFrame or list of records) or JSON ({"manifest": ..., "data": ...})."""
    fmt = fmt.lower()
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; use one of {TABLE_FORMATS}")
    if fmt == "csv":
        df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
        # CRLF line ends (RFC 4180): a cell holding a bare CR or LF is then quoted, not split into two rows
        return csv_safe_frame(df).to_csv(index=False, lineterminator="\r\n").encode("utf-8")
    data = table.to_dict(orient="records") if isinstance(table, pd.DataFrame) else table
    payload = {"manifest": manifest, "data": json_safe(data)} if manifest is not None else json_safe(data)
    return json.dumps(payload, indent=2, allow_nan=False).encode("utf-8")


def export_bundle(*, name: str, manifest: dict, fig=None, table=None,
                  figure_formats: Iterable[str] = ("html", "svg", "png")) -> bytes:
    """A zip with ``manifest.json``, the numbers (CSV + JSON) and the figure in every format available here."""
    buf = io.BytesIO()
    skipped = []
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if table is not None:
            zf.writestr(f"{name}.csv", table_bytes(table, "csv"))
            zf.writestr(f"{name}.json", table_bytes(table, "json", manifest))
        if fig is not None:
            for fmt in figure_formats:
                try:
                    zf.writestr(f"{name}.{fmt}", figure_bytes(fig, fmt))
                except ExportUnavailable as exc:
                    skipped.append({"format": fmt, "reason": str(exc)})
        zf.writestr("manifest.json", json.dumps({**manifest, "skipped_formats": skipped}, indent=2))
    return buf.getvalue()
