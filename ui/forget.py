"""Forget my data: remove this session's uploads and everything computed from them, and nothing of any other
session. Above :mod:`ui.data`, :mod:`ui.cached` and :mod:`ui.jobs`, which it combines (so that none of them
imports another for it).
"""
from __future__ import annotations

import streamlit as st

from core import budget as core_budget
from core import cache as core_cache
from ui import cached, data, jobs


def forget_my_data() -> bool:
    """Remove this session's uploads, spooled files, cached results (disk, memory, shared stores) - and nothing
    of any other session. Returns whether anything was there."""
    jobs.cancel_namespace(data.session_namespace())     # this session's private jobs stop; they write nothing
    had = data.holds_anything()
    fingerprints = data.session_fingerprints()
    cached.forget_session_results(fingerprints)
    for key in data.FORGET_STATE_KEYS:
        st.session_state.pop(key, None)
    st.session_state[data._STATE_UPLOADS] = {}
    if str(st.session_state.get(data._STATE_KEY, "")).startswith("upload:"):
        st.session_state.pop(data._STATE_KEY, None)
    res = st.session_state.get("platoscope_reservation")
    if isinstance(res, core_budget.Reservation):
        res.release()
    data.release_all_uploads()
    removed = core_cache.forget_namespace(data.session_namespace())
    return had or removed
