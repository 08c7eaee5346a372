"""Home: what is in the dataset, and a 2-D map of any space."""
import streamlit as st

from ui import cached, data, jobs
from ui.maps import map_points_cap, pca_map_or_progress, show_map
from ui.sidebar import FORMATS_HELP
from ui.widgets import guard, page_header, sync_url, url_key

page_header("Platoscope", "home",
            "Do these encoders see the same world, and how do I line them up?")

ds = data.current_dataset()
if ds is None:
    st.info("Pick a dataset or upload your embeddings in the sidebar to begin.")
    st.markdown(FORMATS_HELP)
    st.stop()

if ds.origin == "demo":
    from core.demo import DEMO_LINE

    st.caption(DEMO_LINE)

c1, c2, c3, c4 = st.columns(4)
c1.metric("Items", f"{ds.n:,}")
c2.metric("Spaces", len(ds.spaces))
c3.metric("Metadata columns", len(ds.metadata_columns()))
c4.metric("Origin", {"demo": "built-in demo", "server": "server folder", "upload": "upload (private)",
                     "files": "files"}.get(ds.origin, ds.origin))

st.subheader("Spaces")
if not ds.spaces:
    st.info("This dataset has items but no embedding spaces yet (e.g. a caption hierarchy): "
            "encode it on the Encode page.")
    st.dataframe(ds.items.head(200), hide_index=True)
    st.stop()

# The summary is filled in below the map's controls: the controls reach the browser before it is computed.
summary_slot = st.container()

st.subheader("Map")
names = ds.space_names
color_options = ["(none)"] + ds.metadata_columns()
default_color = next((c for c in ("label", "tier", "group") if c in color_options), "(none)")
left, mid, right = st.columns([2, 2, 1])
space = left.selectbox("Space", names, key=url_key("space", names[0], names))
color = mid.selectbox("Colour by", color_options, key=url_key("color", default_color, color_options))
method = right.radio("Projection", ["PCA", "UMAP"], horizontal=True, key=url_key("proj", "PCA", ["PCA", "UMAP"]))
sync_url(space=space, color=color, proj=method)

with summary_slot, guard():
    table = cached.summary_table(ds.fingerprint, ds)
    st.dataframe(table, hide_index=True, width="stretch")

namespace = data.cache_namespace(ds)
result = None
with guard():
    if method == "PCA":
        result = pca_map_or_progress(ds, space, map_points_cap())
    else:
        params = dict(n_neighbors=15, min_dist=0.1)
        if cached.umap_is_cached(ds, space, namespace, cached.MAX_UMAP_POINTS, **params):
            result = cached.umap_map(ds.fingerprint, space, cached.MAX_UMAP_POINTS, namespace,
                                     params["n_neighbors"], params["min_dist"], ds)
        else:
            # UMAP runs as a background job, started on request; PCA is shown meanwhile
            ukey = cached.result_key("umap", ds.fingerprint, space, cached.MAX_UMAP_POINTS, params)
            start = jobs.job_for(namespace, ukey) is not None or st.button(
                "Compute UMAP", type="primary", key="home_umap_go",
                help="UMAP takes a while (the first run in a server process compiles numba code); the result is "
                     "cached on disk")
            if start:
                st.caption(f"{min(ds.n, cached.MAX_UMAP_POINTS):,} points; the first run in a server process "
                           "compiles numba (about a minute).")
            result = jobs.result(namespace, ukey, f"UMAP of '{space}'",
                                 lambda job: cached.umap_result(ds, space, cached.MAX_UMAP_POINTS, namespace,
                                                                params["n_neighbors"], params["min_dist"]),
                                 start=start)
            if result is None:
                if not start:
                    st.info("UMAP is computed on request and cached; PCA is shown meanwhile.")
                result = pca_map_or_progress(ds, space, map_points_cap())

if result is not None:
    show_map(ds, result, space, color)   # plotly for small maps, the canvas component for large ones (ui.maps)
