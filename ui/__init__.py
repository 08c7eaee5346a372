"""Streamlit glue for Platoscope's pages: session state, cached wrappers around core, widgets, figures.

Everything that knows about streamlit lives here or in app.py / pages/; the math lives in core/.
"""
