"""Forget my data: remove this session's uploads and everything computed from them, and nothing of any other
session. Above :mod:`ui.data`, :mod:`ui.cached` and :mod:`ui.jobs`, which it combines (so that none of them
imports another for it).
"""
from __future__ import annotations

import os
import threading
import time

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


def forget_ended_sessions(live: set[str] | None, max_idle_seconds: float) -> list[str]:
    """What Forget my data does, for every session that ended (the sweeper calls it, on its own thread): a session
    no longer in ``live`` (the runtime ids Streamlit still serves) and idle for ``max_idle_seconds`` has its jobs
    cancelled and dropped, the cache entries and results its uploads created removed, and its state emptied
    (uploads, results, budget reservation) - Streamlit may keep the ended session's object for a long time (its
    store of disconnected sessions is purged only when it next changes), but nothing uploaded stays with it.
    Returns the namespaces emptied. Its folder is removed by :func:`core.cache.prune_sessions`."""
    emptied = []
    for namespace, state in data.ended_sessions(live, max_idle_seconds):
        jobs.cancel_namespace(namespace)
        try:
            cached.forget_session_results(state=state)
            res = state["platoscope_reservation"] if "platoscope_reservation" in state else None
            if isinstance(res, core_budget.Reservation):
                res.release()
            for key in list(state.filtered_state):
                try:
                    del state[key]
                except (KeyError, AttributeError):
                    pass
        except Exception:  # noqa: BLE001 - housekeeping must never take the sweeper down
            pass
        emptied.append(namespace)
    return emptied


def sweep_once() -> list[str]:
    """What the sweeper thread does every $PLATOSCOPE_SWEEP_S seconds: empty the ended sessions' state
    (:func:`forget_ended_sessions`), then remove their folders and apply the disk limit (:func:`ui.data.sweep_once`).
    Returns the namespaces whose folders were removed."""
    forget_ended_sessions(data._live_runtime_sessions(), data.session_ttl_seconds())  # noqa: SLF001
    return data.sweep_once()


def _sweeper(interval: float) -> None:  # pragma: no cover - a daemon loop; sweep_once is tested
    while True:
        time.sleep(interval)
        try:
            sweep_once()
        except Exception:  # noqa: BLE001 - housekeeping must never take the server down
            pass


@st.cache_resource(show_spinner=False)
def _start_sweeper() -> bool:
    interval = float(os.environ.get("PLATOSCOPE_SWEEP_S", 60))
    threading.Thread(target=_sweeper, args=(interval,), name="platoscope-sweeper", daemon=True).start()
    return True


def housekeeping() -> None:
    """Per script run: :func:`ui.data.housekeeping` (upload limit, heartbeat) and, once per process, the sweeper."""
    data.housekeeping()
    _start_sweeper()
