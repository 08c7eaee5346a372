"""Platoscope: do these encoders see the same world, and how do I line them up?

Entry point of the Streamlit app (`make run`, or `streamlit run app.py`). It sets the page up and routes to the views in
pages/; every view starts with ui.widgets.page_header, which also draws the shared sidebar.
"""
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="Platoscope", page_icon=":material/travel_explore:", layout="wide")

PAGES_DIR = Path(__file__).parent / "pages"
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

pages = [st.Page(str(PAGES_DIR / f), title=t, icon=i, default=(f == "home.py"))
         for f, t, i in VIEWS if (PAGES_DIR / f).exists()]
page = st.navigation(pages)
page.run()  # each view draws the shared sidebar through ui.widgets.page_header
