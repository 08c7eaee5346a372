"""The sidebar every page shares: dataset picker, uploads, forget-my-data."""
from __future__ import annotations

import streamlit as st

from core.errors import DataError
from ui import data, forget
from ui.errors import show_error

FORMATS_HELP = (
    "**Embeddings**: `.npy` (one space per file), `.npz` (one space per array; string arrays `id`, `caption`, "
    "`label`, `group` become item columns), `.safetensors`, `.pt`/`.pth` (tensor or dict of tensors), `.parquet` "
    "(list columns are spaces, other columns metadata). 3-D arrays (n x T x d) are token sets; "
    "`<name>_mask` / `<name>_weights` attach to them. A HierarCaps CSV (id, captions, image_url) is a hierarchy "
    "dataset. **Metadata**: optional `.csv`/`.parquet` with an `id` column.")


def _apply_url_dataset(options: dict[str, str]) -> None:
    if data.selected_key() is not None:
        return
    wanted = st.query_params.get("dataset")
    if wanted and wanted in options and not wanted.startswith("upload:"):
        data.select(wanted)
    elif wanted and wanted.startswith("upload:"):
        st.session_state["platoscope_url_notice"] = (
            "That link points at someone's upload; uploads are private to the session that made them.")
    elif "demo" in options:
        data.select("demo")


def render() -> None:
    forget.housekeeping()
    with st.sidebar:
        st.markdown("### :material/travel_explore: Platoscope")
        from ui.navigation import PAGES, PAGES_DIR, VIEWS

        for file, title, icon in VIEWS:
            if file in PAGES:
                st.page_link(PAGES[file], label=title, icon=icon)
            elif (PAGES_DIR / file).exists():   # a page run before app.py declared the navigation (was_routed)
                st.page_link(f"pages/{file}", label=title, icon=icon)
        st.divider()
        options = data.dataset_options()
        _apply_url_dataset(options)
        notice = st.session_state.pop("platoscope_url_notice", None)
        if notice:
            st.warning(notice)
        keys = list(options)
        current = data.selected_key()
        if keys:
            # No widget key: the picker is redrawn from the current choice on every page, so a choice made
            # elsewhere (an upload, the Encode page, a link) always shows, and page switches keep it.
            choice = st.selectbox("Dataset", keys, index=keys.index(current) if current in keys else 0,
                                  format_func=options.get)
            if choice != current:
                data.select(choice)
            if choice.startswith("upload:"):
                if "dataset" in st.query_params:
                    del st.query_params["dataset"]
            elif st.query_params.get("dataset") != choice:
                st.query_params["dataset"] = choice
        else:
            st.info("No dataset yet: upload your embeddings below.")
        _upload_box(expanded=not keys or not data.demo_available())
        if data.holds_anything():
            if st.button("Forget my data", icon=":material/delete:", key="sb_forget",
                         help="Remove this session's uploads, their spooled files and every result computed "
                              "from them (nothing of other sessions)"):
                forget.forget_my_data()
                st.session_state["platoscope_forgot"] = True
                st.rerun()
        if st.session_state.pop("platoscope_forgot", False):
            st.success("Your uploads and cached results were removed from the server.")


def _upload_box(expanded: bool) -> None:
    counter = st.session_state.setdefault("platoscope_upload_counter", 0)
    with st.expander("Upload embeddings", expanded=expanded, icon=":material/upload:"):
        st.caption(FORMATS_HELP)
        # max_upload_size: the browser refuses a bigger file before sending a byte (and the server while streaming)
        files = st.file_uploader("Embedding files", type=data.UPLOAD_TYPES, accept_multiple_files=True,
                                 key=f"upl_files_{counter}", max_upload_size=data.max_upload_mb())
        meta = st.file_uploader("Metadata (optional)", type=data.METADATA_TYPES, key=f"upl_meta_{counter}",
                                max_upload_size=data.max_upload_mb())
        failed = st.session_state.pop("platoscope_upload_error", None)
        if failed is not None:
            show_error(failed)
        if st.button("Load files", key="sb_load", type="primary", disabled=not files):
            ds = None
            try:
                with st.spinner("Reading and checking your files ..."):
                    ds = data.ingest_uploads(files, meta)
            except Exception as exc:  # noqa: BLE001 - shown after the rerun below
                st.session_state["platoscope_upload_error"] = exc
            if ds is not None:
                data.select(f"upload:{ds.name}")
            # Either way the bytes are out of Streamlit's memory (spooled, or refused and deleted): a new uploader
            # key drops the widget's copy too.
            st.session_state["platoscope_upload_counter"] = counter + 1
            st.rerun()
