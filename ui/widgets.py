"""Widgets every page shares: page header + test marker, error display, URL-bound settings (:mod:`ui.url_state`),
export control."""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading

import streamlit as st

from core.errors import DataError, PlatoscopeError
from core import export as core_export
from ui.errors import guard, show_error  # noqa: F401  (re-exported: pages import them from here)
from ui import private_downloads
from ui.plots_geosem import short
# URL-bound settings live in ui.url_state (ui.presets needs them too); re-exported: pages import them from here
from ui.url_state import _kept_settings, sync_url, url_key, url_value  # noqa: F401

private_downloads.install()  # export links work once, for the session that clicked (ui/private_downloads.py)

log = logging.getLogger("platoscope")


#: The page's own CSS (one rule): progress bars do not animate from one value to the next. Streamlit's bar slides
#: to each new value, and with a job's box polling every second the browser repaints that slide all the time:
#: headless chromium used 1.18 CPU s per 12 s for one polling box with a moving bar, 0.40 s with this rule, the
#: same as a box whose bar does not move (bench/bench_poll_cost.py, bench/results/bench_poll_cost.txt): CPU that
#: the jobs on the same machine need.
PAGE_STYLE = "<style>[data-testid='stProgress'] * {transition: none !important; animation: none !important}</style>"


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
    st.html(f'<span id="ps-page-{marker}" class="ps-page-marker"></span>{PAGE_STYLE}')
    _static_export_ok()   # starts the kaleido check in the background with the server's first page, not later


def _route_through_app() -> None:
    from ui.navigation import set_page_config

    set_page_config()


# -- item picker -----------------------------------------------------------------------------------
MAX_ITEM_OPTIONS = 300


def item_picker(label: str, ids: list, captions, key: str, *, none_label: str | None = None,
                limit: int = MAX_ITEM_OPTIONS):
    """Pick one item of a study of any size: up to ``limit`` items it is a plain selectbox; beyond, a search box
    (part of an id or a caption, case-insensitive) narrows the choices to the first ``limit`` matches, the current
    item always among them. (A selectbox of every item of a 31,000-item study sent 31,000 labels to the browser on
    every rerun and took seconds to draw.) ``none_label`` adds a None option first. Returns the chosen id."""
    n = len(ids)
    rows = list(range(n))
    if n > limit:
        query = st.text_input(f"Search the {n:,} items (part of an id or a caption)", key=f"{key}_search",
                              placeholder="e.g. lamp").strip().lower()
        if query:
            hits = (i for i in range(n) if query in str(ids[i]).lower() or query in str(captions[i]).lower())
            rows = list(itertools.islice(hits, limit))
        else:
            rows = list(range(limit))
        if query and not rows:
            st.caption("No item matches the search.")
        elif len(rows) == limit:
            st.caption(f"The first {limit:,} {'matches' if query else 'items'} are listed; search to narrow.")
        current = st.session_state.get(key)
        if current is not None and current not in {ids[r] for r in rows} and current in ids:
            rows.insert(0, ids.index(current))
    caption_of = {ids[r]: captions[r] for r in rows}     # only the listed items are formatted
    options = [ids[r] for r in rows]
    if none_label is not None:
        options = [None] + options
    return st.selectbox(label, options, key=key,
                        format_func=lambda i: none_label if i is None else f"{i} - {short(caption_of[i], 90)}")


# -- export ----------------------------------------------------------------------------------------
_STATIC_EXPORT: dict = {"ok": None, "thread": None}
_STATIC_EXPORT_LOCK = threading.Lock()


def _probe_static_export() -> None:
    import plotly.graph_objects as go

    try:   # lowest CPU priority for this thread and the Chrome that kaleido starts from it (children inherit it)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):   # not Linux: the check still runs
        pass

    try:
        core_export.figure_bytes(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), "svg", width=50, height=50)
        ok = True
    except Exception:  # noqa: BLE001 - ExportUnavailable, or kaleido failing in another way: no static export
        ok = False
    _STATIC_EXPORT["ok"] = ok


