"""Platoscope: do these encoders see the same world, and how do I line them up?

Entry point of the Streamlit app (`make run`, or `streamlit run app.py`). It sets the page up and routes to the
views in pages/ (listed in ui/navigation.py); every view starts with ui.widgets.page_header, which also draws the
shared sidebar.
"""
from ui.jobs import foreground
from ui.navigation import navigation, set_page_config

set_page_config()
with foreground():      # background jobs (GCPA training) hold still while this run goes on
    navigation().run()
