"""Settings bound to the URL: a widget's value is seeded from ``?name=value`` (JSON) and written back, so a view
can be bookmarked and shared; the session keeps each view's last settings for when the user comes back.

Below :mod:`ui.widgets` and :mod:`ui.presets` (both use it), so neither imports the other for it.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import streamlit as st

from core import export as core_export


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
    changed = {}
    for name, value in settings.items():
        text = value if isinstance(value, str) else json.dumps(core_export.json_safe(value))
        kept[name] = text
        if st.query_params.get(name) != text:
            changed[name] = text
    if changed:   # one message to the browser (and one history entry rewrite), not one per setting
        st.query_params.update(changed)
