"""Widgets every page shares: page header + test marker, error display, URL-bound settings, export control."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
from typing import Any, Iterable

import streamlit as st

from core.errors import DataError, PlatoscopeError
from core import export as core_export
from ui.errors import guard, show_error  # noqa: F401  (re-exported: pages import them from here)
from ui import private_downloads

private_downloads.install()  # export links work once, for the session that clicked (ui/private_downloads.py)

log = logging.getLogger("platoscope")


def page_header(title: str, marker: str, caption: str | None = None) -> None:
    """Start a view: the shared sidebar, the title, a caption, and an invisible marker the browser test waits for."""
    from ui import sidebar

    from ui.navigation import was_routed

    if not was_routed():
        # Streamlit can run a file of pages/ directly (its older pages/ discovery, e.g. the first request to a
        # fresh server) before app.py has declared the navigation: apply the app's page setup here. The menu is
        # the sidebar's own list of links, the same in both cases.
        _route_through_app()
    st.session_state["platoscope_page"] = marker
    from ui.presets import forget_current

    forget_current()   # a page without a preset control records none in its manifests
    sidebar.render()
    st.title(title)
    if caption:
        st.caption(caption)
    st.html(f'<span id="ps-page-{marker}" class="ps-page-marker"></span>')


def _route_through_app() -> None:
    from ui.navigation import set_page_config

    set_page_config()


# -- settings in the URL ---------------------------------------------------------------------------
def url_value(name: str, default: Any, options: Iterable | None = None) -> Any:
    """The value of setting ``name`` from the URL (JSON-decoded) when valid, else ``default``."""
    raw = st.query_params.get(name)
    if raw is None:
        raw = _kept_settings().get(name)   # the view's own last settings in this session (left and came back)
    if raw is None:
        return default
    try:
        value = json.loads(raw) if not isinstance(default, str) else raw
    except (ValueError, TypeError):
        return default
    if options is not None:
        opts = list(options)
        if isinstance(value, list):
            value = [v for v in value if v in opts]
        elif value not in opts:
            return default
    if not isinstance(default, str) and default is not None and type(value) is not type(default):
        if isinstance(default, float) and isinstance(value, int):
            return float(value)
        return default
    return value


def url_key(name: str, default: Any, options: Iterable | None = None) -> str:
    """Session-state key for a widget bound to URL setting ``name``, seeded from the URL on first use."""
    key = f"url__{name}"
    if key not in st.session_state:
        st.session_state[key] = url_value(name, default, options)
    elif options is not None:
        opts = list(options)
        cur = st.session_state[key]
        if isinstance(cur, list):
            st.session_state[key] = [v for v in cur if v in opts]
        elif cur not in opts:
            st.session_state[key] = default
    return key


def _kept_settings() -> dict:
    """This session's last settings of the current view (widget state is dropped when the view is left)."""
    page = st.session_state.get("platoscope_page", "")
    return st.session_state.setdefault("platoscope_settings", {}).setdefault(page, {})


def sync_url(**settings: Any) -> None:
    """Write the page's current settings into the URL (JSON-safe values only) and keep them for the session."""
    kept = _kept_settings()
    for name, value in settings.items():
        text = value if isinstance(value, str) else json.dumps(core_export.json_safe(value))
        kept[name] = text
        if st.query_params.get(name) != text:
            st.query_params[name] = text


# -- export ----------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
@functools.lru_cache(maxsize=1)
def _static_export_ok() -> bool:
    """Whether kaleido can render figures here: checked once per server process (the check renders a figure
    through Chrome: about 6 s, too slow for every rerun of every page)."""
    import plotly.graph_objects as go

    try:
        core_export.figure_bytes(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), "svg", width=50, height=50)
        return True
    except core_export.ExportUnavailable:
        return False
    except Exception:  # noqa: BLE001
        return False


def export_controls(name: str, *, manifest: dict, fig=None, table=None, key: str | None = None) -> None:
    """The same export control on every page: figure (PNG/SVG/HTML), numbers (CSV/JSON), zip with manifest.

    The manifest gains ``preset``: the record of the page's "Settings: paper X preset / custom" control
    (:func:`ui.presets.preset_control`), or None on a page without one."""
    from ui.presets import current_record

    manifest = {**manifest, "preset": manifest.get("preset", current_record())}
    key = key or name
    static_ok = _static_export_ok()
    with st.popover("Export", icon=":material/download:"):
        st.caption("Every download carries the manifest: versions, parameters, seeds, sha256 of the inputs.")
        if fig is not None:
            cols = st.columns(3)
            for col, fmt in zip(cols, ("png", "svg", "html")):
                disabled = fmt in ("png", "svg") and not static_ok
                col.download_button(
                    fmt.upper(), data=(lambda f=fmt: core_export.figure_bytes(fig, f)),
                    file_name=f"{name}.{fmt}", mime={"png": "image/png", "svg": "image/svg+xml",
                                                     "html": "text/html"}[fmt],
                    key=f"exp_{key}_{fmt}", on_click="ignore", disabled=disabled,
                    help="needs Chrome/Chromium on the server (kaleido)" if disabled else None)
        if table is not None:
            cols = st.columns(2)
            cols[0].download_button("CSV", data=lambda: core_export.table_bytes(table, "csv"),
                                    file_name=f"{name}.csv", mime="text/csv", key=f"exp_{key}_csv",
                                    on_click="ignore")
            cols[1].download_button("JSON", data=lambda: core_export.table_bytes(table, "json", manifest),
                                    file_name=f"{name}.json", mime="application/json",
                                    key=f"exp_{key}_json", on_click="ignore")
        formats = ("html", "svg", "png") if static_ok else ("html",)
        st.download_button("Everything (.zip with manifest.json)",
                           data=lambda: core_export.export_bundle(name=name, manifest=manifest, fig=fig,
                                                                  table=table, figure_formats=formats),
                           file_name=f"{name}.zip", mime="application/zip", key=f"exp_{key}_zip",
                           on_click="ignore", type="primary")
        st.download_button("manifest.json", data=lambda: json.dumps(manifest, indent=2),
                           file_name=f"{name}.manifest.json", mime="application/json",
                           key=f"exp_{key}_manifest", on_click="ignore")
