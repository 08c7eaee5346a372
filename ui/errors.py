"""Errors in the UI: a message, never a traceback (used by the widgets and the sidebar alike)."""
from __future__ import annotations

import contextlib
import logging

import streamlit as st

from core.errors import PlatoscopeError
from ui.text import md

log = logging.getLogger("platoscope")


def show_error(exc: BaseException) -> None:
    # messages name files, arrays and values the user wrote: shown as text (ui.text.md), never as markdown
    if isinstance(exc, PlatoscopeError):
        st.error(md(str(exc)), icon=":material/error:")
    else:
        log.exception("unexpected error")
        st.error(f"Something went wrong ({type(exc).__name__}: {md(exc)}). The server logged the details; "
                 "your data is untouched.", icon=":material/error:")


@contextlib.contextmanager
def guard():
    """Show any error raised inside as a message (never a traceback); the rest of the page goes on."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the UI must survive anything
        if type(exc).__name__ in ("StopException", "RerunException"):  # streamlit control flow
            raise
        show_error(exc)