def _static_export_ok() -> bool | None:
    """Whether kaleido can render figures here: True / False once known, None while the check runs.

    The check renders a figure through Chrome (about 4 to 6 s), once per server process, on a background thread
    started by the first call (the server's first page header): a page never waits for it (it used to run on the
    script thread of the first page that showed an export control)."""
    if _STATIC_EXPORT["ok"] is not None:
        return _STATIC_EXPORT["ok"]
    with _STATIC_EXPORT_LOCK:
        if _STATIC_EXPORT["thread"] is None:
            _STATIC_EXPORT["thread"] = threading.Thread(target=_probe_static_export, name="platoscope-kaleido-probe",
                                                        daemon=True)
            _STATIC_EXPORT["thread"].start()
    return _STATIC_EXPORT["ok"]


def _figure_formats() -> tuple[str, ...]:
    """The figure formats of the zip bundle, decided when it is downloaded (the check has finished by then,
    or is waited for: the user asked for the file)."""
    thread = _STATIC_EXPORT["thread"]
    if _STATIC_EXPORT["ok"] is None and thread is not None:
        thread.join(30)
    return ("html", "svg", "png") if _STATIC_EXPORT["ok"] else ("html",)


def export_controls(name: str, *, manifest: dict, fig=None, table=None, key: str | None = None) -> None:
    """The same export control on every page: figure (PNG/SVG/HTML), numbers (CSV/JSON), zip with manifest.

    ``fig``: a plotly figure, or a function returning one (built only when a download asks for it, e.g. the
    plotly version of a canvas map). The manifest gains ``preset``: the record of the page's "Settings: paper X
    preset / custom" control (:func:`ui.presets.preset_control`), or None on a page without one."""
    from ui.presets import current_record

    manifest = {**manifest, "preset": manifest.get("preset", current_record())}
    key = key or name
    static_ok = _static_export_ok()
    get_fig = fig if callable(fig) else (lambda: fig)
    with st.popover("Export", icon=":material/download:"):
        st.caption("Every download carries the manifest: versions, parameters, seeds, sha256 of the inputs.")
        if fig is not None:
            cols = st.columns(3)
            for col, fmt in zip(cols, ("png", "svg", "html")):
                disabled = fmt in ("png", "svg") and not static_ok
                why = ("checking whether Chrome/Chromium is available for kaleido (a few seconds after the server "
                       "starts)" if static_ok is None else "needs Chrome/Chromium on the server (kaleido)")
                col.download_button(
                    fmt.upper(), data=(lambda f=fmt: core_export.figure_bytes(get_fig(), f)),
                    file_name=f"{name}.{fmt}", mime={"png": "image/png", "svg": "image/svg+xml",
                                                     "html": "text/html"}[fmt],
                    key=f"exp_{key}_{fmt}", on_click="ignore", disabled=disabled,
                    help=why if disabled else None)
        if table is not None:
            cols = st.columns(2)
            cols[0].download_button("CSV", data=lambda: core_export.table_bytes(table, "csv"),
                                    file_name=f"{name}.csv", mime="text/csv", key=f"exp_{key}_csv",
                                    on_click="ignore")
            cols[1].download_button("JSON", data=lambda: core_export.table_bytes(table, "json", manifest),
                                    file_name=f"{name}.json", mime="application/json",
                                    key=f"exp_{key}_json", on_click="ignore")
        st.download_button("Everything (.zip with manifest.json)",
                           data=lambda: core_export.export_bundle(name=name, manifest=manifest,
                                                                  fig=None if fig is None else get_fig(),
                                                                  table=table, figure_formats=_figure_formats()),
                           file_name=f"{name}.zip", mime="application/zip", key=f"exp_{key}_zip",
                           on_click="ignore", type="primary")
        st.download_button("manifest.json", data=lambda: json.dumps(manifest, indent=2),
                           file_name=f"{name}.manifest.json", mime="application/json",
                           key=f"exp_{key}_manifest", on_click="ignore")
