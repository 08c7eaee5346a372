"""The app's views and their order; app.py routes through :func:`navigation`."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

APP = str(Path(__file__).resolve().parents[1] / "app.py")

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"
# (file, title, icon) in menu order; a view appears once its file exists.
VIEWS = [
    ("home.py", "Home", ":material/home:"),
    ("encode.py", "Encode", ":material/text_fields:"),
    ("similarity.py", "Similarity", ":material/grid_on:"),
    ("subspace.py", "Subspace", ":material/show_chart:"),
    ("neighbours.py", "Neighbours", ":material/hub:"),
    ("query.py", "Query", ":material/search:"),
    ("hierarchy.py", "Hierarchy", ":material/account_tree:"),
    ("universe.py", "Universe", ":material/public:"),
    ("point_sets.py", "Point sets", ":material/scatter_plot:"),
]


def set_page_config() -> None:
    st.set_page_config(page_title="Platoscope", page_icon=":material/travel_explore:", layout="wide")


#: file -> the st.Page declared for it by the latest :func:`navigation` (the sidebar links to these: a link to a
#: page object needs no path resolution, a link to a file name resolves it on every run)
PAGES: dict[str, object] = {}


def navigation():
    """Declare the views (st.navigation) and return the one the URL asks for."""
    pages = {f: st.Page(str(PAGES_DIR / f), title=t, icon=i, default=(f == "home.py"))
             for f, t, i in VIEWS if (PAGES_DIR / f).exists()}
    PAGES.clear()
    PAGES.update(pages)
    return st.navigation(list(pages.values()))


def was_routed() -> bool:
    """Whether the running view was reached through app.py's router (app.py is on the call stack).

    A fresh server may run a file of pages/ directly, through Streamlit's older pages/ discovery, before app.py
    has ever declared the navigation.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == APP:
            return True
        frame = frame.f_back
    return False
